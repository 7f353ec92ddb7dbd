"""`cdface score ...`: metrics from saved features (no model): pairs, IJB-B/C 1:1 and 1:N, MegaFace; and
`cdface eval` (from a model: `cdface.eval.cli_eval`)."""

from __future__ import annotations

import argparse
from typing import Any

from cdface.cli_args import add_allow_nonfinite, far_list, far_value, int_list, positive_int
from cdface.errors import FormatError
from cdface.eval.cli_common import add_out, emit_result, load_array, nonfinite_counts
from cdface.eval.feature_files import genuine_flags, integer_labels


def register(subparsers: Any) -> None:
    """Add the ``score`` command (its ``pairs`` / ``ijb`` / ``megaface`` / ... subcommands) and ``eval``."""
    score = subparsers.add_parser("score", help="compute protocol metrics from saved feature arrays")
    sub = score.add_subparsers(dest="protocol_name", metavar="PROTOCOL")
    score.set_defaults(func=lambda args: (score.print_help(), 2)[1])

    p = sub.add_parser("pairs", help="LFW-style pair verification (insightface's 10-fold protocol)")
    p.add_argument("--embeddings", required=True, help=".npy (2N, D): rows 2i, 2i+1 form pair i (flip-fused)")
    p.add_argument("--issame", required=True, help=".npy (N,) bool/0-1 genuine flags")
    p.add_argument(
        "--embeddings-flip",
        help=".npy (2N, D) embeddings of the mirrored images: then --embeddings are the un-fused ones, the two "
        "are summed (insightface's flip test) and the output adds insightface's XNorm",
    )
    p.add_argument("--nfolds", type=positive_int, default=10, help="cross-validation folds (insightface: 10)")
    p.add_argument("--far-target", type=far_value, default=1e-3,
                   help="the FAR of insightface's 'val' (TAR@FAR) output")
    p.add_argument("--far", type=far_list, default=(), metavar="F1,F2,...",
                   help="also report TAR at these FARs (tar_at_far), each by the 'val' rule; default: none")
    p.add_argument("--curves", action="store_true", help="include the ROC (tpr/fpr per threshold)")
    add_allow_nonfinite(p)
    add_out(p)
    p.set_defaults(func=_run_pairs)

    j = sub.add_parser("ijb", help="IJB-B / IJB-C template verification (1:1) or identification (1:N)")
    j.add_argument("--features", required=True, help=".npy (M, D): one row per line of *_name_5pts_score.txt")
    j.add_argument("--faceness", help=".npy (M,) detector scores (default: last column of the 5pts file)")
    j.add_argument("--meta-dir", required=True, help="the IJB_release <dataset>/meta directory")
    j.add_argument("--dataset", choices=("IJBB", "IJBC"), default="IJBC", type=str.upper,
                   help="which release the meta files belong to (their file names)")
    j.add_argument("--protocol", choices=("11", "1n"), default="11", type=str.lower,
                   help="11: template verification (TAR@FAR); 1n: identification (CMC, TPIR@FPIR)")
    j.add_argument("--identification-protocol", choices=("insightface", "nist"), default="insightface",
                   help="1:N only: insightface's ijb_1n.py numbers, or open-set NIST per gallery")
    j.add_argument("--no-norm", action="store_true", help="L2-normalise image features first (TestMode N0)")
    j.add_argument("--no-detector-score", action="store_true", help="do not weight by faceness (D0)")
    j.add_argument("--exact", action="store_true",
                   help="1:1 only: every pair score in float64 (slow). The default scores in float32 blocks and "
                   "rescores in float64 near each FAR threshold: the same TAR table, ~6x faster")
    j.add_argument("--far", type=far_list, default=None, metavar="F1,F2,...",
                   help="1:1 only: FAR levels of the TAR table (default: 1e-6,...,1e-1 as insightface)")
    add_allow_nonfinite(j)
    add_out(j)
    j.set_defaults(func=_run_ijb)

    m = sub.add_parser("megaface", help="MegaFace challenge 1 identification and verification")
    m.add_argument("--probe", required=True, help=".npy (Np, D) or a devkit OpenCV matrix file")
    m.add_argument("--probe-labels", required=True, help=".npy (Np,) identity labels")
    m.add_argument("--distractors", required=True, help=".npy (Nd, D) or a devkit OpenCV matrix file")
    m.add_argument("--protocol", choices=("devkit", "seed"), default="devkit",
                   help="devkit: the MegaFace devkit's definitions; seed: the paper repository's eval_megaface.py")
    m.add_argument("--sizes", type=int_list, default=(),
                   help="comma-separated distractor subset sizes for the size curve (default: none)")
    m.add_argument("--seed", type=int, default=0, help="subset sampling seed (size curve)")
    m.add_argument("--far", type=far_list, default=None, metavar="F1,F2,...",
                   help="FAR levels of the verification TAR table (default: 1e-4,...,1e-9)")
    add_allow_nonfinite(m)
    add_out(m)
    m.set_defaults(func=_run_megaface)

    from cdface.eval.cli_protocols import register_protocols

    register_protocols(sub)  # identification (TinyFace), erc, rfw

    from cdface.eval.cli_eval import register_eval

    register_eval(subparsers)


