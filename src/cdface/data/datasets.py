"""Training datasets: RecordIO, image folder, image list, in-memory arrays.

All share one contract (docs/architecture.md): an item is ``(image (3,H,W) tensor from the transform, label,
index, bad_index)``; ``labels`` (int64, contiguous 0..C-1), ``num_classes`` and ``class_to_indices()`` need no
image decoded. A corrupt image is replaced by another sample of its class (deterministic choice), logged
once, and reported through ``bad_index`` so the trainer's ``BadSampleTracker`` can count it.

An item can be requested as ``dataset[i]`` (augmentation seeded by ``(seed, dataset.epoch, i)``) or as
``dataset[(i, epoch)]``, which stays correct with persistent DataLoader workers that never see
``set_epoch``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cdface.data.cache import cache_file
from cdface.data.decode import decode_image
from cdface.data.fingerprint import DataFingerprint, labels_digest
from cdface.data.image_files import IMAGE_EXTENSIONS, FolderScan, is_ignored_entry, scan_image_folder
from cdface.data.lists import read_image_list
from cdface.data.recordio import RecordIOReader
from cdface.data.transforms import EvalTransform, sample_rng
from cdface.errors import ConfigError, FormatError
from cdface.files import atomic_writer

__all__ = [
    "FaceDataset",
    "ImageFolderDataset",
    "ImageListDataset",
    "InMemoryDataset",
    "RecordIODataset",
    "build_train_dataset",
    "contiguous_labels",
    "resolve_recordio_paths",
]

logger = logging.getLogger("cdface.data")

Transform = Callable[[np.ndarray, np.random.Generator], torch.Tensor]


def contiguous_labels(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary integer labels to 0..C-1 (sorted order); returns (labels int64, original class ids)."""
    class_ids, labels = np.unique(np.asarray(raw), return_inverse=True)
    return labels.astype(np.int64).ravel(), class_ids


class FaceDataset(Dataset):
    """Labels/classes, seeding and bad-sample substitution; subclasses implement ``load_image``."""

    labels: np.ndarray
    num_classes: int

    def __init__(
        self,
        labels: np.ndarray,
        source: object,
        transform: Transform | None = None,
        seed: int = 0,
        max_pixels: int | None = None,
    ) -> None:
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1 if self.labels.size else 0
        self.source = str(source)
        self.transform = transform if transform is not None else EvalTransform()
        self.seed = int(seed)
        self.max_pixels = max_pixels  # decode.py's pixel cap (None: its env var / default)
        self.epoch = 0
        self.bad_indices: set[int] = set()  # per process: DataLoader workers each keep their own
        self._class_indices: list[np.ndarray] | None = None
        self._labels_sha256: str | None = None  # a subclass may set it from its cache

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def fingerprint(self) -> DataFingerprint:
        """N, C and the label hash of this set (`cdface.data.fingerprint`), computed once."""
        if self._labels_sha256 is None:
            self._labels_sha256 = labels_digest(self.labels, self.sample_ids())
        return DataFingerprint(len(self), self.num_classes, self._labels_sha256)

    def sample_ids(self) -> np.ndarray | list[str] | None:
        """Each sample's place in the set, independent of where the set lives (None: the labels alone)."""
        return None

    @property
    def num_bad(self) -> int:
        return len(self.bad_indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def class_to_indices(self) -> list[np.ndarray]:
        """Sample indices of each class, ascending (no decoding)."""
        if self._class_indices is None:
            order = np.argsort(self.labels, kind="stable")
            counts = np.bincount(self.labels, minlength=self.num_classes)
            self._class_indices = np.split(order, np.cumsum(counts)[:-1])
        return self._class_indices

    def load_image(self, index: int) -> np.ndarray:
        """Decoded (H, W, 3) uint8 RGB image; FormatError naming the file/record when it is corrupt or over
        the pixel cap (then substituted and counted like any corrupt image)."""
        raise NotImplementedError

    def first_image_size(self, tries: int = 16) -> tuple[int, int] | None:
        """(H, W) of the first decodable image among the first ``tries`` (None if all are corrupt): the set's
        crop size, which the training pipeline checks against the model's input contract at start."""
        for index in range(min(tries, len(self))):
            try:
                image = self.load_image(index)
            except FormatError:
                continue
            return int(image.shape[0]), int(image.shape[1])
        return None

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int, int]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), self.epoch)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        used, bad = index, -1
        try:
            image = self.load_image(index)
        except FormatError as exc:
            bad = index
            used, image = self._substitute(index, exc)
        tensor = self.transform(image, sample_rng(self.seed, epoch, index))
        return tensor, int(self.labels[used]), used, bad

    def _substitute(self, index: int, exc: FormatError) -> tuple[int, np.ndarray]:
        self._note_bad(index, exc)
        members = self.class_to_indices()[self.labels[index]]
        start = int(np.searchsorted(members, index))
        for step in range(1, len(members)):
            candidate = int(members[(start + step) % len(members)])
            if candidate in self.bad_indices:
                continue
            try:
                return candidate, self.load_image(candidate)
            except FormatError as other:
                self._note_bad(candidate, other)
        raise FormatError(
            self.source, f"class {self.labels[index]}", "at least one decodable image in each class"
        ) from exc

    def _note_bad(self, index: int, exc: FormatError) -> None:
        if index in self.bad_indices:
            return
        self.bad_indices.add(index)
        # no limit here: each DataLoader worker sees only its share; the trainer's BadSampleTracker holds the one
        logger.warning("corrupt sample %d replaced by another of its class: %s", index, exc)


