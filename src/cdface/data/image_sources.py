"""What `cdface embed`, `compare`, `search` and `detect` accept as images: one image file, a folder (searched
recursively), a text list of image paths (or a labelled image list as training reads it: `<path> <label>`,
mxnet im2rec's or insightface's `.lst`; the labels are ignored), or a RecordIO `.rec` (or a folder holding one).

The kind is decided from the file's content, not only its name: an image is recognised by its magic bytes,
a `.rec` by its suffix, anything else must be a UTF-8 list. Every source yields a list of items and a name
per item (a path, or `<rec>#<record key>`) for `<out>.paths.txt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.data.image_files import IMAGE_EXTENSIONS, FolderScan, is_image_file, list_entry, scan_image_folder
from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING

__all__ = ["ImageSource", "resolve_image_source", "is_image_file"]

@dataclass(frozen=True)
class ImageSource:
    """`kind` is "image", "folder", "list" or "recordio". For RecordIO, `rec` is the file and `keys` its
    image records; for the others `paths` are the image files. `names` label each item for paths.txt."""

    kind: str
    origin: Path
    paths: tuple[Path, ...] = ()
    rec: Path | None = None
    keys: np.ndarray | None = None
    scan: FolderScan | None = None  # a folder's: the hidden/system entries and other files passed over

    @property
    def names(self) -> list[str]:
        if self.kind == "recordio":
            assert self.keys is not None
            return [f"{self.rec}#{int(k)}" for k in self.keys]
        return [str(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.keys) if self.kind == "recordio" and self.keys is not None else len(self.paths)


def resolve_image_source(path: str | Path) -> ImageSource:
    """Classify `path` and list its images. FormatError (naming the path, and the line for lists) when it
    does not exist, is unreadable, or holds no image at all."""
    source = Path(path)
    if source.is_dir():
        scan = scan_image_folder(source)
        if scan.files:
            return ImageSource("folder", source, tuple(scan.files), scan=scan)
        recs = sorted(source.glob("*.rec"))
        if recs:
            return _recordio(source)
        raise FormatError(source, None, f"images ({', '.join(IMAGE_EXTENSIONS)}) or a .rec: the folder has none")
    if not source.is_file():
        raise FormatError(source, None, "an image, a folder of images, a list file or a .rec (not found)")
    if source.suffix.lower() == ".rec":
        return _recordio(source)
    if is_image_file(source):
        return ImageSource("image", source, (source,))
    if source.suffix.lower() in IMAGE_EXTENSIONS:
        raise FormatError(source, None, "a readable image file (its content is not an encoded image)")
    return ImageSource("list", source, tuple(_read_list(source)))


def _recordio(path: Path) -> ImageSource:
    from cdface.data.datasets import resolve_recordio_paths
    from cdface.data.recordio import RecordIOReader

    rec, idx = resolve_recordio_paths(path)
    reader = RecordIOReader(rec, idx if idx.is_file() else None)
    keys = np.asarray(reader.layout().image_keys, dtype=np.int64)
    if keys.size == 0:
        raise FormatError(rec, None, "at least one image record, got none")
    return ImageSource("recordio", path, rec=rec, keys=keys)


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except UnicodeDecodeError:
        raise FormatError(
            path, None, "an image (JPEG/PNG/...), a folder, a .rec, or a UTF-8 list of image paths; this file is "
            "none of these"
        ) from None
    base = path.parent
    out: list[Path] = []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if "\x00" in item:
            raise FormatError(path, f"line {number}", "an image path per line (binary data found)")
        entry = list_entry(item)
        out.append(entry if entry.is_absolute() else base / entry)
    if not out:
        raise FormatError(path, None, "at least one image path (one per line); the list is empty")
    if not out[0].exists():  # a labelled training list (`<path> <label>`, im2rec's or insightface's .lst)?
        labelled = _labelled_list(path)
        if labelled and labelled[0].exists():
            return labelled
    return out


def _labelled_list(path: Path) -> list[Path] | None:
    """The image paths of `path` read as a labelled image list (`cdface.data.lists`), or None if it is not one."""
    from cdface.data.lists import read_image_list

    try:
        paths, _ = read_image_list(path)
    except FormatError:
        return None
    return list(paths)