def _run_pairs(args: argparse.Namespace) -> int:
    from cdface.eval.verification import embedding_norm_stats, evaluate_pairs, flip_fuse

    emb = load_array(args.embeddings, "embeddings")
    same = load_array(args.issame, "issame")
    if same.ndim == 1:
        same = genuine_flags(same, args.issame)
    if emb.ndim != 2 or emb.shape[0] % 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise FormatError(args.embeddings, None, f"an array of shape (2N, D), got {emb.shape}")
    if same.ndim != 1 or same.shape[0] * 2 != emb.shape[0]:
        raise FormatError(args.issame, None, f"{emb.shape[0] // 2} genuine flags, got shape {same.shape}")
    flip = None if args.embeddings_flip is None else load_array(args.embeddings_flip, "embeddings")
    if flip is not None and flip.shape != emb.shape:
        raise FormatError(args.embeddings_flip, None, f"the embeddings' shape {emb.shape}, got {flip.shape}")
    n_pairs = same.shape[0]
    if args.nfolds > 1 and n_pairs < args.nfolds:
        raise FormatError(args.issame, None, f"at least {args.nfolds} pairs for {args.nfolds}-fold verification, "
                          f"got {n_pairs} pairs (use --nfolds {n_pairs} or fewer, or more pairs)")
    fused = emb if flip is None else flip_fuse(emb, flip)
    res = evaluate_pairs(fused, same, nfolds=args.nfolds, far_target=args.far_target, far_targets=args.far)
    out = res.to_dict(curves=args.curves)
    if flip is not None:
        out["xnorm"] = embedding_norm_stats(emb, flip)
    return emit_result(out, args.out, nonfinite_counts(embeddings=emb, embeddings_flip=flip), args.allow_nonfinite)


def _run_ijb(args: argparse.Namespace) -> int:
    from cdface.eval.ijb import ijb_identification, ijb_verification
    from cdface.eval.ijb_meta import load_ijb_1n_meta, load_ijb_meta

    meta = load_ijb_meta(args.meta_dir, dataset=args.dataset, with_pairs=args.protocol == "11")
    feats = load_array(args.features, "features")
    if feats.ndim != 2 or feats.shape[0] != meta.templates.shape[0] or feats.shape[1] == 0:
        n_img = meta.templates.shape[0]
        raise FormatError(args.features, None, f"one row per 5pts-file image ({n_img}), got {feats.shape}")
    faceness = meta.faceness if args.faceness is None else load_array(args.faceness, "faceness").reshape(-1)
    if faceness.shape[0] != feats.shape[0]:
        raise FormatError(args.faceness, None, f"{feats.shape[0]} faceness scores, got {faceness.shape[0]}")
    nonfinite = nonfinite_counts(features=feats)
    if nonfinite["features"][0]:  # the ROC is undefined for NaN scores: report the invalid input only
        return emit_result({}, args.out, nonfinite, args.allow_nonfinite)
    common: dict[str, Any] = {"use_norm_score": not args.no_norm, "use_detector_score": not args.no_detector_score}
    if args.protocol == "11":
        if args.far is not None:
            common["far_levels"] = args.far
        res = ijb_verification(feats, faceness, meta.templates, meta.medias, meta.pairs, meta.labels,
                               exact=args.exact, **common)
    else:
        lists = load_ijb_1n_meta(args.meta_dir, dataset=args.dataset, known_templates=meta.templates)
        res = ijb_identification(feats, faceness, meta.templates, meta.medias, lists.galleries, lists.probes,
                                 protocol=args.identification_protocol, **common)
    return emit_result(res.to_dict(), args.out, nonfinite, args.allow_nonfinite)


def _run_megaface(args: argparse.Namespace) -> int:
    from cdface.eval.megaface import megaface_evaluate

    probe = load_array(args.probe, "probe features", devkit=True)
    labels = integer_labels(load_array(args.probe_labels, "probe labels").reshape(-1), args.probe_labels,
                            "probe labels")
    distractors = load_array(args.distractors, "distractor features", devkit=True)
    if probe.ndim != 2 or 0 in probe.shape:
        raise FormatError(args.probe, None, f"probe features: a non-empty (N, D) array, got {probe.shape}")
    if labels.shape[0] != probe.shape[0]:
        expected = f"{probe.shape[0]} labels for the probe rows, got {labels.shape}"
        raise FormatError(args.probe_labels, None, expected)
    if distractors.ndim != 2 or distractors.shape[1] != probe.shape[1]:
        raise FormatError(args.distractors, None, f"an (Nd, {probe.shape[1]}) array, got {distractors.shape}")
    if distractors.shape[0] == 0:
        raise FormatError(args.distractors, None, "at least one distractor row, got 0")
    fars = {} if args.far is None else {"far_levels": args.far}
    ident, verif = megaface_evaluate(probe, labels, distractors, distractor_sizes=args.sizes, seed=args.seed,
                                     protocol=args.protocol, **fars)
    assert ident is not None and verif is not None
    out = ident.to_dict()
    out.update(verif.to_dict())
    nonfinite = nonfinite_counts(probe=probe, distractors=distractors)
    return emit_result(out, args.out, nonfinite, args.allow_nonfinite)
