"""Data pipeline throughput: JPEG decoders, decode + augment, and the DataLoader over a .rec.

Usage: PYTHONPATH=src python benchmarks/data_throughput.py [--images 2000] [--rec DIR]
(--rec: an existing insightface RecordIO folder; default: a synthetic one written to a temp folder).
Set TURBOJPEG_LIB to a libturbojpeg.so to include PyTurboJPEG.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cdface.data.datasets import RecordIODataset
from cdface.data.decode import decode_image
from cdface.data.recordio import RecordIOReader
from cdface.data.synthetic import build_synthetic_benchmark
from cdface.data.transforms import TrainTransform, sample_rng


def _decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    decoders: dict[str, Callable[[bytes], np.ndarray]] = {"cdface.decode_image": decode_image}
    try:
        import simplejpeg

        decoders["simplejpeg"] = lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB")
    except ImportError:
        pass
    decoders["pillow"] = lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        tj = TurboJPEG(os.environ.get("TURBOJPEG_LIB"))
        decoders["pyturbojpeg"] = lambda b: tj.decode(b, pixel_format=TJPF_RGB)
    except Exception as exc:  # not installed, or no libturbojpeg
        print(f"(pyturbojpeg skipped: {type(exc).__name__})")
    return decoders


def _rate(fn: Callable[[], int], repeat: int = 3) -> float:
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


class _PillowDataset(torch.utils.data.Dataset):
    """The plain baseline: Pillow decode, numpy flip, torch normalise."""

    def __init__(self, rec: Path) -> None:
        self.reader = RecordIOReader(rec)
        self.keys = self.reader.layout().image_keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        _, payload = self.reader.read(int(self.keys[i]))
        image = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
        if np.random.rand() < 0.5:
            image = image[:, ::-1]
        tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
        return tensor, 0


def _label_scan(num_records: int, folder: Path) -> None:
    """Time reading every label from the headers of an insightface-layout file (MS1MV2 has 5.8M)."""
    from cdface.data.recordio_writer import write_insightface_rec

    labels = np.repeat(np.arange(num_records // 50), 50)
    write_insightface_rec(folder, labels, lambda i: b"\xff\xd8\xff" + bytes(int(60 + i % 40)))
    for label, cache in (
        ("labels from headers (no cache)", False),
        ("first open, writes cache", True),
        ("labels from .npz cache", True),
    ):
        start = time.perf_counter()
        ds = RecordIODataset(folder, cache_labels=cache)
        elapsed = time.perf_counter() - start
        print(f"{label + f', {len(ds)} records':<44}{elapsed:>9.2f}s ({len(ds) / elapsed:,.0f} records/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000, help="images decoded per measurement")
    parser.add_argument("--rec", type=Path, default=None)
    parser.add_argument("--label-records", type=int, default=500_000, help="records for the label-scan test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = (
            args.rec
            or build_synthetic_benchmark(Path(tmp), num_train_ids=100, images_per_id=20, num_eval_ids=10, num_pairs=20)[
                "rec"
            ].parent
        )
        dataset = RecordIODataset(root, transform=TrainTransform(), cache_labels=False)
        payloads = [dataset.read_bytes(i % len(dataset)) for i in range(min(args.images, len(dataset)))]
        print(
            f"{len(dataset)} images in {root}, measuring {len(payloads)} JPEGs of "
            f"~{np.mean([len(p) for p in payloads]) / 1024:.1f} KiB, {os.cpu_count()} CPU cores\n"
        )
        transform = TrainTransform()
        print(f"{'stage (1 process)':<44}{'images/s':>10}")
        for name, decode in _decoders().items():
            decode_rate = _rate(lambda d=decode: sum(1 for p in payloads if d(p) is not None))
            aug_rate = _rate(
                lambda d=decode: sum(
                    1 for i, p in enumerate(payloads) if transform(d(p), sample_rng(0, 0, i)) is not None
                )
            )
            print(f"{'decode ' + name:<44}{decode_rate:>10.0f}")
            print(f"{'decode+flip+normalise ' + name:<44}{aug_rate:>10.0f}")
        uint8_transform = TrainTransform(output="uint8")
        uint8_rate = _rate(
            lambda: sum(
                1 for i, p in enumerate(payloads) if uint8_transform(decode_image(p), sample_rng(0, 0, i)) is not None
            )
        )
        print(f"{'decode+flip, uint8 out (the trainer)':<44}{uint8_rate:>10.0f}")
        # Steady state: persistent workers, one warm-up epoch, then timed epochs (a real epoch is millions).
        print(f"\n{'DataLoader (batch 128, persistent workers)':<44}{'images/s':>10}")
        baseline = _PillowDataset(dataset.reader.rec_path)
        trainer_set = RecordIODataset(root, transform=uint8_transform, cache_labels=False)
        for label, ds in (
            ("cdface, uint8 out (the trainer)", trainer_set),
            ("cdface, float32 out", dataset),
            ("plain Pillow dataset", baseline),
        ):
            for workers in (1, 2):
                loader = DataLoader(ds, batch_size=128, num_workers=workers, shuffle=True, persistent_workers=True)
                sum(batch[0].shape[0] for batch in loader)
                rate = _rate(lambda ld=loader: sum(batch[0].shape[0] for batch in ld), repeat=2)
                print(f"{label + f', {workers} worker(s)':<44}{rate:>10.0f}")
                del loader
        print()
        _label_scan(args.label_records, Path(tmp) / "labels")


if __name__ == "__main__":
    main()
