"""MegaFace challenge 1 end to end: FaceScrub probes against MegaFace distractors, from a directory.

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

Features are insightface's `gen_megaface.py` ones (image + mirror summed, L2-normalised). Noise handling
follows its `remove_noises.py`: a noisy FaceScrub image takes its identity's centre (the normalised sum of
the clean features; the reference adds +-0.001 uniform noise, omitted here for determinism); noisy
distractors are masked: never scored, yet counted as impostors of every probe, as the reference's padding
(a huge extra coordinate) leaves them in the FAR denominator while they can never rank or be accepted.
Scoring is `cdface.eval.megaface.megaface_evaluate` (devkit protocol by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdface.data.landmarks import read_landmark_file
from cdface.errors import FormatError
from cdface.inference.embedder import FaceEmbedder, l2_normalize
from cdface.inference.extract import ImageFiles, extract_features
from cdface.inference.results import TargetResult, sha256_file

__all__ = ["MegaFaceLayout", "find_megaface_root", "read_megaface_layout", "evaluate_megaface_target"]

DEFAULT_SIZES = (10, 100, 1_000, 10_000, 100_000)


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
    lines = path.read_text(encoding="utf-8").splitlines()
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
    for line in path.read_text(encoding="utf-8").splitlines():
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


def _clean_probes(features: np.ndarray, identities: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Replace each noisy probe by its identity's centre of clean features (remove_noises.py)."""
    out = features.copy()
    for identity in np.unique(identities[noisy]):
        members = identities == identity
        clean = members & ~noisy
        if not clean.any():
            continue  # nothing to take a centre from: keep the features as they are
        out[members & noisy] = l2_normalize(features[clean].sum(axis=0, keepdims=True))
    return out


def evaluate_megaface_target(
    embedder: FaceEmbedder,
    root: Path,
    sizes: Sequence[int] = (),
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    protocol: str = "devkit",
    remove_noise: bool = True,
    seed: int = 0,
    far_levels: Sequence[float] | None = None,
    strict: bool = False,
) -> TargetResult:
    """Embed FaceScrub probes and MegaFace distractors; identification (CMC, size curve) and verification.

    `far_levels`: the verification TAR table's FARs (default 1e-4 ... 1e-9). `strict`: images that are not
    at the model's input size (and have no landmarks) raise InputSizeError instead of a warning.
    """
    from cdface.eval.megaface import DEFAULT_MEGAFACE_FARS, megaface_evaluate
    from cdface.eval.verification import count_nonfinite_rows
    from cdface.inference.input_check import check_input_sizes

    layout = read_megaface_layout(root)
    size = tuple(embedder.input_cfg["input_size"])
    probe_feats = extract_features(
        embedder,
        ImageFiles(layout.probe_paths, layout.probe_landmarks, size),
        batch_size,
        num_workers,
        progress,
        desc="facescrub",
    )
    dist_feats = extract_features(
        embedder,
        ImageFiles(layout.distractor_paths, layout.distractor_landmarks, size),
        batch_size,
        num_workers,
        progress,
        desc="megaface",
    )
    sizes_seen = probe_feats.size_counts + dist_feats.size_counts
    size_summary = check_input_sizes(sizes_seen, size, str(root), strict=strict)
    nonfinite = count_nonfinite_rows(probe_feats.fused(), dist_feats.fused())
    probes = l2_normalize(probe_feats.fused())
    distractors = l2_normalize(dist_feats.fused())
    if remove_noise:
        probes = _clean_probes(probes, layout.probe_identities, layout.probe_noisy)
        distractors = distractors[~layout.distractor_noisy]
    labels = np.unique(layout.probe_identities, return_inverse=True)[1]
    subset_sizes = tuple(sizes) or tuple(s for s in DEFAULT_SIZES if s < len(distractors))
    masked = int(layout.distractor_noisy.sum()) if remove_noise else 0
    ident, verif = megaface_evaluate(
        probes, labels, distractors, distractor_sizes=subset_sizes, seed=seed, protocol=protocol,
        masked_distractors=masked, far_levels=tuple(far_levels or DEFAULT_MEGAFACE_FARS),
    )
    assert ident is not None and verif is not None
    metrics = ident.to_dict() | verif.to_dict() | {"valid": nonfinite == 0, "nonfinite_embeddings": nonfinite}
    curves = {
        "cmc": {"rank": list(ident.cmc), "rate": list(ident.cmc.values())},
        "distractors": {"size": list(ident.size_curve), "rank1": list(ident.size_curve.values())},
    }
    seconds = probe_feats.seconds + dist_feats.seconds
    n_images = len(layout.probe_paths) + len(layout.distractor_paths)
    provenance = {
        "files": {f.name: sha256_file(f) for f in layout.files},
        "protocol": {
            "name": f"MegaFace challenge 1 ({protocol})",
            "flip": embedder.flip,
            "aligned_with_landmarks": layout.probe_landmarks is not None,
            "remove_noise": remove_noise,
            "noisy_probes_replaced": int(layout.probe_noisy.sum()) if remove_noise else 0,
            "noisy_distractors_masked": int(layout.distractor_noisy.sum()) if remove_noise else 0,
            "distractor_subset_sizes": list(subset_sizes),
            "subset_seed": seed,
        },
        "num_probes": len(layout.probe_paths),
        "num_distractors": int(len(distractors)),
        "num_images": n_images,
        "input_sizes": size_summary,
        "seconds": round(seconds, 3),
        "images_per_second": round(n_images / seconds, 1) if seconds > 0 else None,
    }
    return TargetResult("megaface", "megaface", metrics, provenance, curves)
