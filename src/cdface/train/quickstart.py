"""`cdface quickstart`: the paper's whole pipeline on the built-in synthetic set, on a laptop CPU.

1. build the synthetic identity set (RecordIO + a `.bin` of disjoint identities);
2. stage 1: plain ArcFace, keeping every sample's difficulty score;
3. stage 2: closeness & diversity from the stage-1 checkpoint and scores;
   and, for comparison, plain ArcFace continued from the same checkpoint for the same number of steps;
4. evaluate both on the synthetic pairs (insightface's 10-fold protocol) and write a report.
Every number in the report comes from this run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdface.config import TrainConfig, config_from_dict
from cdface.eval.roc import roc_curve, tar_at_far
from cdface.eval.verification import PairResult, evaluate_pairs
from cdface.train.data_setup import ensure_synthetic_set
from cdface.train.distributed import DistInfo
from cdface.train.trainer import fit
from cdface.train.verification import embed_with_flip, load_pair_images

log = logging.getLogger("cdface.quickstart")


def quickstart_configs(out_dir: Path, scale: float = 1.0, seed: int = 0) -> dict[str, TrainConfig]:
    """The three runs of the quickstart. `scale` shrinks the data and the epochs (tests use ~0.1)."""
    identities = max(20, int(300 * scale))
    base: dict[str, Any] = {
        "output_dir": str(out_dir),
        "seed": seed,
        "batch_size": 64,
        "device": "cpu",
        "log_every": 10,
        "checkpoint_every": 100_000,
        "tensorboard": False,
        "deterministic": True,
        "data": {
            "kind": "synthetic",
            "path": str(out_dir / "data"),
            "num_workers": 2,
            "synthetic_identities": identities,
            "synthetic_images_per_identity": 12,
            "synthetic_eval_identities": max(20, int(100 * scale)),
            "synthetic_pairs": 600 if scale >= 0.5 else 200,
            "synthetic_seed": seed,
        },
        "model": {"arch": "iresnet_tiny", "embedding_size": 128},
        "head": {"name": "arcface", "params": {"s": 64.0, "m": 0.5}},
        "optim": {"lr": 0.1, "milestones": [], "warmup_epochs": 0.0},
        "cd": {"num_classes": 8, "num_easy": 7, "num_hard": 1, "num_negatives": 50, "interval": 2},
    }
    stage1_epochs = max(1.0, round(6 * scale))
    stage2_epochs = max(1.0, round(4 * scale))
    stage1 = _merge(base, {"name": "stage1_arcface", "method": "arcface", "epochs": stage1_epochs})
    follow_up = {"epochs": stage2_epochs, "optim": {"lr": 0.01, "milestones": [stage2_epochs * 0.75]}}
    cd = _merge(base, follow_up | {"name": "stage2_cd", "method": "cd"})
    plain = _merge(base, follow_up | {"name": "stage2_arcface", "method": "arcface"})
    return {"stage1": config_from_dict(stage1), "cd": config_from_dict(cd), "arcface": config_from_dict(plain)}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_quickstart(out_dir: str | Path = "runs/quickstart", scale: float = 1.0, seed: int = 0) -> dict[str, Any]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = quickstart_configs(out_dir, scale=scale, seed=seed)
    paths = ensure_synthetic_set(configs["stage1"], DistInfo())

    stage1 = fit(configs["stage1"])
    stage1_ckpt = str(stage1.checkpoint)
    configs["cd"].init_from = stage1_ckpt
    configs["arcface"].init_from = stage1_ckpt
    runs = {"stage 2: closeness & diversity": fit(configs["cd"]), "stage 2: ArcFace continued": fit(configs["arcface"])}

    pairs = load_pair_images(str(paths["bin"]))
    rows, curves = [], {}
    for label, run in runs.items():
        backbone = _load_backbone(run.run_dir)
        emb, emb_flip = embed_with_flip(backbone, pairs.images, torch.device("cpu"))
        result: PairResult = evaluate_pairs(emb + emb_flip, pairs.issame)
        fused = emb + emb_flip
        fused /= np.linalg.norm(fused, axis=1, keepdims=True)
        cosine = np.sum(fused[0::2] * fused[1::2], axis=1)
        fpr, tpr, _ = roc_curve(pairs.issame.astype(np.int64), cosine)
        tar = tar_at_far(fpr, tpr, (0.01, 0.1))  # the evaluator's (insightface's) TAR@FAR rule
        rows.append({"model": label, "run": str(run.run_dir), "steps": run.step, "accuracy": result.accuracy,
                     "accuracy_std": result.accuracy_std, "tar_at_far_1e-2": tar[0.01], "tar_at_far_1e-1": tar[0.1]})
        curves[label] = (cosine, pairs.issame)

    report = write_report(out_dir, rows, curves, stage1.run_dir, [r.run_dir for r in runs.values()])
    return {"rows": rows, "report": str(report)}


def _load_backbone(run_dir: Path) -> torch.nn.Module:
    """The run's exported backbone.pt + model.json, through the evaluator's safe loader."""
    from cdface.inference.loading import load_embedding_model

    return load_embedding_model(run_dir, device="cpu").module.eval()


def write_report(out_dir: Path, rows: list[dict[str, Any]], curves: dict, *run_dirs: Any) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (scores, issame) in curves.items():
        fpr, tpr, _ = roc_curve(np.asarray(issame, dtype=np.int64), scores, drop_intermediate=False)
        ax.plot(fpr, tpr, label=label)
    ax.set_xscale("symlog", linthresh=1e-2)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title("ROC on the synthetic pairs")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=120)
    plt.close(fig)

    stage1_dir, stage2_dirs = run_dirs[0], run_dirs[1]
    fig, ax = plt.subplots(figsize=(6, 4))
    cd_ax = None  # the CD loss is two orders of magnitude below the CE: its own axis
    for run_dir in [stage1_dir, *stage2_dirs]:
        name = Path(run_dir).name
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in records if "ce_loss" in r]
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["ce_loss"] for r in records], label=f"{name} CE")
        if any(r["cd_loss"] for r in records):
            cd_ax = cd_ax or ax.twinx()
            cd_ax.plot(steps, [r["cd_loss"] for r in records], "k--", label=f"{name} CD (right axis)")
            cd_ax.set_ylabel("CD loss")
    ax.set_xlabel("step (each run counts from its own start)")
    ax.set_ylabel("CE loss")
    handles, labels = ax.get_legend_handles_labels()
    if cd_ax is not None:
        more_handles, more_labels = cd_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "losses.png", dpi=120)
    plt.close(fig)

    table = format_table(rows)
    text = (
        "# cdface quickstart report\n\n"
        "Synthetic face identities (cdface.data.synthetic), `iresnet_tiny`, CPU. Stage 1 trained plain ArcFace; "
        "both stage-2 runs start from its checkpoint and scores and train the same number of steps.\n"
        "Accuracy: insightface's 10-fold protocol on the synthetic `.bin` (flip-fused embeddings). "
        "TAR@FAR: cosine scores of all pairs, TPR at the ROC point with the nearest FPR (insightface's rule).\n\n"
        f"{table}\n\n![ROC](roc.png)\n\n![losses](losses.png)\n"
    )
    path = out_dir / "report.md"
    path.write_text(text)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2, sort_keys=True))
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | steps | accuracy | TAR@FAR=1e-2 | TAR@FAR=1e-1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['steps']} | {100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} | "
            f"{100 * r['tar_at_far_1e-2']:.2f} | {100 * r['tar_at_far_1e-1']:.2f} |"
        )
    return "\n".join(lines)
