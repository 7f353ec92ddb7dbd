"""Command-line options of `compare` and `search` for answers a user can trust: a threshold at a chosen FAR,
"unknown" answers, face quality (see docs/inference.md, "Thresholds at a FAR, unknown answers, quality")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cdface.cli_args import far_list
from cdface.errors import ConfigError, FormatError

__all__ = ["add_trust_options", "add_search_threshold_options", "check_far_options", "quality_fields", "one_far",
           "SearchTrust"]


def one_far(text: str) -> float:
    """argparse type: one false accept rate in (0, 1], e.g. 1e-4."""
    values = far_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"give one FAR, e.g. 1e-4; got {text!r}")
    return values[0]


def add_trust_options(parser: argparse.ArgumentParser, search: bool = False) -> None:
    """--far and --min-quality (compare, search); --unknown-below, --by, --identity-score and --gallery-labels
    (search)."""
    parser.add_argument("--far", type=one_far, metavar="F",
                        help="use the cosine threshold at this false accept rate (e.g. 1e-4), from --threshold-from "
                        "RESULTS_JSON or --calibrate PAIRS_BIN: the lowest ROC threshold with FAR <= F there")
    parser.add_argument("--min-quality", type=float, metavar="NORM",
                        help="faces whose embedding norm (un-normalised, model units; a quality for MagFace/"
                        "AdaFace-trained models) is below NORM get no answer"
                        + (" (needs <query>.quality.npy from cdface embed)" if search else ""))
    if not search:
        return
    parser.add_argument("--unknown-below", type=float, metavar="COS",
                        help="answer 'unknown' for a query whose best score is below this cosine")
    parser.add_argument("--by", choices=("image", "identity"), default="image",
                        help="rank gallery images, or identities (their images' scores combined by "
                        "--identity-score; --out's indices are then identities in sorted name order) "
                        "(default: image)")
    parser.add_argument("--identity-score", choices=("max", "mean"), default="max",
                        help="with --by identity: an identity's score is the max (default) or the mean of its "
                        "images' cosines")
    parser.add_argument("--gallery-labels", metavar="FILE",
                        help="identity of each gallery row, one per line (default: the folder of each gallery "
                        "path, e.g. alice for alice/1.jpg)")


def check_far_options(args: argparse.Namespace) -> None:
    """One-line errors for --far / --calibrate given without their partner."""
    calibrate = getattr(args, "calibrate", None)
    if args.far is not None and getattr(args, "threshold", None) is not None:
        raise ConfigError("--threshold COS is a threshold itself: give it, or --far F with its source, not both")
    if calibrate and args.far is None:
        raise ConfigError("--calibrate PAIRS_BIN calibrates the threshold at a FAR: give --far F too (e.g. --far 1e-3)")
    if args.far is not None and not (args.threshold_from or calibrate):
        raise ConfigError("--far needs where to calibrate it: --threshold-from RESULTS_JSON (a `cdface eval --out` "
                          "run) or --calibrate PAIRS_BIN (a pair set embedded with --model)")


def quality_fields(plain: np.ndarray, names: list[str], min_quality: float | None) -> tuple[dict[str, Any], list[str]]:
    """({"quality": {name: norm}, "quality_measure": ...}, names below --min-quality) of embedded images."""
    from cdface.inference.face_quality import below_quality, embedding_norms, norm_note

    norms = embedding_norms(plain)
    if min_quality is not None and (note := norm_note(norms)):
        print(f"cdface: warning: {note}", file=sys.stderr)
    low = [name for name, flag in zip(names, below_quality(norms, min_quality)) if flag]
    fields: dict[str, Any] = {
        "quality": {name: round(float(v), 4) if np.isfinite(v) else None for name, v in zip(names, norms)},
        "quality_measure": "embedding norm (un-normalised, un-mirrored; model units)",
    }
    if min_quality is not None:
        fields.update(min_quality=min_quality, low_quality=low)
    return fields, low


def add_search_threshold_options(parser: argparse.ArgumentParser) -> None:
    """Where `search`'s unknown threshold comes from besides --unknown-below: --threshold-from, --target,
    --calibrate (with the --model of `add_model_options`)."""
    parser.add_argument("--threshold-from", metavar="RESULTS_JSON",
                        help="results.json of `cdface eval --out`: 'unknown' below its pair-set threshold (at --far "
                        "F if given)")
    parser.add_argument("--target", help="with --threshold-from: which pair set (if it holds several)")
    parser.add_argument("--calibrate", metavar="PAIRS_BIN",
                        help="with --far and --model: calibrate the threshold on this .bin pair set")


class SearchTrust:
    """`search`'s open-set answers: the threshold, gallery identities, query quality flags (see identify.py)."""

    def __init__(self, args: argparse.Namespace, gallery_names: list[str] | None, gallery_labels: list[str] | None,
                 query_path: str, query_rows: int) -> None:
        from cdface.eval.thresholds import CosineThreshold, threshold_from_results
        from cdface.inference.identify import gallery_identities

        self.args = args
        if args.unknown_below is not None and (args.far is not None or args.threshold_from or args.calibrate):
            raise ConfigError("--unknown-below COS is a threshold itself: give it, or --far/--threshold-from, not both")
        if args.calibrate and not args.model:
            raise ConfigError("--calibrate PAIRS_BIN embeds the pair set with --model PATH: give the model that "
                              "embedded the gallery and queries")
        check_far_options(args)
        if args.target and not args.threshold_from:
            raise ConfigError("--target picks a pair set of --threshold-from RESULTS_JSON; give that too")
        self.threshold: CosineThreshold | None = None
        if args.unknown_below is not None:
            if not -1.0 <= args.unknown_below <= 1.0:
                raise ConfigError(f"--unknown-below is a cosine in [-1, 1], got {args.unknown_below}")
            self.threshold = CosineThreshold(args.unknown_below, None, f"--unknown-below {args.unknown_below:g}",
                                             inclusive=True)
        elif args.far is not None:
            from cdface.inference.calibration import threshold_at_far_from

            embedder = None
            if args.calibrate:
                from cdface.inference.embedder import FaceEmbedder

                embedder = FaceEmbedder(args.model, device=args.device)
            self.threshold = threshold_at_far_from(args.far, args.threshold_from, args.calibrate, args.target,
                                                   args.model, embedder)
        elif args.threshold_from:
            self.threshold = threshold_from_results(args.threshold_from, args.target, model=args.model)
        self.labels: np.ndarray | None = None
        self.identities: list[str] = []
        if args.by == "identity" or gallery_labels is not None:
            self.labels, self.identities = gallery_identities(gallery_names, gallery_labels)
        elif gallery_names is not None and (self.threshold is not None or args.min_quality is not None):
            try:  # answers name the identity (the folder) of the best image
                self.labels, self.identities = gallery_identities(gallery_names)
            except FormatError:  # image mode without identity folders: answers name the gallery path
                self.labels = None
        self.low = np.zeros(query_rows, dtype=bool)
        self.norms: np.ndarray | None = None
        if args.min_quality is not None:
            self.norms = _query_quality(query_path, query_rows)
            from cdface.inference.face_quality import below_quality

            self.low = below_quality(self.norms, args.min_quality)

    def search(self, query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k scores and indices: of gallery rows (--by image) or of identities (--by identity)."""
        from cdface.inference.identify import identity_scores
        from cdface.inference.search import topk_search

        if self.args.by == "image":
            return topk_search(query, gallery, k=k, device=self.args.device, backend=self.args.backend)
        assert self.labels is not None
        per_id = identity_scores(query, gallery, self.labels, len(self.identities), self.args.identity_score,
                                 device=self.args.device)
        k = min(k, per_id.shape[1])
        order = np.argsort(-per_id, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(per_id, order, axis=1), order.astype(np.int64)

    def hit(self, index: int, gallery_names: list[str] | None) -> dict[str, Any]:
        if self.args.by == "identity":
            return {"identity": self.identities[index]}
        out: dict[str, Any] = {"path": gallery_names[index]} if gallery_names else {}
        if self.labels is not None:
            out["identity"] = self.identities[int(self.labels[index])]
        return out

    def answers(self, scores: np.ndarray, indices: np.ndarray, gallery_names: list[str] | None
                ) -> list[dict[str, Any]] | None:
        """Per query {"answer", "answer_score"} (and "quality"), or None without a threshold or --min-quality."""
        from cdface.inference.identify import open_set_answers

        if self.threshold is None and self.norms is None:
            return None
        best = scores[:, 0] if scores.shape[1] else np.full(len(scores), -np.inf)
        top = indices[:, 0] if indices.shape[1] else np.zeros(len(scores), np.int64)
        if self.args.by == "identity":
            names = [self.identities[int(i)] for i in top]
        elif self.labels is not None:
            names = [self.identities[int(self.labels[int(i)])] for i in top]
        else:
            names = [gallery_names[int(i)] if gallery_names else f"gallery row {int(i)}" for i in top]
        known = self.threshold.same(best) if self.threshold is not None else np.ones(len(best), bool)
        known = np.asarray(known, dtype=bool) & np.isfinite(best)
        answer = open_set_answers(known, names, self.low)
        rows = []
        for q, text in enumerate(answer):
            row: dict[str, Any] = {"answer": text, "answer_score": round(float(best[q]), 6)
                                   if np.isfinite(best[q]) else None}
            if self.norms is not None:
                row["quality"] = round(float(self.norms[q]), 4) if np.isfinite(self.norms[q]) else None
            rows.append(row)
        return rows

    def header(self) -> str | None:
        """The line saying which threshold decides "unknown" (stderr)."""
        if self.threshold is None:
            return None
        return f"unknown when the best {'identity' if self.args.by == 'identity' else 'image'} score is not " \
               f"{self.threshold.operator} {self.threshold.cosine:.4f}: {self.threshold.source}"


def _query_quality(query_path: str, rows: int) -> np.ndarray:
    """The query rows' embedding norms from <query stem>.quality.npy (written by `cdface embed`)."""
    path = Path(query_path).with_name(Path(query_path).name.removesuffix(".npy") + ".quality.npy")
    if not path.is_file():
        raise FormatError(path, None, "the queries' quality (written by `cdface embed` beside its .npy) for "
                          "--min-quality")
    from cdface.eval.feature_files import load_npy

    norms = np.asarray(load_npy(str(path), "query quality"), dtype=np.float32).reshape(-1)
    if norms.size != rows:
        raise FormatError(path, None, f"one quality value per query row ({rows}), got {norms.size}")
    return norms
