"""The MegaFace challenge 1 directory as `cdface eval` reads it (lists, identities, landmarks, noise flags).

Layout of `<data_root>/megaface/` (insightface's `data/` folder of its MegaFace tools, plus optional landmarks):

    facescrub_lst          one image path per line, relative to facescrub_images/; the identity is the
                           parent folder's name (e.g. `Aaron_Eckhart/Aaron_Eckhart_136.png`)
    megaface_lst           one image path per line, relative to megaface_images/
    facescrub_images/      the probe images
    megaface_images/       the distractor images
    facescrub_noises.txt   optional: insightface's FaceScrub noise list (image file names; '#' comments)
    megaface_noises.txt    optional: insightface's MegaFace noise list (`a/b/name` per line, optionally after
                           a tab; '#' comments)
    facescrub_5pts.txt     optional: `<path as in the lst> x1 y1 ... x5 y5 [score]` per line; then every
    megaface_5pts.txt      image is aligned with its landmarks, otherwise images must be aligned crops
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.data.landmarks import read_landmark_file
from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING

__all__ = ["MegaFaceLayout", "find_megaface_root", "read_megaface_layout"]


@dataclass
class MegaFaceLayout:
    """Everything read from a MegaFace directory, before any image is decoded."""

    root: Path
    probe_paths: list[Path]
    probe_identities: np.ndarray  # (Np,) identity names
    probe_landmarks: np.ndarray | None
    probe_noisy: np.ndarray  # (Np,) bool
    distractor_paths: list[Path]
    distractor_landmarks: np.ndarray | None
    distractor_noisy: np.ndarray  # (Nd,) bool
    files: list[Path]  # the list files read (for provenance)


def find_megaface_root(data_root: Path) -> Path:
    """`<data_root>/megaface` (or `MegaFace`), or `data_root` itself when it holds `facescrub_lst`."""
    for candidate in (data_root / "megaface", data_root / "MegaFace", data_root):
        if (candidate / "facescrub_lst").is_file():
            return candidate
    raise FormatError(data_root / "megaface", None, "a MegaFace directory with facescrub_lst and megaface_lst")


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FormatError(path, None, "an image list (one relative path per line)")
    lines = path.read_text(encoding=TEXT_ENCODING).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _read_landmarks(path: Path, names: Sequence[str]) -> np.ndarray | None:
    if not path.is_file():
        return None
    table = read_landmark_file(path)
    missing = [n for n in names if n not in table]
    if missing:
        raise FormatError(path, None, f"landmarks for every listed image; {len(missing)} missing, e.g. {missing[0]}")
    return np.stack([table[n] for n in names]) if names else np.zeros((0, 5, 2))


def _noise_entries(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    entries = set()
    for line in path.read_text(encoding=TEXT_ENCODING).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t")
        entries.add((fields[1] if len(fields) > 1 else fields[0]).strip())
    return entries


def read_megaface_layout(root: Path) -> MegaFaceLayout:
    """Read the lists, identities, optional landmarks and noise flags of a MegaFace directory."""
    fs_names = _read_list(root / "facescrub_lst")
    mf_names = _read_list(root / "megaface_lst")
    if not fs_names:
        raise FormatError(root / "facescrub_lst", None, "at least one FaceScrub probe image")
    if not mf_names:
        raise FormatError(root / "megaface_lst", None, "at least one MegaFace distractor image")
    for number, name in enumerate(fs_names, 1):
        if len(Path(name).parts) < 2:
            raise FormatError(root / "facescrub_lst", f"line {number}", "'identity/image' (identity = parent folder)")
    fs_noise = _noise_entries(root / "facescrub_noises.txt")
    mf_noise = _noise_entries(root / "megaface_noises.txt")
    files = [
        root / n
        for n in (
            "facescrub_lst",
            "megaface_lst",
            "facescrub_noises.txt",
            "megaface_noises.txt",
            "facescrub_5pts.txt",
            "megaface_5pts.txt",
        )
    ]
    return MegaFaceLayout(
        root=root,
        probe_paths=[root / "facescrub_images" / n for n in fs_names],
        probe_identities=np.array([Path(n).parts[-2] for n in fs_names]),
        probe_landmarks=_read_landmarks(root / "facescrub_5pts.txt", fs_names),
        probe_noisy=np.array([Path(n).name in fs_noise for n in fs_names], dtype=bool),
        distractor_paths=[root / "megaface_images" / n for n in mf_names],
        distractor_landmarks=_read_landmarks(root / "megaface_5pts.txt", mf_names),
        distractor_noisy=np.array(["/".join(Path(n).parts[-3:]) in mf_noise for n in mf_names], dtype=bool),
        files=[f for f in files if f.is_file()],
    )