class InMemoryDataset(FaceDataset):
    """Decoded images held in memory: uint8 (N, H, W, 3) plus labels."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Transform | None = None, seed: int = 0
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
        mapped, self.class_ids = contiguous_labels(labels)
        if mapped.size != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {mapped.size} labels")
        super().__init__(mapped, "<memory>", transform, seed=seed)
        self.images = images

    def load_image(self, index: int) -> np.ndarray:
        return self.images[index]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # a list entry outside the root (an absolute path): the path as listed
        return path.as_posix()


def resolve_recordio_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """A directory (holding train.rec/train.idx) or a .rec file -> (rec, idx)."""
    p = Path(path)
    if not str(path).strip():
        raise FormatError("data.path", None, "a RecordIO .rec file or a folder holding train.rec; it is empty")
    if not p.exists():
        raise FormatError(
            p, None, "no such file or folder (expected a RecordIO .rec file or a folder holding train.rec)"
        )
    if p.is_dir():
        recs = sorted(p.glob("*.rec"))
        rec = p / "train.rec" if (p / "train.rec").is_file() else (recs[0] if len(recs) == 1 else None)
        if rec is None:
            raise FormatError(p, None, "a folder holding train.rec (and train.idx) or exactly one .rec file")
    else:
        rec = p
    return rec, rec.with_suffix(".idx")


class RecordIODataset(FaceDataset):
    """insightface RecordIO training set (MS1MV2/MS1MV3/Glint360K/WebFace) or an im2rec file.

    Which records are images is decided by ``recordio_layout.detect_layout``. Labels come from the record
    headers alone (header bytes only, vectorised) and are cached in the cache directory (``cache_dir``,
    default ``cache.user_cache_dir()``), keyed by the absolute paths, sizes and mtimes of the .rec and
    .idx: nothing is ever written beside the data, and a read-only dataset works.
    """

    _CACHE_VERSION = 2

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Transform | None = None,
        seed: int = 0,
        cache_labels: bool = True,
        cache_dir: str | os.PathLike | None = None,
        max_pixels: int | None = None,
    ) -> None:
        rec, idx = resolve_recordio_paths(path)
        self.reader = RecordIOReader(rec, idx if idx.is_file() else None)
        keys, raw, digest = self._labels_from_cache(cache_labels, cache_dir)
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) or np.any(raw < 0):
            bad = int(np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)) | (raw < 0))[0])
            raise FormatError(rec, f"record {keys[bad]}", f"a non-negative integer label, got {raw[bad]}")
        labels, self.class_ids = contiguous_labels(raw.astype(np.int64))
        self.image_keys = keys
        super().__init__(labels, rec, transform, seed, max_pixels)
        self._labels_sha256 = digest or None

    def sample_ids(self) -> np.ndarray:
        return self.image_keys

    def _labels_from_cache(
        self, use_cache: bool, cache_dir: str | os.PathLike | None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(record keys, raw labels, the data fingerprint's label hash): the cache keeps the hash too, so a
        42M-sample set is hashed once, not at every start."""
        reader = self.reader
        sources = [reader.rec_path] + ([reader.idx_path] if reader.idx_path.is_file() else [])
        cache = cache_file(sources, f"labels-v{self._CACHE_VERSION}", ".npz", cache_dir) if use_cache else None
        if cache is not None and cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    return z["keys"], z["labels"], str(z["labels_sha256"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache (or one written before the hash was kept): rebuild it
        keys, raw = self._labels_from_records()
        digest = labels_digest(contiguous_labels(raw.astype(np.int64))[0], keys)
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                with atomic_writer(cache) as handle:
                    np.savez(handle, keys=keys, labels=raw, labels_sha256=np.array(digest))
            except OSError as exc:  # unwritable cache directory: work without a cache
                logger.info("label cache not written (%s): %s", cache, exc.strerror or exc)
        return keys, raw, digest

    def _labels_from_records(self) -> tuple[np.ndarray, np.ndarray]:
        reader = self.reader
        keys = reader.layout().image_keys
        flags, raw, sizes = reader.read_header_table(keys)
        # an identity/header record (labels, no image) among the images means the layout was misread:
        # refuse rather than train on a mislabelled or partial set
        misplaced = np.flatnonzero((flags >= 2) & (sizes == 0))
        if misplaced.size:
            key = int(keys[misplaced[0]])
            raise FormatError(
                reader.rec_path,
                f"record {key}",
                f"an image record, found a record without image ({flags[misplaced[0]]} labels, no payload; "
                f"{misplaced.size} such records among the {keys.size} image keys)",
            )
        return keys, raw

    def read_bytes(self, index: int) -> bytes:
        key = int(self.image_keys[index])
        _, payload = self.reader.read(key)
        return payload

    def load_image(self, index: int) -> np.ndarray:
        key = int(self.image_keys[index])
        _, payload = self.reader.read(key)
        return decode_image(payload, self.reader.rec_path, f"record {key}", self.max_pixels)


class _FileListDataset(FaceDataset):
    """Images stored as individual files."""

    paths: list[Path]
    root: Path

    def sample_ids(self) -> list[str]:
        """Each file's path below the set's root (a moved set keeps them, a renamed identity folder does not)."""
        return [_relative(path, self.root) for path in self.paths]

    def load_image(self, index: int) -> np.ndarray:
        path = self.paths[index]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FormatError(path, None, f"a readable image file ({exc.strerror})") from None
        return decode_image(data, path, None, self.max_pixels)


class ImageFolderDataset(_FileListDataset):
    """``root/<class name>/<image>``: classes are the sorted sub-folder names."""

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Transform | None = None,
        seed: int = 0,
        max_pixels: int | None = None,
    ) -> None:
        root_path = Path(root)
        if not root_path.is_dir():
            raise FormatError(root_path, None, "an image folder: root/<class>/<image files>")
        entries = sorted(root_path.iterdir())
        self.class_names = [d.name for d in entries if d.is_dir() and not is_ignored_entry(d.name)]
        # what the scan passed over (__MACOSX, ._*, .DS_Store, non-image files), for the summaries
        self.scan = FolderScan(ignored=sum(is_ignored_entry(d.name) for d in entries))
        paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(self.class_names):
            found = scan_image_folder(root_path / name)
            self.scan += found
            paths.extend(found.files)
            labels.extend([label] * len(found.files))
        if not paths:
            raise FormatError(root_path, None, f"image files ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders")
        self.paths = paths
        self.root = root_path
        mapped, self.class_ids = contiguous_labels(np.asarray(labels))
        self.class_names = [self.class_names[i] for i in self.class_ids]  # drop empty folders
        if self.scan.note():
            logger.info("%s: %s", root_path, self.scan.note())
        super().__init__(mapped, root_path, transform, seed, max_pixels)


class ImageListDataset(_FileListDataset):
    """An image-list file: ``<path> <label>``, mxnet's im2rec .lst or insightface's .lst (``lists.read_image_list``).

    Paths are relative to ``root`` (default: the list file's folder).
    """

    def __init__(
        self,
        list_file: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Transform | None = None,
        seed: int = 0,
        max_pixels: int | None = None,
    ) -> None:
        list_path = Path(list_file)
        self.paths, raw = read_image_list(list_path, root)
        self.root = Path(root) if root is not None else list_path.parent
        mapped, self.class_ids = contiguous_labels(raw)
        super().__init__(mapped, list_path, transform, seed, max_pixels)


def build_train_dataset(
    kind: str,
    path: str | os.PathLike,
    transform: Transform | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_labels: bool = True,
    **kwargs: object,
) -> FaceDataset:
    """``kind``: "recordio" (folder or .rec), "folder" (root/<class>/<img>) or "list" (an image list).

    ``cache_dir``/``cache_labels``: where a RecordIO set's label cache goes (None: the user's cache
    directory) and whether there is one; the other keyword arguments (``seed``,
    ``max_pixels``) go to every kind.
    """
    builders: dict[str, Callable[..., FaceDataset]] = {
        "recordio": RecordIODataset,
        "folder": ImageFolderDataset,
        "list": ImageListDataset,
    }
    if kind not in builders:
        raise ConfigError(f"unknown dataset kind {kind!r}; expected one of {sorted(builders)}")
    if kind == "recordio":
        kwargs.update(cache_dir=cache_dir, cache_labels=cache_labels)
    return builders[kind](path, transform=transform, **kwargs)
