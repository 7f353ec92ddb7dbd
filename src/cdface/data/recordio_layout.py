"""Which records of a RecordIO file are images: insightface's layout or im2rec's, told from the records.

Two layouts exist in the field: insightface's (record 0 is a header: two float labels, no image, label[0]
is the first key after the image records: images are keys ``1 .. label[0]-1``, identity records
``[first, end)`` of each class follow, also without image) and im2rec's (no header: every record is an
image; with ``--pack-label`` each record carries its .lst labels as an array, flag = their number).
``detect_layout`` tells them apart from the records themselves.

Header and identity labels are float32, as mxnet reads them: above 2**24 keys they are rounded (the
reader then finds the exact boundary from the records; see ``float32_tolerance``), and class labels of
2**24 or more cannot be stored exactly at all (the writer refuses them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from cdface.data.recordio_format import IRHeader
from cdface.errors import FormatError

logger = logging.getLogger("cdface.data")

__all__ = ["KeyIndex", "RecordLayout", "detect_layout", "float32_tolerance"]


@dataclass(frozen=True)
class RecordLayout:
    """Which keys hold images.

    insightface layout: ``header_key`` 0, images are the keys ``image_range = (1, end)``, identity records
    the keys ``identity_range = (end, ids_end)``. im2rec layout (no header): ``header_key`` None and every
    key is an image (``keys``, sorted). ``image_keys`` gives the image keys as an int64 array either way.
    """

    header_key: int | None
    identity_range: tuple[int, int] | None
    image_range: tuple[int, int] | None = None
    keys: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        if self.image_range is not None:
            return self.image_range[1] - self.image_range[0]
        return 0 if self.keys is None else int(self.keys.size)

    @property
    def image_keys(self) -> np.ndarray:
        if self.image_range is not None:
            return np.arange(*self.image_range, dtype=np.int64)
        return np.zeros(0, np.int64) if self.keys is None else self.keys


class KeyIndex(Protocol):
    """What ``detect_layout`` needs of a reader (``RecordIOReader``, or a stand-in over a huge key space)."""

    rec_path: Path
    idx_path: Path

    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def read(self, key: int) -> tuple[IRHeader, bytes]: ...
    def count_keys(self, lo: int, hi: int) -> int: ...
    def sorted_keys(self) -> np.ndarray: ...

    @property
    def max_key(self) -> int: ...


def float32_tolerance(value: float) -> int:
    """How far the integer behind a float32 header label can be from it: 0 below 2**24, else one spacing.

    RecordIO header labels are float32 (mxnet's IRHeader ``<IfQQ``): above 2**24 consecutive integers
    share a float (WebFace42M's 42,474,557 images give a header end of 42,474,560 for key 42,474,558).
    """
    value = abs(float(value))
    if value < 2**24:
        return 0
    return int(np.spacing(np.float32(value)))


def _is_identity_record(header: IRHeader, payload: bytes) -> bool:
    """A header/identity record: float labels after the IRHeader and no image payload (insightface writes b"")."""
    return header.flag >= 2 and len(payload) == 0


def detect_layout(index: KeyIndex) -> RecordLayout:
    """Which records are images, decided from the records themselves.

    Record 0 is insightface's header only when it really is one: a record with at least two labels and
    no image payload, whose labels are integers ``[images end, identities end]``. Its image end is then
    checked against the records: key ``end - 1`` must be an image and key ``end`` an identity record (or
    the end of the file). Where float32 cannot hold the header's value exactly (2**24 keys and more),
    the true boundary is found by a binary search over the keys the float may stand for. Every key of the
    index must be accounted for (header, images ``1..end-1``, identities ``end..ids_end-1``), so a misread
    is an error, never a silent training on part of the data. Anything else is im2rec's layout: every
    record is an image (``im2rec`` with or without ``--pack-label``, shuffled keys, any class at key 0).
    """
    if len(index) == 0:
        return RecordLayout(None, None, keys=np.zeros(0, np.int64))
    if 0 in index:
        header, payload = index.read(0)
        if _is_identity_record(header, payload):
            return _insightface_layout(index, np.asarray(header.label, dtype=np.float64))
    return RecordLayout(None, None, keys=np.asarray(index.sorted_keys(), dtype=np.int64))


def _insightface_layout(index: KeyIndex, labels: np.ndarray) -> RecordLayout:
    def fail(expected: str, where: str | None = "record 0") -> FormatError:
        return FormatError(index.rec_path, where, expected)

    if not (np.isfinite(labels).all() and (labels == np.round(labels)).all() and labels[0] >= 1):
        raise fail(f"header labels [images end >= 1, identities end] (integers), got {labels.tolist()}")
    end_hdr, ids_hdr = int(labels[0]), int(labels[1])
    if ids_hdr < end_hdr:
        raise fail(f"header labels with identities end >= images end, got {labels.tolist()}")
    last = index.max_key

    def is_identity(key: int) -> bool:
        if key > last:
            return True  # past the last record: the image range may end with the file
        if key not in index:
            raise fail(f"key {key} in the index (the header's image/identity range needs it)", None)
        return _is_identity_record(*index.read(key))

    tol = float32_tolerance(end_hdr)
    lo, hi = max(1, end_hdr - tol), end_hdr + tol + 1  # the boundary is the first identity key in [lo, hi)
    while lo < hi:  # binary search: images, then identity records
        mid = (lo + hi) // 2
        if is_identity(mid):
            hi = mid
        else:
            lo = mid + 1
    end = lo
    exact = "" if tol == 0 else f" (float32 label, +-{tol})"
    if end < 2 or end > end_hdr + tol or not is_identity(end) or is_identity(end - 1):
        raise fail(
            f"image records at keys 1..{end_hdr - 1}{exact} followed by identity records, as header record 0 "
            f"says; the records disagree (first identity record found at key {end})"
        )
    images = index.count_keys(1, end)
    if images != end - 1:
        raise fail(f"every image key 1..{end - 1} in the index, found {images} of them", None)
    ids_end = max(last + 1, end)
    ids_tol = float32_tolerance(ids_hdr)
    if ids_end > ids_hdr + ids_tol or len(index) != index.count_keys(0, ids_end):
        # keys the header does not account for could be images: refuse rather than skip them
        raise fail(
            f"keys 0..{ids_hdr - 1} (header, images to {end - 1}, identity records to the header's identities "
            f"end {ids_hdr}{'' if ids_tol == 0 else f' +-{ids_tol}'}), the index has {len(index)} keys "
            f"up to {last}",
            None,
        )
    identities = index.count_keys(end, ids_end)
    if ids_end < ids_hdr - ids_tol or identities != ids_end - end:
        # training reads only the images (all present); the identity records are not used
        logger.warning(
            "%s: header record 0 announces identity records %d..%d, the index has %d of them; "
            "the %d images are complete",
            index.rec_path, end, ids_hdr - 1, identities, end - 1,
        )
    return RecordLayout(0, (end, ids_end), image_range=(1, end))
