"""RFW end to end: the four races' pair sets, each scored like LFW, then mean / std / SER (`cdface.eval.rfw`).

Images: RFW's test images are unaligned (about 400x400) with 5 landmarks per image in ``<Race>_lmk.txt``.
An image that is not already at the model's input size and has landmarks is aligned to the ArcFace 112x112
template with them (`cdface.data.align.align_face`); an image already at the input size is taken as an aligned
crop (e.g. a pre-aligned copy of RFW); any other is resized. The provenance counts the images with landmarks.
Each image is embedded with its mirror and the two summed (float64), as insightface's pair protocol does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from cdface.eval.results import TargetResult
from cdface.eval.rfw import RACES, RfwRace, evaluate_rfw, find_rfw_test_dir, read_rfw_race
from cdface.files import sha256_file
from cdface.inference.embedder import FaceEmbedder
from cdface.inference.extract import extract_features

__all__ = ["RfwImages", "evaluate_rfw_target"]


class RfwImages(Dataset):
    """Decode, then align with the landmarks unless the image already has the model's input size."""

    def __init__(self, paths: Sequence[Path], landmarks: np.ndarray | None, size: tuple[int, int]) -> None:
        self.paths = [str(p) for p in paths]
        self.landmarks = landmarks
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, object, tuple[int, int] | None]:
        from cdface.data.align import align_face, fit_to_size
        from cdface.data.decode import decode_image
        from cdface.errors import FormatError

        path = self.paths[index]
        try:
            with open(path, "rb") as handle:
                image = decode_image(handle.read(), path)
        except OSError as exc:  # returned, raised by extract_features: a worker would wrap it in a traceback
            return index, None, FormatError(path, None, f"a readable image file ({exc})"), None
        except FormatError as exc:
            return index, None, exc, None
        source_size: tuple[int, int] | None = (int(image.shape[0]), int(image.shape[1]))
        if image.shape[:2] != tuple(self.size) and self.landmarks is not None and np.isfinite(
                self.landmarks[index]).all():
            image = align_face(image, self.landmarks[index], size=self.size[0])
            source_size = None  # aligned to the model's crop: not a silent resize
        return index, np.ascontiguousarray(fit_to_size(image, tuple(self.size)), dtype=np.uint8), None, source_size


def evaluate_rfw_target(
    embedder: FaceEmbedder,
    data_root: Path,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    races: Sequence[str] = RACES,
    nfolds: int = 10,
) -> TargetResult:
    """Embed each race's images, score its pairs (10-fold accuracy), and summarise across races."""
    test_dir = find_rfw_test_dir(Path(data_root))
    size = tuple(embedder.input_cfg["input_size"])
    layouts: dict[str, RfwRace] = {race: read_rfw_race(test_dir, race) for race in races}
    fused: dict[str, np.ndarray] = {}
    same: dict[str, np.ndarray] = {}
    seconds, n_images = 0.0, 0
    for race, layout in layouts.items():
        feats = extract_features(embedder, RfwImages(layout.paths, layout.landmarks, size), batch_size,
                                 num_workers, progress, desc=f"rfw {race}")
        per_image = feats.fused()
        fused[race] = per_image[layout.pair_rows.reshape(-1)]  # rows 2i, 2i+1 = pair i
        same[race] = layout.issame
        seconds += feats.seconds
        n_images += len(layout.paths)
    res = evaluate_rfw(fused, same, nfolds=nfolds)
    metrics = res.to_dict()
    files = [f for lay in layouts.values() for f in (lay.pairs_file, lay.landmark_file) if f is not None]
    provenance = {
        "files": {str(f.relative_to(test_dir)): sha256_file(f) for f in files},
        "protocol": {
            "name": "RFW per-race insightface pair verification; mean, std, SER",
            "nfolds": nfolds,
            "flip": embedder.flip,
            "races": list(races),
            "images_with_landmarks": {race: _landmark_count(lay) for race, lay in layouts.items()},
            "alignment": "5-point similarity to the ArcFace template for images not at the input size",
        },
        "num_images": n_images,
        "seconds": round(seconds, 3),
        "images_per_second": round(n_images / seconds, 1) if seconds > 0 else None,
    }
    curves = {"accuracy": {"race": list(res.per_race), "accuracy": [r.accuracy for r in res.per_race.values()]}}
    return TargetResult("rfw", "rfw", metrics, provenance, curves)


def _landmark_count(layout: RfwRace) -> int | None:
    """Images of a race that have landmarks (None without a landmark file)."""
    return None if layout.landmarks is None else int(np.isfinite(layout.landmarks).all(axis=(1, 2)).sum())
