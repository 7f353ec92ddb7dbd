"""`cdface data extract`: a RecordIO set (insightface or im2rec layout) back into an image folder.

Writes `<out>/<class>/<record key>.<ext>` with each record's encoded bytes as stored (no re-encoding, so the
pixels are the training pixels). Class folders are the integer labels, zero-padded to one width so that
their sorted order is the label order: `cdface data pack` and `ImageFolderDataset` read the folder back
with the same labels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.errors import ConfigError, FormatError
from cdface.files import atomic_write

__all__ = ["ExtractSummary", "extract_recordio", "parse_class_list"]


@dataclass(frozen=True)
class ExtractSummary:
    out_dir: Path
    images: int
    classes: int
    skipped_existing: int
    missing_classes: tuple[int, ...] = ()  # requested with `classes` but absent from the .rec


def parse_class_list(text: str | None) -> list[int] | None:
    """'3,5,10-12' -> [3, 5, 10, 11, 12]; None -> None (all classes). ConfigError for anything else."""
    if text is None:
        return None
    out: list[int] = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ConfigError(f"--classes takes labels such as 3,5,10-12, got {item!r}") from None
        if first < 0 or last < first:
            raise ConfigError(f"--classes: a label range must be non-negative and increasing, got {item!r}")
        out.extend(range(first, last + 1))
    if not out:
        raise ConfigError("--classes is empty")
    return sorted(set(out))


def _extension(payload: bytes) -> str:
    if payload[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if payload[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if payload[:2] == b"BM":
        return ".bmp"
    return ".img"  # unknown encoding: kept byte for byte, the decoder sniffs the content


def extract_recordio(
    rec: str | os.PathLike,
    out_dir: str | os.PathLike,
    classes: Sequence[int] | None = None,
    limit: int | None = None,
    per_class: int | None = None,
) -> ExtractSummary:
    """Write the images of `rec` (a .rec or a folder holding train.rec) to `out_dir/<class>/<key>.<ext>`.

    `classes`: only these labels (the label stored in the record header); `per_class`: at most this many
    images of each class (the first in key order); `limit`: at most this many images in all. Raises
    FormatError for an unreadable file and ConfigError when the selection is empty.
    """
    from cdface.data.datasets import resolve_recordio_paths
    from cdface.data.recordio import RecordIOReader

    if not Path(rec).is_dir() and Path(rec).suffix.lower() != ".rec":
        raise FormatError(rec, None, "a RecordIO .rec file (with its .idx) or a folder holding train.rec")
    rec_path, idx_path = resolve_recordio_paths(rec)
    if not rec_path.is_file():
        raise FormatError(rec_path, None, "a RecordIO .rec file (not found)")
    reader = RecordIOReader(rec_path, idx_path if idx_path.is_file() else None)
    keys = reader.layout().image_keys
    _, raw = reader.read_headers(keys)
    labels = np.asarray(raw, dtype=np.float64)
    valid = np.isfinite(labels) & (labels >= 0) & (labels == np.round(labels))
    if not valid.all():
        bad = int(np.flatnonzero(~valid)[0])
        raise FormatError(rec_path, f"record {int(keys[bad])}", f"a non-negative integer label, got {labels[bad]}")
    labels_int = labels.astype(np.int64)
    chosen = np.ones(keys.size, dtype=bool)
    if classes is not None:
        chosen &= np.isin(labels_int, np.asarray(classes, dtype=np.int64))
    order = np.flatnonzero(chosen)
    if per_class is not None:
        # rank of each chosen record within its class, in key order (stable sort keeps key order)
        by_class = order[np.argsort(labels_int[order], kind="stable")]
        starts = np.r_[0, np.flatnonzero(np.diff(labels_int[by_class])) + 1]
        rank = np.arange(by_class.size) - np.repeat(starts, np.diff(np.r_[starts, by_class.size]))
        order = np.sort(by_class[rank < per_class])
    if limit is not None:
        order = order[:limit]
    if order.size == 0:
        present = np.unique(labels_int)
        raise ConfigError(
            f"{rec_path}: nothing to extract: {keys.size} images, classes {present[:10].tolist()}"
            f"{' ...' if present.size > 10 else ''} (requested classes {list(classes or [])[:10]})"
        )
    width = len(str(int(labels_int.max()))) if labels_int.size else 1
    out = Path(out_dir)
    written = skipped = 0
    for i in order:
        key, label = int(keys[i]), int(labels_int[i])
        _, payload = reader.read(key)
        if not payload:
            raise FormatError(rec_path, f"record {key}", "an image payload, got an empty record")
        folder = out / f"{label:0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{key}{_extension(payload)}"
        if target.is_file() and target.stat().st_size == len(payload) and target.read_bytes() == payload:
            skipped += 1
            continue
        atomic_write(target, payload, durable=False)  # a re-run rewrites any file that differs
        written += 1
    missing = tuple(sorted(set(classes or ()) - set(np.unique(labels_int).tolist())))
    return ExtractSummary(out, written + skipped, int(np.unique(labels_int[order]).size), skipped, missing)
