"""`cdface score identification | erc | rfw`: 1:N identification (TinyFace), error-versus-reject, RFW.

Registered by `cdface.eval.cli.register` on the `score` command's subparsers; loads and prints through
`cli_common`, as `cli.py`'s protocols do, so every `cdface score` protocol reads and prints the same way.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from cdface.cli_args import add_allow_nonfinite
from cdface.errors import ConfigError, FormatError
from cdface.eval.cli_common import add_out, emit_result, load_array, nonfinite_counts
from cdface.eval.feature_files import genuine_flags, integer_labels

__all__ = ["register_protocols", "parse_floats", "parse_ints"]


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'1,5,20' -> (1, 5, 20); ConfigError naming the option on anything else."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{what}: comma-separated integers expected, got {text!r}") from exc
    if not values or min(values) < 1:
        raise ConfigError(f"{what}: positive integers expected, got {text!r}")
    return values


def parse_floats(text: str, what: str, low: float = 0.0, high: float = 1.0) -> tuple[float, ...]:
    """'1e-3,0.01' -> (0.001, 0.01) within [low, high]; ConfigError naming the option otherwise."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{what}: comma-separated numbers expected, got {text!r}") from exc
    if any(not (low <= v <= high) for v in values):
        raise ConfigError(f"{what}: values in [{low}, {high}] expected, got {text!r}")
    return values


def register_protocols(sub: Any) -> None:
    """Add `identification`, `erc` and `rfw` to the `score` subparsers (with the shared --out of `cli_common`)."""
    i = sub.add_parser("identification", help="1:N identification: CMC over mated probes, DIR at FPIR (TinyFace)")
    i.add_argument("--probe", required=True, help=".npy (P, D) probe features")
    i.add_argument("--probe-labels", required=True, help=".npy (P,) integer identities")
    i.add_argument("--gallery", required=True, help=".npy (G, D) gallery features (mates and distractors)")
    i.add_argument("--gallery-labels", required=True, help=".npy (G,) integer identities; negative = distractor")
    i.add_argument("--ranks", default="1,5,20", help="CMC ranks (default: AdaFace's TinyFace 1,5,20)")
    i.add_argument("--fpir", default="", help="open-set FPIR levels, e.g. 0.01,0.1 (needs probes without a mate)")
    add_out(i)
    add_allow_nonfinite(i)
    i.set_defaults(func=_run_identification)

    e = sub.add_parser("erc", help="error-versus-reject: FNMR at a fixed FMR as the lowest-quality pairs are rejected")
    e.add_argument("--features", required=True, help=".npy (N, D) per-image features (not normalised: 'norm' "
                   "quality reads their magnitude)")
    e.add_argument("--pairs", help=".npy (M, 2) integer rows of --features per pair (default: rows 2i, 2i+1)")
    e.add_argument("--issame", help=".npy (M,) bool/0-1 genuine flags (pair sets)")
    e.add_argument("--ijb-meta", metavar="DIR", help="IJB 1:1 instead of a pair set: the IJB_release <dataset>/meta "
                   "directory; --features then has one row per line of *_name_5pts_score.txt")
    e.add_argument("--dataset", choices=("IJBB", "IJBC"), default="IJBC", type=str.upper, help="with --ijb-meta")
    e.add_argument("--quality", default="norm",
                   help="'norm' (the feature magnitude, as MagFace), 'faceness' (IJB detector score) or a .npy (N,) "
                   "of per-image qualities")
    e.add_argument("--fmr", default="0.001", help="FMR level(s) of the threshold (default MagFace's 1e-3)")
    e.add_argument("--reject", default="", help="rejection fractions (default MagFace's 0, 0.05, ..., 0.95)")
    e.add_argument("--threshold", choices=("fixed", "per-rate"), default="fixed",
                   help="fixed: set once on all pairs (NIST ERC); per-rate: re-set on the pairs left (MagFace's "
                   "script)")
    e.add_argument("--no-curves", action="store_true", help="only the AUC and FNMR without rejection")
    add_out(e)
    add_allow_nonfinite(e)
    e.set_defaults(func=_run_erc)

    r = sub.add_parser("rfw", help="RFW: per-race 10-fold pair accuracy, their mean, std and skewed error ratio")
    r.add_argument("--race", nargs=3, action="append", required=True, metavar=("NAME", "EMBEDDINGS", "ISSAME"),
                   help="a race's name, its .npy (2N, D) flip-fused pair embeddings (rows 2i, 2i+1 = pair i) and "
                   ".npy (N,) genuine flags; repeat for each race")
    r.add_argument("--nfolds", type=int, default=10)
    add_out(r)
    add_allow_nonfinite(r)
    r.set_defaults(func=_run_rfw)


def _load(path: str, what: str) -> np.ndarray:
    return load_array(path, what)


def _emit(result: dict[str, Any], args: argparse.Namespace, **features: np.ndarray) -> int:
    """Print (and write) as every `score` protocol does, with the non-finite gate over ``features``."""
    return emit_result(result, args.out, nonfinite_counts(**features), args.allow_nonfinite)


def _labels(path: str, n: int, what: str) -> np.ndarray:
    labels = _load(path, what).reshape(-1)
    if labels.shape[0] != n:
        raise FormatError(path, None, f"{what}: {n} entries (one per feature row), got {labels.shape[0]}")
    return integer_labels(labels, path, what)


def _features(path: str, what: str) -> np.ndarray:
    feats = _load(path, what)
    if feats.ndim != 2 or 0 in feats.shape or feats.dtype.kind != "f":
        raise FormatError(path, None, f"{what}: a non-empty float (N, D) array, got {feats.dtype} {feats.shape}")
    return feats


