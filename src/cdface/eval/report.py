"""Write an evaluation's outputs: results.json (everything), results.md (a paper-style table), plots.

results.md has one row per model and one column per headline metric, in percent like the papers' tables:
pair sets -> accuracy +- its std over the folds; IJB -> TAR at FAR 1e-5 / 1e-4 and rank-1; MegaFace -> rank-1
identification at 1M distractors and TAR at FAR 1e-6. A result computed from non-finite embeddings is marked
"(invalid)". Plots use matplotlib's Agg backend (no display needed): a log-FAR ROC per pair set and IJB set
(one curve per model), genuine / impostor score histograms per pair set and model with the chosen threshold,
MegaFace's CMC and size curve.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cdface.eval.results import TargetResult
from cdface.files import atomic_write, to_json_safe

__all__ = ["write_outputs", "headline", "to_json_safe", "markdown_table", "distinct_labels"]


def _pct(value: Any) -> str:
    return f"{100.0 * float(value):.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _far_label(far: float) -> str:
    """1e-4 for powers of ten, else the shortest form (0.05 stays 0.05, not a rounded power)."""
    if far <= 0:
        return str(far)
    exponent = int(round(math.log10(far)))
    return f"1e{exponent}" if math.isclose(far, 10.0**exponent, rel_tol=1e-9) else f"{far:g}"


def distinct_labels(names: Sequence[str], base: Any = lambda p: Path(p).stem) -> dict[str, str]:
    """Short display names for paths: ``base(path)`` (the stem), with parent folders prepended while two differ.

    ``/a/lfw.bin`` and ``/b/lfw.bin`` become ``a/lfw`` and ``b/lfw`` instead of two ``lfw`` columns in
    results.md (or two plots written to the same file); equal names keep one label.
    """
    unique = list(dict.fromkeys(names))
    depth = dict.fromkeys(unique, 0)

    def label(name: str) -> str:
        parents = Path(name).parent.parts
        kept = parents[len(parents) - depth[name]:] if depth[name] else ()
        return "/".join((*kept, base(name) or name))

    while True:
        groups: dict[str, list[str]] = {}
        for name in unique:
            groups.setdefault(label(name), []).append(name)
        grow = [n for group in groups.values() if len(group) > 1 for n in group
                if depth[n] < len(Path(n).parent.parts)]
        if not grow:
            return {name: label(name) for name in unique}
        for name in grow:
            depth[name] += 1


def _file_safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def headline(result: TargetResult, label: str | None = None) -> dict[str, str]:
    """The columns one target contributes to results.md, formatted (percent, 2 decimals).

    ``label`` names a pair set in the column titles (default its file stem; see ``distinct_labels``).
    """
    cols = _headline(result, label or Path(result.target).stem)
    auc = (result.metrics.get("erc") or {}).get("auc") or {}
    for far, value in auc.items():  # error-versus-reject (--quality): area under FNMR(rejected fraction)
        cols[f"{label or Path(result.target).stem} ERC-AUC@{_far_label(float(far))}"] = _pct(value)
    if result.metrics.get("valid") is False:
        cols = {k: f"{v} (invalid)" for k, v in cols.items()}
    return cols


def _headline(result: TargetResult, label: str) -> dict[str, str]:
    m, name = result.metrics, result.target
    if result.kind == "pairs":
        acc, std = _pct(m.get("accuracy")), _pct(m.get("accuracy_std"))
        cols = {f"{label} acc": acc if std == "-" or acc == "-" else f"{acc} ± {std}"}
        for far, tar in (m.get("tar_at_far") or {}).items():
            cols[f"{label} TAR@{_far_label(float(far))}"] = _pct(tar)
        return cols
    if result.kind == "ijb":
        cols: dict[str, str] = {}
        tar = {float(k): v for k, v in ((m.get("verification") or {}).get("tar_at_far") or {}).items()}
        for far in (1e-5, 1e-4):
            if far in tar:
                cols[f"{name} TAR@{_far_label(far)}"] = _pct(tar[far])
        ident = m.get("identification") or {}
        if ident.get("rank1") is not None:
            cols[f"{name} rank-1"] = _pct(ident["rank1"])
        return cols
    if result.kind == "megaface":
        tar = {float(k): v for k, v in (m.get("tar_at_far") or {}).items()}
        far = 1e-6 if 1e-6 in tar else next(iter(tar), None)
        cols = {f"{name} rank-1": _pct(m.get("rank1"))}
        if far is not None:
            cols[f"{name} TAR@{_far_label(far)}"] = _pct(tar[far])
        return cols
    if result.kind == "rfw":  # the fairness papers' table: per-race accuracy, mean, std, SER
        cols = {f"rfw {race}": _pct(v) for race, v in (m.get("accuracy") or {}).items()}
        cols |= {"rfw mean": _pct(m.get("mean_accuracy")), "rfw std": _pct(m.get("std_accuracy"))}
        ser = m.get("ser")
        cols["rfw SER"] = f"{ser:.3f}" if isinstance(ser, (int, float)) and math.isfinite(ser) else "-"
        return cols
    if result.kind == "identification":  # TinyFace: AdaFace's rank-1 / rank-5 / rank-20 table
        return {f"{name} rank-{k}": _pct(v) for k, v in (m.get("cmc") or {}).items()}
    return {}


def markdown_table(rows: Sequence[tuple[str, Mapping[str, str]]]) -> str:
    """One row per model, one column per headline metric (columns in first-seen order)."""
    columns: list[str] = []
    for _, cols in rows:
        columns.extend(c for c in cols if c not in columns)
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for model, cols in rows:
        lines.append(f"| {model} | " + " | ".join(cols.get(c, "-") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(
    out_dir: Path,
    document: Mapping[str, Any],
    per_model: Sequence[tuple[str, Mapping[str, TargetResult]]],
    plots: bool = True,
) -> list[Path]:
    """Write results.json, results.md and the plots; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "results.md"]
    atomic_write(written[0], json.dumps(to_json_safe(document), indent=2, allow_nan=False) + "\n")
    target_labels = distinct_labels([t for _, results in per_model for t in results])
    model_labels = distinct_labels([m for m, _ in per_model], base=lambda p: Path(p).name)
    rows = []
    for model, results in per_model:
        cols: dict[str, str] = {}
        for target, result in results.items():
            cols.update(headline(result, target_labels[target]))
        rows.append((model_labels[model], cols))
    header = (
        f"# Evaluation results\n\ncdface {document.get('cdface_version')}, {document.get('created')}. "
        "Numbers in percent (pair sets: mean ± std over the folds); full metrics and provenance in "
        "results.json.\n\n"
    )
    atomic_write(written[1], header + markdown_table(rows))
    if plots:
        written.extend(_plots(out_dir, per_model, target_labels, model_labels))
    return written


