"""TinyFace test-set layout (QMUL's release, as AdaFace's ``validation_lq/tinyface_helper.py`` reads it).

    <root>/tinyface/Testing_Set/probe_img_ID_pairs.mat          probe_set: (N, 1) cell of file names
    <root>/tinyface/Testing_Set/gallery_match_img_ID_pairs.mat  gallery_set: (M, 1) cell of file names
    <root>/tinyface/Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}/   the original low-resolution crops
    <root>/aligned_pad_0.1_pad_high/{Probe,Gallery_Match,Gallery_Distractor}/  optional: AdaFace's aligned,
                                                                  112x112 release (files matched by name stem)

Identities come from the file-name prefix (``int(name.split('_')[0])``), as AdaFace does; every
``Gallery_Distractor`` image is a distractor (label -100, AdaFace's value). The probe and gallery lists are
the .mat files' (the protocol's definition); the distractors are every image file under Gallery_Distractor,
sorted by path. The .mat files are read with ``scipy.io.loadmat`` (MATLAB v5 files hold no code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.data.image_files import scan_image_folder
from cdface.errors import ConfigError, FormatError

__all__ = ["TinyFaceLayout", "find_tinyface_testing_set", "read_tinyface_layout", "DISTRACTOR_LABEL",
           "ALIGNED_DIR"]

DISTRACTOR_LABEL = -100
ALIGNED_DIR = "aligned_pad_0.1_pad_high"  # AdaFace's alignment folder name
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # AdaFace's get_all_files filter
_SUBSETS = ("Probe", "Gallery_Match", "Gallery_Distractor")


@dataclass
class TinyFaceLayout:
    """Image paths and labels of TinyFace's test protocol, before any image is decoded."""

    testing_set: Path
    image_root: Path  # where Probe/, Gallery_Match/, Gallery_Distractor/ images were taken from
    aligned: bool  # True when image_root is the aligned release
    probe_paths: list[Path]
    probe_labels: np.ndarray  # (P,) int64
    gallery_paths: list[Path]  # Gallery_Match then Gallery_Distractor
    gallery_labels: np.ndarray  # (G,) int64, DISTRACTOR_LABEL for distractors
    num_distractors: int
    mat_id_mismatches: int  # .mat ids that differ from the file-name prefix (0 on the real release)
    files: list[Path]  # the .mat files (for provenance)


def find_tinyface_testing_set(data_root: Path) -> Path:
    """The ``Testing_Set`` folder under ``data_root`` (``tinyface/Testing_Set``, also one level deeper or
    ``data_root`` itself); FormatError when there is none."""
    for candidate in (data_root / "tinyface" / "Testing_Set", data_root / "tinyface" / "tinyface" / "Testing_Set",
                      data_root / "Testing_Set", data_root):
        if (candidate / "probe_img_ID_pairs.mat").is_file():
            return candidate
    raise FormatError(data_root / "tinyface" / "Testing_Set" / "probe_img_ID_pairs.mat", None,
                      "TinyFace's test protocol file (the QMUL release under <data-root>/tinyface/Testing_Set)")


def _read_mat(path: Path, names_key: str, ids_key: str) -> tuple[list[str], np.ndarray | None]:
    try:
        import scipy.io
    except ImportError as exc:
        raise ConfigError("reading TinyFace's .mat files needs scipy (a cdface dependency): pip install scipy") from exc
    if not path.is_file():
        raise FormatError(path, None, f"a MATLAB file with '{names_key}' (file not found)")
    try:
        mat = scipy.io.loadmat(str(path))
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError, NotImplementedError) as exc:
        raise FormatError(path, None, f"a MATLAB v5 .mat file ({exc})") from exc
    if names_key not in mat:
        raise FormatError(path, None, f"a variable '{names_key}' (found {sorted(k for k in mat if k[0] != '_')})")
    cells = np.asarray(mat[names_key]).reshape(-1)
    names = []
    for i, cell in enumerate(cells):
        value = np.asarray(cell).reshape(-1)
        if value.size != 1 or value.dtype.kind not in "US":
            raise FormatError(path, f"{names_key} entry {i + 1}", "one file name (a char array) per cell")
        names.append(str(value[0]))
    ids = np.asarray(mat[ids_key]).reshape(-1) if ids_key in mat else None
    if ids is not None and ids.shape[0] != len(names):
        raise FormatError(path, None, f"'{ids_key}' with one id per '{names_key}' entry ({len(names)}), got {ids.size}")
    return names, ids


