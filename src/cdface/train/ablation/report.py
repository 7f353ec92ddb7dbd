"""A study's statistics (mean ± std over seeds, paired differences with a 95 % Student-t interval) and its
Markdown tables."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cdface.train.ablation.presets import BASELINE, VARIANTS

# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (standard table values).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile_975(dof: int) -> float:
    """t_{0.975, dof} (the normal 1.960 above 30 degrees of freedom)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    return _T975[dof - 1] if dof <= len(_T975) else 1.960


METRICS = (
    "accuracy", "tar_at_far_1e-2", "tar_at_far_1e-1", "hard_pair_accuracy", "train_accuracy",
    "easy_intra_class_variance", "hardest_own_cosine", "hardest_nearest_wrong_cosine", "cd_closeness", "cd_diversity",
)


def _run_key(row: dict[str, Any]) -> tuple[int, int]:
    """(stage-1 seed, stage-2 seed): a stage-2 run pairs with the baseline's run of the same stage 1 and seed."""
    return int(row.get("stage1_seed", 0)), int(row["seed"])


def summarise(rows: list[dict[str, Any]], baseline: str = BASELINE) -> dict[str, dict[str, Any]]:
    """Per variant: mean and std (ddof 1; 0 for one run) of every metric over its runs, and the paired
    difference of accuracy and TAR@FAR=1e-2 to ``baseline`` over the (stage-1 seed, seed) runs both have,
    with a 95 % Student-t interval. ``seeds`` lists the runs as [stage-1 seed, seed]."""
    by_variant: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], {})[_run_key(row)] = row
    base = by_variant.get(baseline, {})
    out: dict[str, dict[str, Any]] = {}
    for variant, seeds in by_variant.items():
        entry: dict[str, Any] = {"seeds": [list(k) for k in sorted(seeds)]}
        for metric in METRICS:
            values = np.array([seeds[s].get(metric, np.nan) for s in sorted(seeds)], dtype=np.float64)
            entry[metric] = {"mean": _nanmean(values), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
        if variant != baseline and base:
            for metric in ("accuracy", "tar_at_far_1e-2"):
                common = sorted(set(seeds) & set(base))
                diffs = np.array([seeds[s][metric] - base[s][metric] for s in common])
                entry[f"{metric}_vs_{baseline}"] = paired_difference(diffs)
        out[variant] = entry
    return out


def summarise_by_stage1(rows: list[dict[str, Any]], baseline: str = BASELINE) -> dict[str, dict[str, Any]]:
    """``summarise`` of each stage 1's runs alone, keyed by the stage-1 seed (as text, for JSON)."""
    stage1_seeds = sorted({_run_key(r)[0] for r in rows})
    return {str(k): summarise([r for r in rows if _run_key(r)[0] == k], baseline) for k in stage1_seeds}


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each metric over ``rows`` (the stage-1 runs); the row itself when there is one."""
    if len(rows) == 1:
        return {k: v for k, v in rows[0].items() if k != "scores"}
    return {m: _nanmean(np.array([r.get(m, np.nan) for r in rows], dtype=np.float64)) for m in METRICS}


def paired_difference(diffs: np.ndarray) -> dict[str, float]:
    """Mean of paired differences with a two-sided 95 % Student-t interval (NaN half-width for one pair)."""
    n = len(diffs)
    mean = float(np.mean(diffs)) if n else float("nan")
    if n < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n}
    half = t_quantile_975(n - 1) * float(np.std(diffs, ddof=1)) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _nanmean(values: np.ndarray) -> float:
    return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")


def _scale(scale: float) -> str:
    return "" if scale == 1.0 else f" at --scale {scale:g}, below its documented regime"


def _pct(stat: dict[str, float]) -> str:
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _num(stat: dict[str, float]) -> str:
    return "–" if not math.isfinite(stat["mean"]) else f"{stat['mean']:.3f}"


def _diff(d: dict[str, float] | None) -> str:
    if d is None:
        return "–"
    if not math.isfinite(d["low"]):
        return f"{100 * d['mean']:+.2f}"
    return f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"


def format_ablation(result: dict[str, Any]) -> str:
    """The two Markdown tables (accuracy; mechanism metrics) of an ``run_ablation`` result."""
    summary = result["summary"]
    baseline = result.get("baseline", BASELINE)
    stage1_runs = result.get("stage1_runs") or [result["stage1"]]
    runs = max((len(v["seeds"]) for v in summary.values()), default=0)
    several = len(stage1_runs) > 1
    if several:
        title = f"{len(stage1_runs)} stage-1 seeds, {runs} runs"
        stage1_text = "Stage 1 (one per stage-1 seed, shared by its stage-2 runs): " + "; ".join(
            f"seed {r.get('stage1_seed', 0)}: pair accuracy {100 * r['accuracy']:.2f} %, train-set accuracy "
            f"{100 * r['train_accuracy']:.2f} %" for r in stage1_runs) + ".\n"
        same = "same stage 1 and seed"
    else:
        title = f"{runs} seed(s)"
        stage1_text = (f"Stage 1 (shared): pair accuracy {100 * result['stage1']['accuracy']:.2f} %, "
                       f"train-set accuracy {100 * result['stage1']['train_accuracy']:.2f} %.\n")
        same = "same seed"
    lines = [
        f"# cdface ablation ({result['preset']} preset{_scale(result.get('scale', 1.0))}, {title})\n",
        stage1_text,
        "Accuracy: insightface's 10-fold protocol on the synthetic pairs of disjoint identities; mean ± std over "
        f"runs. Δ: paired difference to {VARIANTS[baseline][0]} ({same}), mean [95 % t-interval], in points.\n",
        "| variant | accuracy % | Δ accuracy | TAR@FAR=1e-2 % | Δ TAR@1e-2 | TAR@FAR=1e-1 % | hard-pair acc % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, s in summary.items():
        lines.append(
            f"| {VARIANTS[variant][0]} | {_pct(s['accuracy'])} | {_diff(s.get(f'accuracy_vs_{baseline}'))} | "
            f"{_pct(s['tar_at_far_1e-2'])} | {_diff(s.get(f'tar_at_far_1e-2_vs_{baseline}'))} | "
            f"{_pct(s['tar_at_far_1e-1'])} | {_pct(s['hard_pair_accuracy'])} |"
        )
    if several:
        lines += ["", "The same Δ within each stage 1 (an interval over stage-2 seeds holds for its stage 1 only):\n",
                  "| variant | stage-1 seed | Δ accuracy | Δ TAR@1e-2 |", "|---|---:|---:|---:|"]
        for variant in summary:
            for stage1_seed, part in result["by_stage1"].items():
                if variant in part and variant != baseline:
                    lines.append(f"| {VARIANTS[variant][0]} | {stage1_seed} | "
                                 f"{_diff(part[variant].get(f'accuracy_vs_{baseline}'))} | "
                                 f"{_diff(part[variant].get(f'tar_at_far_1e-2_vs_{baseline}'))} |")
    lines += [
        "",
        "Mechanism metrics on the training set (means over runs): easy intra-class variance = 1 - |mean unit "
        "embedding|^2 over each class's easy samples; hardest 5 % by stage-1 score: mean cosine to their own centre "
        "and to the nearest wrong centre; the CD terms as logged over training (unweighted).\n",
        "| variant | train acc % | easy intra-class var | hardest: own cos | hardest: nearest wrong cos | "
        "closeness | diversity |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    st = result["stage1"]
    lines.append(
        f"| stage 1 (start{', mean' if several else ''}) | {100 * st['train_accuracy']:.2f} | "
        f"{st['easy_intra_class_variance']:.3f} | "
        f"{st['hardest_own_cosine']:.3f} | {st['hardest_nearest_wrong_cosine']:.3f} | – | – |"
    )
    for variant, s in summary.items():
        lines.append(
            f"| {VARIANTS[variant][0]} | {100 * s['train_accuracy']['mean']:.2f} | "
            f"{_num(s['easy_intra_class_variance'])} | {_num(s['hardest_own_cosine'])} | "
            f"{_num(s['hardest_nearest_wrong_cosine'])} | {_num(s['cd_closeness'])} | {_num(s['cd_diversity'])} |"
        )
    return "\n".join(lines) + "\n"