def _plots(
    out_dir: Path,
    per_model: Sequence[tuple[str, Mapping[str, TargetResult]]],
    target_labels: Mapping[str, str],
    model_labels: Mapping[str, str],
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    by_target: dict[str, list[tuple[str, TargetResult]]] = {}
    for model, results in per_model:
        for target, result in results.items():
            by_target.setdefault(target, []).append((model_labels[model], result))
    written = []
    for target, items in by_target.items():
        kind = items[0][1].kind
        safe = _file_safe(target_labels[target])
        if any(r.curves.get("erc") for _, r in items):
            written.append(_plot_curve(plt, out_dir / f"erc_{safe}.png", items, "erc", "reject", "fnmr",
                                       "Fraction of pairs rejected (lowest quality)", "FNMR at FMR 1e-3",
                                       f"{target} error versus reject", logx=False))
        if kind == "rfw":
            written.append(_plot_bars(plt, out_dir / f"accuracy_{safe}.png", items))
        if kind == "pairs":
            written.append(
                _plot_curve(plt, out_dir / f"roc_{safe}.png", items, "roc", "fpr", "tpr", "False accept rate",
                            "True accept rate", f"{target} ROC", logx=True)
            )
            for model, result in items:
                written.append(_plot_histogram(plt, out_dir, safe, model, result, multi=len(items) > 1))
        elif kind == "ijb":
            written.append(
                _plot_curve(
                    plt,
                    out_dir / f"roc_{safe}.png",
                    items,
                    "roc",
                    "fpr",
                    "tpr",
                    "False accept rate",
                    "True accept rate",
                    f"{target} 1:1 ROC",
                    logx=True,
                )
            )
        elif kind == "identification":
            written.append(_plot_curve(plt, out_dir / f"cmc_{safe}.png", items, "cmc", "rank", "rate", "Rank",
                                       "Identification rate", f"{target} CMC", logx=False))
        elif kind == "megaface":
            written.append(
                _plot_curve(
                    plt,
                    out_dir / f"cmc_{safe}.png",
                    items,
                    "cmc",
                    "rank",
                    "rate",
                    "Rank",
                    "Identification rate",
                    f"{target} CMC",
                    logx=True,
                )
            )
            written.append(
                _plot_curve(
                    plt,
                    out_dir / f"distractors_{safe}.png",
                    items,
                    "distractors",
                    "size",
                    "rank1",
                    "Number of distractors",
                    "Rank-1 identification rate",
                    f"{target} rank-1 vs distractors",
                    logx=True,
                )
            )
    return [p for p in written if p is not None]


def _plot_bars(plt: Any, path: Path, items: Sequence[tuple[str, TargetResult]]) -> Path | None:
    """Grouped bars: accuracy per race (RFW), one group per race and one bar per model."""
    curves = [(name, r.curves.get("accuracy")) for name, r in items if r.curves.get("accuracy")]
    if not curves:
        return None
    groups = list(curves[0][1]["race"])
    width = 0.8 / len(curves)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for k, (name, curve) in enumerate(curves):
        acc = dict(zip(curve["race"], curve["accuracy"]))
        ax.bar([i + k * width for i in range(len(groups))], [100.0 * acc.get(g, float("nan")) for g in groups],
               width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
    ax.set_ylabel("Accuracy (%)")
    ax.set_title("RFW accuracy per race")
    low = min(min(c["accuracy"]) for _, c in curves) * 100.0
    ax.set_ylim(max(0.0, low - 5.0), 100.0)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_curve(
    plt: Any,
    path: Path,
    items: Sequence[tuple[str, TargetResult]],
    key: str,
    xk: str,
    yk: str,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool,
) -> Path | None:
    curves = [(name, r.curves.get(key)) for name, r in items if r.curves.get(key)]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for name, curve in curves:
        xs, ys = list(curve[xk]), list(curve[yk])
        if logx:
            keep = [i for i, x in enumerate(xs) if x > 0]
            xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        ax.plot(xs, ys, label=name, linewidth=1.5)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_histogram(plt: Any, out_dir: Path, safe: str, model: str, result: TargetResult, multi: bool
                    ) -> Path | None:
    """Genuine and impostor cosine similarities of one model on one pair set, with the chosen threshold."""
    scores = result.curves.get("scores")
    if not scores:
        return None
    model_tag = "_" + _file_safe(model.removesuffix(Path(model).suffix)) if multi else ""
    path = out_dir / f"scores_{safe}{model_tag}.png"
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    bins = [i / 50.0 - 1.0 for i in range(101)]  # cosine in [-1, 1], 0.02 wide
    ax.hist(scores["impostor"], bins=bins, alpha=0.6, label=f"impostor ({len(scores['impostor'])})", color="C3")
    ax.hist(scores["genuine"], bins=bins, alpha=0.6, label=f"genuine ({len(scores['genuine'])})", color="C0")
    ax.axvline(scores["threshold"], color="k", linestyle="--", linewidth=1.2,
               label=f"threshold cos {scores['threshold']:.3f} (d² {scores['threshold_distance']:.2f})")
    ax.set_xlabel("Cosine similarity")
    ax.set_ylabel("Pairs")
    ax.set_title(f"{result.target}: {model}" if multi else result.target)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
