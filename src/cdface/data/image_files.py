"""What an image file is, the one answer for every reader: folder scans (`embed`, `search`, `data pack`,
`data inspect`, training's image folders), single files (`embed a.jpg`, `compare`) and image lists.

- A file given alone is an image when its first bytes are one of the encodings the decoder reads
  (`is_image_file`); a folder scan takes the files whose suffix names one of those same encodings
  (`IMAGE_EXTENSIONS`, GIF included: its first frame), so a format embedded alone is also found in a folder.
- Entries that operating systems and archivers leave in folders people copy are not images and not
  classes: hidden entries (a name starting with '.', which covers macOS's ``._*`` resource forks and
  ``.DS_Store``), ``__MACOSX/`` (zip archives made on a Mac), ``Thumbs.db`` and ``desktop.ini`` (Windows).
  Scans skip them, and whole hidden folders, and count them for the summary (`FolderScan`).
- Paths in lists written on Windows use ``\\`` as separator: read as ``/`` (`list_entry`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderScan",
    "has_image_suffix",
    "is_ignored_entry",
    "is_image_file",
    "list_entry",
    "scan_image_folder",
]

# the encodings `cdface.data.decode` reads (simplejpeg for JPEG, Pillow for the others), by suffix ...
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
# ... and by their first bytes: JPEG, PNG, BMP, GIF, TIFF (both byte orders), binary and ASCII PPM; WebP below
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8", b"II*\x00", b"MM\x00*", b"P6", b"P3")
_SYSTEM_FILES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file starts like an encoded image the decoder reads (its content decides, not its name)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def has_image_suffix(path: str | os.PathLike) -> bool:
    """True when the name ends in one of `IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_ignored_entry(name: str) -> bool:
    """True for a hidden entry (``.DS_Store``, ``._a.jpg``, ``.git``) or a system one (``__MACOSX``,
    ``Thumbs.db``, ``desktop.ini``): never an image nor a class."""
    return name.startswith(".") or name in _SYSTEM_FILES


@dataclass
class FolderScan:
    """Image files under a folder (sorted), and what was passed over: `ignored` hidden/system entries (a
    skipped folder counts once), `other` files whose suffix is not an image's."""

    files: list[Path] = field(default_factory=list)
    ignored: int = 0
    other: int = 0

    def note(self) -> str:
        """'ignored 3 hidden/system entries (...), 1 file that is not an image' or '' when nothing was."""
        parts = []
        if self.ignored:
            parts.append(f"{self.ignored} hidden/system entr{'y' if self.ignored == 1 else 'ies'} "
                         "(__MACOSX, ._*, .DS_Store, dot-files)")
        if self.other:
            parts.append(f"{self.other} file{'' if self.other == 1 else 's'} without an image suffix "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
        return ("ignored " + " and ".join(parts)) if parts else ""

    def __iadd__(self, other: FolderScan) -> FolderScan:
        self.files.extend(other.files)
        self.ignored += other.ignored
        self.other += other.other
        return self


def scan_image_folder(root: str | os.PathLike) -> FolderScan:
    """The image files under `root`, recursively (through symlinked folders, never round a loop), in sorted path
    order, without hidden/system entries."""
    scan = FolderScan()
    top = os.fspath(root)
    # symlinked sub-folders are followed (an album linked into a gallery is part of it); a link back to one of
    # the folders above it would loop, so each folder keeps the real paths of the folders it lies in
    above = {top: {os.path.realpath(top)}}
    for folder, dirs, files in os.walk(top, followlinks=True):
        chain = above.pop(folder)
        kept_dirs = [d for d in dirs if not is_ignored_entry(d)]
        scan.ignored += len(dirs) - len(kept_dirs)
        real = [os.path.realpath(os.path.join(folder, d)) for d in kept_dirs]
        kept_dirs = [d for d, r in zip(kept_dirs, real) if r not in chain]
        above.update({os.path.join(folder, d): chain | {r} for d, r in zip(kept_dirs, real) if r not in chain})
        dirs[:] = kept_dirs  # os.walk does not descend into the ignored folders
        for name in files:
            if is_ignored_entry(name):
                scan.ignored += 1
            elif has_image_suffix(name):
                scan.files.append(Path(folder) / name)
            else:
                scan.other += 1
    scan.files.sort()
    return scan


def list_entry(text: str) -> Path:
    """A path as written in a list file, with Windows' ``\\`` separators read as separators."""
    return Path(text.replace("\\", "/")) if os.sep == "/" else Path(text)