def _label(name: str, where: Path, entry: str) -> int:
    prefix = Path(name).name.split("_")[0]
    try:
        return int(prefix)
    except ValueError as exc:
        raise FormatError(where, entry, f"a file name '<identity>_<n>.<ext>' with an integer identity, got {name!r}"
                          ) from exc


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FormatError(folder, None, "a folder of TinyFace images (not found)")
    # hidden/system entries (a copy made on a Mac: ._*.jpg, __MACOSX/) are no images (cdface.data.image_files)
    files = [p for p in scan_image_folder(folder).files if p.suffix.lower() in _IMAGE_EXTENSIONS]
    return {p.stem: p for p in files}


def read_tinyface_layout(data_root: str | Path, aligned_dir: str | None = ALIGNED_DIR) -> TinyFaceLayout:
    """Read the protocol lists and locate every image; no image is decoded.

    Images come from ``<root>/<aligned_dir>/`` when that folder exists (AdaFace evaluates its aligned release),
    else from the original crops under ``Testing_Set/``. Raises FormatError (file + entry) for a missing or
    malformed .mat, a listed image that does not exist, or a name without an integer identity prefix.
    """
    testing = find_tinyface_testing_set(Path(data_root))
    probe_mat = testing / "probe_img_ID_pairs.mat"
    gallery_mat = testing / "gallery_match_img_ID_pairs.mat"
    probe_names, probe_ids = _read_mat(probe_mat, "probe_set", "probe_ids")
    gallery_names, gallery_ids = _read_mat(gallery_mat, "gallery_set", "gallery_ids")
    if not probe_names or not gallery_names:
        raise FormatError(probe_mat if not probe_names else gallery_mat, None, "at least one listed image")
    tinyface_root = testing.parent.parent  # AdaFace's tinyface_root holds tinyface/Testing_Set and the alignment
    aligned_root = tinyface_root / aligned_dir if aligned_dir else None
    aligned = aligned_root is not None and (aligned_root / "Probe").is_dir()
    image_root = aligned_root if aligned and aligned_root is not None else testing
    folders = {name: _by_stem(image_root / name) for name in _SUBSETS}

    def locate(names: list[str], subset: str, mat: Path, key: str) -> list[Path]:
        out = []
        for i, name in enumerate(names):
            path = folders[subset].get(Path(name).stem)
            if path is None:
                raise FormatError(mat, f"{key} entry {i + 1}", f"an image {name!r} under {image_root / subset}")
            out.append(path)
        return out

    probe_paths = locate(probe_names, "Probe", probe_mat, "probe_set")
    match_paths = locate(gallery_names, "Gallery_Match", gallery_mat, "gallery_set")
    distractor_paths = list(folders["Gallery_Distractor"].values())
    probe_labels = np.array([_label(n, probe_mat, f"probe_set entry {i + 1}") for i, n in enumerate(probe_names)],
                            dtype=np.int64)
    match_labels = np.array([_label(n, gallery_mat, f"gallery_set entry {i + 1}")
                             for i, n in enumerate(gallery_names)], dtype=np.int64)
    if np.any(match_labels < 0) or np.any(probe_labels < 0):
        raise FormatError(gallery_mat, None, "non-negative identity prefixes (negative labels mark distractors)")
    mismatches = 0
    for ids, labels in ((probe_ids, probe_labels), (gallery_ids, match_labels)):
        if ids is not None and ids.dtype.kind in "iuf":
            mismatches += int(np.count_nonzero(ids.astype(np.int64) != labels))
    return TinyFaceLayout(
        testing_set=testing,
        image_root=image_root,
        aligned=aligned,
        probe_paths=probe_paths,
        probe_labels=probe_labels,
        gallery_paths=match_paths + distractor_paths,
        gallery_labels=np.r_[match_labels, np.full(len(distractor_paths), DISTRACTOR_LABEL, np.int64)],
        num_distractors=len(distractor_paths),
        mat_id_mismatches=mismatches,
        files=[probe_mat, gallery_mat],
    )
