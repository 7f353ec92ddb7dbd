"""Readers of the IJB-B / IJB-C ``IJB_release/<dataset>/meta`` files, as insightface's IJB scripts use them.

Files (IJB-C; IJB-B has the same layout with ``ijbb_`` names and S1/S2 galleries):

- ``ijbc_face_tid_mid.txt``: ``image_name template_id media_id`` per line (space separated);
- ``ijbc_template_pair_label.txt``: ``template_id_1 template_id_2 label`` (label 1 genuine, 0 impostor);
- ``ijbc_name_5pts_score.txt``: ``image_name x1 y1 ... x5 y5 faceness`` (the crops in ``loose_crop/``);
- ``ijbc_1N_gallery_G1.csv``, ``_G2.csv``, ``ijbc_1N_probe_mixed.csv``: a header then
  ``TEMPLATE_ID,SUBJECT_ID,FILENAME,...`` one row per image (insightface reads the first two columns).

Every malformed line raises :class:`cdface.errors.FormatError` naming the file and the 1-based line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdface.errors import FormatError
from cdface.files import TEXT_ENCODING

__all__ = [
    "IJBMeta",
    "IJB1NLists",
    "read_template_media_list",
    "read_template_pair_list",
    "read_name_5pts_score",
    "read_template_subject_csv",
    "load_ijb_meta",
    "load_ijb_1n_meta",
    "ijb_file_names",
]

LANDMARK_LIMIT = 1.0e5  # pixel coordinates beyond this are not a face crop's landmarks


def ijb_file_names(dataset: str) -> dict[str, str]:
    """The meta file names of a dataset ("IJBB" or "IJBC")."""
    ds = dataset.upper()
    if ds not in ("IJBB", "IJBC"):
        raise ValueError(f"dataset must be IJBB or IJBC, got {dataset!r}")
    low = ds.lower()
    g1, g2 = ("G1", "G2") if ds == "IJBC" else ("S1", "S2")
    return {
        "tid_mid": f"{low}_face_tid_mid.txt",
        "pairs": f"{low}_template_pair_label.txt",
        "5pts": f"{low}_name_5pts_score.txt",
        "gallery1": f"{low}_1N_gallery_{g1}.csv",
        "gallery2": f"{low}_1N_gallery_{g2}.csv",
        "probe": f"{low}_1N_probe_mixed.csv",
    }


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding=TEXT_ENCODING)
    except FileNotFoundError as exc:
        raise FormatError(path, None, "file not found") from exc
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"UTF-8 text ({exc})") from exc
    return text.splitlines()


_INT_TOKEN = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _parse_int(token: str, path: Path, lineno: int, what: str) -> int:
    """An ASCII decimal integer that fits int64 (what numpy's reader accepts), else a FormatError at the line."""
    if _INT_TOKEN.fullmatch(token) is None:
        raise FormatError(path, f"line {lineno}", f"an integer {what}, got {token!r}")
    # (more than 19 significant digits never fits, and int() refuses very long strings)
    if len(token.lstrip("+-").lstrip("0")) > 19 or not _INT64_MIN <= int(token) <= _INT64_MAX:
        shown = token if len(token) <= 40 else f"{token[:20]}...({len(token)} digits)"
        raise FormatError(path, f"line {lineno}", f"an integer {what} that fits int64, got {shown}")
    return int(token)


def read_template_media_list(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``*_face_tid_mid.txt`` -> (names (N,) str, templates (N,) int64, medias (N,) int64)."""
    path = Path(path)
    names: list[str] = []
    tids: list[int] = []
    mids: list[int] = []
    for i, line in enumerate(_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise FormatError(path, f"line {i}", f"3 fields 'image template_id media_id', got {len(parts)}")
        names.append(parts[0])
        tids.append(_parse_int(parts[1], path, i, "template id"))
        mids.append(_parse_int(parts[2], path, i, "media id"))
    if not names:
        raise FormatError(path, None, "at least one 'image template_id media_id' line")
    return np.array(names), np.array(tids, dtype=np.int64), np.array(mids, dtype=np.int64)


def read_template_pair_list(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``*_template_pair_label.txt`` -> (pairs (P, 2) int64, labels (P,) int64 in {0, 1}).

    Parsed by numpy's C reader (15.6M lines in seconds); on any error the file is rescanned line by line to
    name the first bad line.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, None, "file not found")
    try:
        data = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError:
        data = None
    if data is None or data.shape[1] != 3:
        for i, line in enumerate(_lines(path), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise FormatError(path, f"line {i}", f"3 fields 't1 t2 label', got {len(parts)}")
            for tok, what in zip(parts, ("template id", "template id", "label")):
                _parse_int(tok, path, i, what)
        raise FormatError(path, None, "lines 't1 t2 label' of integers")
    if data.shape[0] == 0:
        raise FormatError(path, None, "at least one 't1 t2 label' line")
    bad = np.flatnonzero((data[:, 2] != 0) & (data[:, 2] != 1))
    if bad.size:
        raise FormatError(path, _line_of(path, int(bad[0])), f"label 0 or 1, got {data[bad[0], 2]}")
    return np.ascontiguousarray(data[:, :2]), np.ascontiguousarray(data[:, 2])


def _line_of(path: Path, record: int) -> str:
    """The 1-based line number of the record-th non-empty line (only computed on the error path)."""
    seen = -1
    for i, line in enumerate(_lines(path), 1):
        if line.split():
            seen += 1
            if seen == record:
                return f"line {i}"
    return f"record {record + 1}"


def read_name_5pts_score(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``*_name_5pts_score.txt`` -> (names (N,), landmarks (N, 5, 2) float32, faceness (N,) float32)."""
    path = Path(path)
    names: list[str] = []
    values: list[list[float]] = []
    for i, line in enumerate(_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 12:
            raise FormatError(path, f"line {i}", f"12 fields 'image x1 y1 .. y5 faceness', got {len(parts)}")
        try:
            nums = [float(t) for t in parts[1:]]
        except ValueError:
            raise FormatError(path, f"line {i}", "10 landmark numbers and a faceness score") from None
        arr = np.asarray(nums)
        if not np.all(np.isfinite(arr)):
            raise FormatError(path, f"line {i}", "finite landmark coordinates and faceness score")
        if np.any(np.abs(arr[:10]) > LANDMARK_LIMIT):
            raise FormatError(path, f"line {i}", f"landmark coordinates within +-{LANDMARK_LIMIT:g} pixels")
        names.append(parts[0])
        values.append(nums)
    if not names:
        raise FormatError(path, None, "at least one 'image x1 y1 ... x5 y5 faceness' line")
    table = np.asarray(values, dtype=np.float32)
    return np.array(names), table[:, :10].reshape(-1, 5, 2), np.ascontiguousarray(table[:, 10])


def read_template_subject_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A 1:N gallery/probe CSV -> (template ids (R,), subject ids (R,)), one entry per row (image).

    Columns are found by the header names TEMPLATE_ID and SUBJECT_ID; without them the first two columns
    are used, as insightface does (it skips the first row).
    """
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise FormatError(path, None, "a header row then TEMPLATE_ID,SUBJECT_ID,... rows")
    header = [h.strip().upper() for h in lines[0].split(",")]
    t_col = header.index("TEMPLATE_ID") if "TEMPLATE_ID" in header else 0
    s_col = header.index("SUBJECT_ID") if "SUBJECT_ID" in header else 1
    need = max(t_col, s_col) + 1
    tids: list[int] = []
    sids: list[int] = []
    for i, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) < need:
            raise FormatError(path, f"line {i}", f"at least {need} comma-separated columns, got {len(parts)}")
        tids.append(_parse_int(parts[t_col].strip(), path, i, "TEMPLATE_ID"))
        sids.append(_parse_int(parts[s_col].strip(), path, i, "SUBJECT_ID"))
    if not tids:
        raise FormatError(path, None, "at least one TEMPLATE_ID,SUBJECT_ID row after the header")
    return np.array(tids, dtype=np.int64), np.array(sids, dtype=np.int64)


@dataclass(frozen=True)
class IJBMeta:
    """All per-image arrays in the order of the 5pts file, plus the 1:1 template pairs (if loaded)."""

    names: np.ndarray
    templates: np.ndarray
    medias: np.ndarray
    landmarks: np.ndarray  # (N, 5, 2) float32, pixel coordinates in the loose crop
    faceness: np.ndarray  # (N,) float32 detector scores
    pairs: np.ndarray | None  # (P, 2) template ids
    labels: np.ndarray | None  # (P,) 1 genuine, 0 impostor


@dataclass(frozen=True)
class IJB1NLists:
    """1:N lists: galleries [(template ids, subject ids) per row of G1/S1 and G2/S2] and the mixed probes."""

    galleries: list[tuple[np.ndarray, np.ndarray]]
    probes: tuple[np.ndarray, np.ndarray]


def load_ijb_meta(meta_dir: str | Path, dataset: str = "IJBC", with_pairs: bool = True) -> IJBMeta:
    """Read the tid/mid list, the 5pts file and (optionally) the pair list; check they agree."""
    meta_dir = Path(meta_dir)
    files = ijb_file_names(dataset)
    tm_path, pts_path = meta_dir / files["tid_mid"], meta_dir / files["5pts"]
    tm_names, templates, medias = read_template_media_list(tm_path)
    names, landmarks, faceness = read_name_5pts_score(pts_path)
    if tm_names.shape != names.shape or not np.array_equal(tm_names, names):
        templates, medias = _align_by_name(tm_path, tm_names, templates, medias, pts_path, names)
    pairs = labels = None
    if with_pairs:
        pair_path = meta_dir / files["pairs"]
        pairs, labels = read_template_pair_list(pair_path)
        unknown = np.flatnonzero(~np.isin(pairs, templates).all(axis=1))
        if unknown.size:
            bad = pairs[unknown[0]]
            raise FormatError(pair_path, _line_of(pair_path, int(unknown[0])),
                              f"template ids listed in {files['tid_mid']}, got {bad[0]} {bad[1]}")
    return IJBMeta(names, templates, medias, landmarks, faceness, pairs, labels)


def _align_by_name(tm_path: Path, tm_names: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                   pts_path: Path, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder the tid/mid rows to the 5pts order when both list the same unique image names."""
    if np.unique(tm_names).size != tm_names.size:
        raise FormatError(tm_path, None, f"the same image order as {pts_path.name} (names repeat here)")
    order = np.argsort(tm_names)
    pos = np.searchsorted(tm_names, names, sorter=order)
    pos = np.minimum(pos, tm_names.size - 1)
    found = tm_names[order[pos]] == names
    if not np.all(found) or names.size != tm_names.size:
        missing = int(np.flatnonzero(~found)[0]) if not np.all(found) else 0
        raise FormatError(pts_path, f"line {missing + 1}", f"image names listed in {tm_path.name}")
    idx = order[pos]
    return templates[idx], medias[idx]


def load_ijb_1n_meta(meta_dir: str | Path, dataset: str = "IJBC", known_templates: Any = None) -> IJB1NLists:
    """Read the two galleries and the mixed probe list; template ids must exist in ``known_templates``."""
    meta_dir = Path(meta_dir)
    files = ijb_file_names(dataset)
    lists = []
    for key in ("gallery1", "gallery2", "probe"):
        path = meta_dir / files[key]
        tids, sids = read_template_subject_csv(path)
        if known_templates is not None:
            unknown = np.flatnonzero(~np.isin(tids, np.asarray(known_templates)))
            if unknown.size:
                raise FormatError(path, f"record {int(unknown[0]) + 1}",
                                  f"TEMPLATE_ID listed in {files['tid_mid']}, got {tids[unknown[0]]}")
        lists.append((tids, sids))
    return IJB1NLists(galleries=[lists[0], lists[1]], probes=lists[2])
