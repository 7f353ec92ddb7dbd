"""`cdface score identification | erc`: generic 1:N identification (TinyFace's protocol) and error-versus-reject.

Registered by `cdface.eval.cli.register` on the `score` command's subparsers; reuses its .npy loading and
JSON output so every `cdface score` protocol reads and prints the same way.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from cdface.errors import ConfigError, FormatError

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


def register_protocols(sub: Any, add_out: Any) -> None:
    """Add `identification` and `erc` to the `score` subparsers (`add_out` adds the shared --out option)."""
    i = sub.add_parser("identification", help="1:N identification: CMC over mated probes, DIR at FPIR (TinyFace)")
    i.add_argument("--probe", required=True, help=".npy (P, D) probe features")
    i.add_argument("--probe-labels", required=True, help=".npy (P,) integer identities")
    i.add_argument("--gallery", required=True, help=".npy (G, D) gallery features (mates and distractors)")
    i.add_argument("--gallery-labels", required=True, help=".npy (G,) integer identities; negative = distractor")
    i.add_argument("--ranks", default="1,5,20", help="CMC ranks (default: AdaFace's TinyFace 1,5,20)")
    i.add_argument("--fpir", default="", help="open-set FPIR levels, e.g. 0.01,0.1 (needs probes without a mate)")
    add_out(i)
    i.set_defaults(func=_run_identification)


def _load(path: str, what: str) -> np.ndarray:
    from cdface.eval.cli import _load_array

    return _load_array(path, what)


def _emit(result: dict[str, Any], out: str | None) -> int:
    from cdface.eval.cli import _emit as emit

    return emit(result, out)


def _labels(path: str, n: int, what: str) -> np.ndarray:
    labels = _load(path, what).reshape(-1)
    if labels.shape[0] != n:
        raise FormatError(path, None, f"{what}: {n} entries (one per feature row), got {labels.shape[0]}")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise FormatError(path, None, f"{what}: integer identities, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _features(path: str, what: str) -> np.ndarray:
    feats = _load(path, what)
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.dtype.kind != "f":
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
    return _emit(res.to_dict(), args.out)
