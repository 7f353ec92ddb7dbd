"""Which training set a run belongs to: N, C and a hash of the labels, independent of where the set lives.

The difficulty scores and the sampler's drawn-ahead batches are indexed by sample, and the head's rows by
class: a checkpoint is only meaningful for the set it was trained on. Every checkpoint stores the set's
fingerprint; `init_from` (taking head and scores) and resume compare it with the set in the config and refuse
another set with one line naming what differs, while the same set moved to another path is accepted.

The hash covers the label array (int64, in sample order) and each sample's place within the set, relative to
the set's root: the record key of a RecordIO set, the file path below the root of an image folder or list. The
label array alone misses a renamed identity folder when the classes have equal sizes (the label array is the
same, but every index now points at another identity's images).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DataFingerprint", "labels_digest"]

_CHUNK = 1 << 22  # values hashed per update: bounded memory for a 42M-sample set


def labels_digest(labels: np.ndarray, sample_ids: np.ndarray | Iterable[str] | None = None) -> str:
    """sha256 (hex) of the labels (int64 little-endian, in order) and, when given, each sample's id: an integer
    array (record keys) or strings (paths relative to the set's root, '\\0'-separated)."""
    digest = hashlib.sha256(b"cdface-labels-v1\0")
    flat = np.asarray(labels).reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        digest.update(np.ascontiguousarray(flat[start:start + _CHUNK], dtype="<i8").tobytes())
    if sample_ids is not None:
        digest.update(b"\0ids\0")
        if isinstance(sample_ids, np.ndarray) and sample_ids.dtype.kind in "iu":
            ids = sample_ids.reshape(-1)
            for start in range(0, ids.size, _CHUNK):
                digest.update(np.ascontiguousarray(ids[start:start + _CHUNK], dtype="<i8").tobytes())
        else:
            for name in sample_ids:
                digest.update(str(name).encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class DataFingerprint:
    """N (samples), C (classes) and `labels_sha256` (see `labels_digest`) of a training set."""

    num_samples: int
    num_classes: int
    labels_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "num_classes": self.num_classes, "labels_sha256": self.labels_sha256}

    @classmethod
    def from_dict(cls, value: Any) -> DataFingerprint | None:
        """The fingerprint a checkpoint stores, or None (a checkpoint written before fingerprints, or damaged)."""
        if not isinstance(value, Mapping):
            return None
        try:
            return cls(int(value["num_samples"]), int(value["num_classes"]), str(value["labels_sha256"]))
        except (KeyError, TypeError, ValueError):
            return None

    def differences(self, other: DataFingerprint) -> list[str]:
        """What differs between this (saved) fingerprint and `other` (this run's set), in words; [] when equal."""
        found = []
        if self.num_samples != other.num_samples:
            found.append(f"{self.num_samples} samples there, {other.num_samples} here")
        if self.num_classes != other.num_classes:
            found.append(f"{self.num_classes} classes there, {other.num_classes} here")
        if self.labels_sha256 != other.labels_sha256 and not found:
            found.append(
                f"same size ({self.num_samples} samples, {self.num_classes} classes) but other labels or samples "
                f"(label hash {self.labels_sha256[:12]} there, {other.labels_sha256[:12]} here: a renamed, "
                "replaced or reordered identity)"
            )
        return found