def _run_identification(args: argparse.Namespace) -> int:
    from cdface.eval.identification import identification

    probe = _features(args.probe, "probe features")
    gallery = _features(args.gallery, "gallery features")
    if gallery.shape[1] != probe.shape[1]:
        raise FormatError(args.gallery, None, f"{probe.shape[1]}-D features like the probe, got {gallery.shape}")
    lp = _labels(args.probe_labels, probe.shape[0], "probe labels")
    lg = _labels(args.gallery_labels, gallery.shape[0], "gallery labels")
    ranks = parse_ints(args.ranks, "--ranks")
    fpir = parse_floats(args.fpir, "--fpir") if args.fpir.strip() else ()
    if not np.isin(lp, lg[lg >= 0]).any():
        raise FormatError(args.probe_labels, None, "at least one probe identity present in --gallery-labels")
    if fpir and np.isin(lp, lg[lg >= 0]).all():
        raise ConfigError("--fpir needs probes without a mate in the gallery (open-set searches); all are mated")
    res = identification(probe, lp, gallery, lg, ranks=ranks, fpir_levels=fpir)
    return _emit(res.to_dict(), args, probe=probe, gallery=gallery)


def _run_erc(args: argparse.Namespace) -> int:
    from cdface.eval.erc import error_versus_reject, ijb_error_versus_reject

    feats = _features(args.features, "features")
    quality, source = _quality(args, feats)
    fmr = parse_floats(args.fmr, "--fmr")
    if not fmr or min(fmr) <= 0:
        raise ConfigError(f"--fmr: levels in (0, 1] expected, got {args.fmr!r}")
    reject = parse_floats(args.reject, "--reject", 0.0, 0.9999) if args.reject.strip() else None
    options = dict(fmr_levels=fmr, reject_fractions=reject, threshold=args.threshold.replace("-", "_"))
    if args.ijb_meta:
        from cdface.eval.ijb_meta import load_ijb_meta

        meta = load_ijb_meta(args.ijb_meta, dataset=args.dataset, with_pairs=True)
        if feats.shape[0] != meta.templates.shape[0]:
            raise FormatError(args.features, None, f"one row per 5pts-file image ({meta.templates.shape[0]}), got "
                              f"{feats.shape}")
        if args.quality == "faceness":
            quality = np.asarray(meta.faceness, np.float64)
        res = ijb_error_versus_reject(feats, meta.faceness, meta.templates, meta.medias, meta.pairs, meta.labels,
                                      quality, **options)
        return _emit(res.to_dict(curves=not args.no_curves) | {"quality": source}, args, features=feats)
    if args.issame is None:
        raise ConfigError("score erc needs --issame (pair sets) or --ijb-meta (IJB 1:1)")
    if args.quality == "faceness":
        raise ConfigError("--quality faceness needs --ijb-meta (pair sets have no detector score)")
    if args.pairs:
        pairs = _load(args.pairs, "pairs")
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
            raise FormatError(args.pairs, None, f"an integer (M, 2) array, got {pairs.dtype} {pairs.shape}")
        if pairs.size and (pairs.min() < 0 or pairs.max() >= feats.shape[0]):
            raise FormatError(args.pairs, None, f"row indices in [0, {feats.shape[0]}), got {pairs.min()}.."
                              f"{pairs.max()}")
    else:
        if feats.shape[0] % 2:
            raise FormatError(args.features, None, f"2N rows (pairs 2i, 2i+1) without --pairs, got {feats.shape[0]}")
        pairs = np.arange(feats.shape[0]).reshape(-1, 2)
    same = genuine_flags(_load(args.issame, "issame").reshape(-1), args.issame)
    if same.shape[0] != pairs.shape[0]:
        raise FormatError(args.issame, None, f"{pairs.shape[0]} genuine flags, got {same.shape[0]}")
    try:
        res = error_versus_reject(feats, pairs, same, quality, **options)
    except ValueError as exc:
        raise FormatError(args.issame, None, str(exc)) from exc
    out = res.to_dict(curves=not args.no_curves)
    out["quality"] = source
    return _emit(out, args, features=feats)


def _run_rfw(args: argparse.Namespace) -> int:
    from cdface.eval.rfw import evaluate_rfw

    embeddings, issame = {}, {}
    for name, emb_path, same_path in args.race:
        if name in embeddings:
            raise ConfigError(f"--race {name} given twice")
        emb = _features(emb_path, f"{name} embeddings")
        same = genuine_flags(_load(same_path, f"{name} genuine flags").reshape(-1), same_path, f"{name} issame")
        if emb.shape[0] % 2 or same.shape[0] * 2 != emb.shape[0]:
            raise FormatError(same_path, None, f"{emb.shape[0] // 2} genuine flags for the (2N, D) embeddings "
                              f"{emb.shape}, got {same.shape[0]}")
        embeddings[name], issame[name] = emb, same
    return _emit(evaluate_rfw(embeddings, issame, nfolds=args.nfolds).to_dict(), args, **embeddings)


def _quality(args: argparse.Namespace, feats: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-image qualities of --quality: the feature norms, IJB's faceness (filled in by the caller), or a .npy."""
    if args.quality in ("norm", "faceness"):
        label = "feature norm" if args.quality == "norm" else "detector faceness"
        return np.linalg.norm(feats.astype(np.float64), axis=1), label
    quality = _load(args.quality, "quality").reshape(-1)
    if quality.shape[0] != feats.shape[0] or quality.dtype.kind not in "iuf" or not np.isfinite(quality).all():
        raise FormatError(args.quality, None, f"{feats.shape[0]} finite qualities (one per feature row), got "
                          f"{quality.dtype} {quality.shape}")
    return quality.astype(np.float64), str(args.quality)
