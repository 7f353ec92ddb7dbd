"""Write mxnet/dmlc RecordIO files (.rec + .idx) atomically, and a labelled set in insightface's layout.

The framing is ``recordio_format``'s; the layouts ``recordio_layout``'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cdface.data.recordio_format import IRHeader, encode_record, pack_header
from cdface.files import atomic_write, atomic_writer

__all__ = ["RecordIOWriter", "write_insightface_rec"]


class RecordIOWriter:
    """Write .rec/.idx byte-for-byte like ``mx.recordio.MXIndexedRecordIO`` (dmlc splitting included).

    Both files are written as temporaries beside their targets (``cdface.files.atomic_writer``) and renamed
    over them by ``close()``: a reader never sees half a .rec, and a ``with`` block left by an exception (a
    corrupt image while packing, Ctrl-C) removes the temporaries and leaves any earlier .rec/.idx unchanged.
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self._files = contextlib.ExitStack()
        with self._files:  # opening the .idx may fail: then the .rec's temporary goes too
            self._rec = self._files.enter_context(atomic_writer(self.rec_path))
            self._idx = self._files.enter_context(atomic_writer(self.idx_path))
            self._files = self._files.pop_all()
        self._pos = 0

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._files.__exit__(exc_type, exc, tb)  # the temporaries are removed, the exception goes on

    def close(self) -> None:
        """Finish both files: flushed, fsynced and renamed over ``rec_path`` / ``idx_path``."""
        self._files.close()

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; returns its offset."""
        offset = self._pos
        self._rec.write(encode_record(payload))
        self._pos = self._rec.tell()
        self._idx.write(f"{int(key)}\t{offset}\n".encode("ascii"))
        return offset

    def write_image(self, key: int, header: IRHeader | tuple, image_bytes: bytes) -> int:
        return self.write(key, pack_header(header, image_bytes))


def write_insightface_rec(
    out_dir: str | os.PathLike,
    labels: Sequence[int] | np.ndarray,
    images: Sequence[bytes] | Callable[[int], bytes],
    image_size: tuple[int, int] = (112, 112),
    prefix: str = "train",
) -> dict[str, Path]:
    """Write ``<prefix>.rec/.idx`` and ``property`` in insightface's layout.

    ``images`` holds the encoded images in the order of ``labels`` (or is ``i -> bytes``, so a large set
    is read one image at a time). Images are written grouped by class (stable order). Record 0: flag 2,
    label [first identity key, end]; images 1..N (flag 0, float label); identity records (flag 2,
    label [first, last + 1)).

    Every label is float32, the only label type mxnet reads. Class ids must be below 2**24 (exact in
    float32; ``ValueError`` otherwise). Key boundaries of 2**24 and more are stored rounded to the
    nearest float32, as insightface's own files are; ``detect_layout`` recovers the exact image/identity
    boundary from the records, while mxnet-based readers (arcface_torch's ``MXFaceDataset``) take the
    rounded value as it is.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= 2**24):
        raise ValueError(
            "class ids must be in 0..2**24-1 to be exact as float32 RecordIO labels, "
            f"got {labels.min()}..{labels.max()}"
        )
    order = np.argsort(labels, kind="stable")
    get = images if callable(images) else images.__getitem__
    classes, first_pos, counts = np.unique(labels[order], return_index=True, return_counts=True)
    n = labels.size
    end_images = n + 1
    end_ids = end_images + classes.size
    rec_path, idx_path = out / f"{prefix}.rec", out / f"{prefix}.idx"
    with RecordIOWriter(rec_path, idx_path) as writer:
        writer.write(0, pack_header(IRHeader(0, np.array([end_images, end_ids], np.float32), 0, 0)))
        for key, i in enumerate(order.tolist(), start=1):
            writer.write(key, pack_header(IRHeader(0, float(labels[i]), key, 0), get(i)))
        for j, (start, count) in enumerate(zip(first_pos.tolist(), counts.tolist())):
            bounds = np.array([start + 1, start + 1 + count], np.float32)
            writer.write(end_images + j, pack_header(IRHeader(0, bounds, 0, 0)))
    prop = out / "property"
    atomic_write(prop, f"{classes.size},{image_size[0]},{image_size[1]}\n")
    return {"rec": rec_path, "idx": idx_path, "property": prop}
