"""Batched feature extraction: decode (and align) in DataLoader workers, embed on the device, report img/s.

The datasets here yield `(index, image, error, source_size)`: image a uint8 HWC RGB array at the model's size,
or None plus an error message when a file cannot be read and the caller asked to skip such files;
`source_size` is the (h, w) the image had before it was fitted (None when it was aligned with landmarks), so
callers can say how many inputs were silently resized (`Features.size_counts`). Extraction keeps the original
and flipped embeddings apart so each protocol fuses them the way its reference does (pairs: sum in float64).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cdface.data.align import fit_to_size
from cdface.errors import FormatError
from cdface.inference.embedder import FaceEmbedder

__all__ = ["EncodedImages", "ImageFiles", "RecordImages", "Features", "extract_features"]

# (index, image or None, None | a skipped file's message | the FormatError to raise, size before fitting)
_Item = tuple[int, np.ndarray | None, str | FormatError | None, tuple[int, int] | None]


class EncodedImages(Dataset):
    """Images held as encoded bytes (a .bin pair set); decoded in the worker, resized to `size` if needed."""

    def __init__(self, images: Sequence[bytes], source: str, size: tuple[int, int] = (112, 112)) -> None:
        self.images = images
        self.source = source
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> _Item:
        from cdface.data.decode import decode_image

        try:
            image = decode_image(self.images[index], self.source, f"image {index}")
        except FormatError as exc:
            return index, None, exc, None  # raised again in the main process (see extract_features)
        return index, _fit(image, self.size), None, (int(image.shape[0]), int(image.shape[1]))


class ImageFiles(Dataset):
    """Image files, optionally aligned with 5 landmarks each; `skip_errors` turns unreadable files into None.

    Without landmarks the files must already be aligned crops (resized to `size` if they differ).
    `template` names the alignment template (`cdface.data.align.TEMPLATES`: "arcface" = norm_crop's, "ijb").
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        landmarks: np.ndarray | None = None,
        size: tuple[int, int] = (112, 112),
        skip_errors: bool = False,
        template: str = "arcface",
    ) -> None:
        if landmarks is not None and len(landmarks) != len(paths):
            raise ValueError(f"{len(landmarks)} landmark rows for {len(paths)} images")
        self.paths = [str(p) for p in paths]
        # the landmarks keep their float dtype: IJB's float32 ones make the similarity estimate run in float32,
        # as in insightface (align_face = norm_crop on the same inputs)
        self.landmarks = None if landmarks is None else np.asarray(landmarks).reshape(-1, 5, 2)
        self.size = size
        self.skip_errors = skip_errors
        self.template = template
        # the last photo decoded (in this worker): the rows of a photo with several faces follow each other
        # (`--detect`, several-line `--landmarks`), so the photo is decoded once for all of them
        self._last: tuple[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, path: str) -> np.ndarray:
        from cdface.data.decode import decode_image

        if self._last is not None and self._last[0] == path:
            return self._last[1]
        with open(path, "rb") as handle:
            data = handle.read()
        image = decode_image(data, path)
        self._last = (path, image)
        return image

    def __getitem__(self, index: int) -> _Item:
        from cdface.data.align import align_face

        path = self.paths[index]
        try:
            image = self._decode(path)
            source_size: tuple[int, int] | None = (int(image.shape[0]), int(image.shape[1]))
            if self.landmarks is not None:
                image = align_face(image, self.landmarks[index], size=self.size[0], template=self.template)
                source_size = None  # aligned to the model's crop: not a silent resize
            return index, _fit(image, self.size), None, source_size
        except (OSError, FormatError) as exc:
            if not self.skip_errors:
                if not isinstance(exc, FormatError):
                    exc = FormatError(path, None, f"a readable image file ({exc})")
                return index, None, exc, None  # raised again in the main process (see extract_features)
            return index, None, (str(exc) if isinstance(exc, FormatError) else f"{path}: {exc}"), None  # path once


class RecordImages(Dataset):
    """The image records `keys` of a RecordIO file (the reader reopens its file in each worker process).

    `skip_errors` turns undecodable records into None (with the record named), as `ImageFiles` does."""

    def __init__(self, rec: str | Path, keys: np.ndarray, size: tuple[int, int] = (112, 112),
                 skip_errors: bool = False) -> None:
        from cdface.data.recordio import RecordIOReader

        idx = Path(rec).with_suffix(".idx")
        self.reader = RecordIOReader(rec, idx if idx.is_file() else None)
        self.keys = np.asarray(keys, dtype=np.int64)
        self.size = size
        self.skip_errors = skip_errors

    def __len__(self) -> int:
        return int(self.keys.size)

    def __getitem__(self, index: int) -> _Item:
        from cdface.data.decode import decode_image

        key = int(self.keys[index])
        try:
            _, payload = self.reader.read(key)
            image = decode_image(payload, self.reader.rec_path, f"record {key}")
        except FormatError as exc:
            return index, None, (str(exc) if self.skip_errors else exc), None
        return index, _fit(image, self.size), None, (int(image.shape[0]), int(image.shape[1]))


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(fit_to_size(image, tuple(size)), dtype=np.uint8)


def _collate(items: list[_Item]) -> tuple[np.ndarray, np.ndarray, list[str | FormatError], list[tuple[int, int]]]:
    good = [(i, img) for i, img, _, _ in items if img is not None]
    errors = [err for _, img, err, _ in items if img is None and err is not None]
    sizes = [size for _, img, _, size in items if img is not None and size is not None]
    indices = np.array([i for i, _ in good], dtype=np.int64)
    images = np.stack([img for _, img in good]) if good else np.zeros((0, 1, 1, 3), np.uint8)
    return indices, images, errors, sizes


@dataclass
class Features:
    """Per-image features in dataset order; rows of skipped images stay zero and are listed in `failed`."""

    plain: np.ndarray  # (N, D) float32, the original images
    flipped: np.ndarray | None  # (N, D) float32, the mirrored images (None without flip)
    failed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    size_counts: Counter[tuple[int, int]] = field(default_factory=Counter)  # (h, w) before fitting -> images

    @property
    def images_per_second(self) -> float:
        return len(self.plain) / self.seconds if self.seconds > 0 else float("nan")

    def fused(self) -> np.ndarray:
        """Original + flipped (insightface's flip test), float64 like its reference; plain without flip."""
        if self.flipped is None:
            return self.plain.astype(np.float64)
        return self.plain.astype(np.float64) + self.flipped.astype(np.float64)


def extract_features(
    embedder: FaceEmbedder,
    dataset: Dataset,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "embedding",
) -> Features:
    """Embed every image of `dataset` (original and, with `embedder.flip`, mirrored).

    Inside a multi-process group (`torchrun ... cdface eval`) each rank embeds its block of the images and the
    features are gathered in dataset order (`cdface.inference.distributed`).
    """
    from cdface.collectives import is_distributed

    if is_distributed():
        from cdface.inference.distributed import sharded_extract

        return sharded_extract(_extract_local, embedder, dataset, batch_size, num_workers, progress, desc)
    return _extract_local(embedder, dataset, batch_size, num_workers, progress, desc)


def _extract_local(
    embedder: FaceEmbedder, dataset: Dataset, batch_size: int, num_workers: int, progress: bool, desc: str
) -> Features:
    from tqdm import tqdm

    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=embedder.model.device.type == "cuda",
        persistent_workers=False,
    )
    n = len(dataset)
    plain: np.ndarray | None = None
    flipped: np.ndarray | None = None
    failed: list[int] = []
    errors: list[str] = []  # messages of skipped files
    size_counts: Counter[tuple[int, int]] = Counter()
    start = time.perf_counter()
    with tqdm(total=n, unit="img", desc=desc, disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for batch_number, (indices, images, batch_errors, sizes) in enumerate(loader):
            fatal = next((e for e in batch_errors if isinstance(e, FormatError)), None)
            if fatal is not None:  # raised here, not in the worker: torch would turn it into a RuntimeError
                raise fatal
            size_counts.update(sizes)
            covered = np.arange(batch_number * batch_size, min(n, (batch_number + 1) * batch_size))
            failed.extend(int(i) for i in np.setdiff1d(covered, indices))
            errors.extend(str(e) for e in batch_errors)
            if len(indices):
                a, b = embedder.embed_pair(torch.from_numpy(images))
                if plain is None:
                    plain = np.zeros((n, a.shape[1]), np.float32)
                    flipped = np.zeros((n, a.shape[1]), np.float32) if b is not None else None
                plain[indices] = a
                if flipped is not None and b is not None:
                    flipped[indices] = b
            bar.update(len(indices) + len(batch_errors))
    seconds = time.perf_counter() - start
    if plain is None:
        plain = np.zeros((n, embedder.model.embedding_size or 0), np.float32)
    return Features(
        plain=plain, flipped=flipped, failed=failed, errors=errors, seconds=seconds, size_counts=size_counts
    )
