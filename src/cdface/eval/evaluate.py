"""End-to-end evaluation: model(s) x targets -> metrics, provenance, results.json / results.md / plots.

A target is a pair-set name (`lfw`, `cfp_fp`, `agedb_30`, `calfw`, `cplfw`: `<data_root>/<name>.bin`), the
path of any `.bin`, `ijbb` / `ijbc` (`<data_root>/IJBB|IJBC`, the IJB_release layout), `megaface`
(`<data_root>/megaface`), `tinyface` or `rfw` (see docs/evaluation.md). Each target is run by its module in
`cdface.eval.targets`; this module picks them, loads the models and writes the report (`cdface.eval.report`).
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cdface
from cdface.errors import ConfigError
from cdface.eval.results import TargetResult
from cdface.eval.targets.pairs import evaluate_pair_target, resolve_pair_target
from cdface.files import sha256_file
from cdface.inference.embedder import FaceEmbedder
from cdface.inference.loading import EmbeddingModel, load_embedding_model

__all__ = ["evaluate_model", "evaluate_models", "is_folder_target", "parse_model_spec", "parse_targets",
           "IJB_TARGETS", "MEGAFACE_TARGETS"]

IJB_TARGETS = {"ijbb": "IJBB", "ijbc": "IJBC"}
MEGAFACE_TARGETS = ("megaface",)
_FALLBACK_KEYS = {"mean": "input_mean", "std": "input_std", "bgr": "bgr"}
_SPEC_KEYS = ("mean", "std", "color")


def parse_model_spec(spec: str | Path) -> tuple[str, dict[str, Any]]:
    """`cdface eval --model PATH[:mean=C1,C2,C3][:std=C1,C2,C3][:color=RGB|BGR]` -> (PATH, {"mean", "std",
    "bgr"}): preprocessing for this one model, over its card. A string naming an existing file or folder is
    a path as it is (a path may contain ':'). ConfigError for a malformed value or an unknown key."""
    from cdface.models.input_contract import parse_triple

    text = str(spec)
    parts = text.split(":")
    cut = len(parts)
    while cut > 1 and parts[cut - 1].split("=", 1)[0].strip().lower() in _SPEC_KEYS and "=" in parts[cut - 1]:
        cut -= 1
    if cut == len(parts) or Path(text).exists():
        return text, {}
    own: dict[str, Any] = {}
    for item in parts[cut:]:
        key, value = (v.strip() for v in item.split("=", 1))
        key = key.lower()
        if key == "color":
            if value.upper() not in ("RGB", "BGR"):
                raise ConfigError(f"--model {text}: color must be RGB or BGR, got {value!r}")
            own["bgr"] = value.upper() == "BGR"
        else:
            own[key] = parse_triple(value, f"--model {text}: {key}")
    return ":".join(parts[:cut]), own


def _label_per_model_values(model: EmbeddingModel, own: dict[str, Any]) -> None:
    """Values given with `--model PATH:key=value` are recorded as such (the loader calls them command line)."""
    values_from = model.preprocessing.get("values_from")
    if not own or not values_from:
        return
    not_applied = model.preprocessing.get("not_applied") or {}
    for key in ("mean", "std", "color"):
        if (key if key != "color" else "bgr") in own and key in values_from:
            values_from[key] = "command line, for this model (--model PATH:key=value)"
            if key in not_applied:  # the global flag lost to this model's own option, not to "command line"
                not_applied[key] = not_applied[key].replace("comes from command line", f"comes from {values_from[key]}")


def is_folder_target(target: str, data_root: str | Path | None) -> bool:
    """Whether `target` is scored as a pair-set folder in LFW's layout (`targets.folder_pairs`): a folder that no
    benchmark name and no ``<data_root>/<target>.bin`` claims."""
    key = target.lower()
    if key in IJB_TARGETS or key in MEGAFACE_TARGETS or key in ("tinyface", "rfw"):
        return False
    return Path(target).is_dir() and not (data_root is not None and (Path(data_root) / f"{target}.bin").is_file())


def parse_targets(targets: str | Sequence[str]) -> list[str]:
    """'lfw,cfp_fp , ijbc' or a list -> ['lfw', 'cfp_fp', 'ijbc'] (order kept, duplicates dropped)."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    out: list[str] = []
    for item in (str(t).strip() for t in items):
        if item and item not in out:
            out.append(item)
    if not out:
        raise ConfigError("no evaluation targets given")
    return out


def evaluate_model(
    model: str | Path | nn.Module | EmbeddingModel | FaceEmbedder,
    targets: str | Sequence[str],
    data_root: str | Path | None = None,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    flip: bool = True,
    num_workers: int = 0,
    progress: bool = False,
    ijb_protocols: Sequence[str] = ("11", "1n"),
    megaface_sizes: Sequence[int] = (),
    far_levels: Sequence[float] | None = None,
    strict: bool = False,
    quality: str | None = None,
    detect: str | None = None,
    face_filter: dict[str, Any] | None = None,
    **load_kwargs: Any,
) -> dict[str, TargetResult]:
    """Evaluate one model on each target; returns {target: TargetResult} (`.metrics` is the metric dict).

    `far_levels`: TAR@FAR levels for every protocol that prints them (pair sets: `tar_at_far` besides
    insightface's `val` at 1e-3; IJB 1:1; MegaFace); None keeps each protocol's default. `strict`: images
    not at the model's input size are an error instead of a warning. `load_kwargs` go to
    `load_embedding_model` (arch, input_mean, input_std, bgr, embedding_size). Every result's metrics hold
    `valid` and `nonfinite_embeddings`. A target that is a folder is a pair set in LFW's layout
    (`targets.folder_pairs`); `detect` (a detector spec) and `face_filter` (min_score, min_face_size) make
    its images photos whose largest face is found and aligned.
    """
    embedder = (
        model
        if isinstance(model, FaceEmbedder)
        else FaceEmbedder(model, device=device, precision=precision, batch_size=batch_size, flip=flip, **load_kwargs)
    )
    common = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    results: dict[str, TargetResult] = {}
    for target in parse_targets(targets):
        key = target.lower()
        if key in IJB_TARGETS:
            from cdface.eval.targets.ijb import evaluate_ijb_target

            root = _require_root(data_root, target)
            results[target] = evaluate_ijb_target(
                embedder, root / IJB_TARGETS[key], IJB_TARGETS[key], protocols=ijb_protocols, far_levels=far_levels,
                quality=quality, **common,
            )
        elif key in MEGAFACE_TARGETS:
            from cdface.eval.megaface_layout import find_megaface_root
            from cdface.eval.targets.megaface import evaluate_megaface_target

            root = find_megaface_root(_require_root(data_root, target))
            results[target] = evaluate_megaface_target(
                embedder, root, sizes=megaface_sizes, far_levels=far_levels, strict=strict, **common
            )
        elif key == "tinyface":
            from cdface.eval.targets.tinyface import evaluate_tinyface_target

            results[target] = evaluate_tinyface_target(embedder, _require_root(data_root, target), **common)
        elif key == "rfw":
            from cdface.eval.targets.rfw import evaluate_rfw_target

            results[target] = evaluate_rfw_target(embedder, _require_root(data_root, target), **common)
        elif is_folder_target(target, data_root):
            from cdface.eval.targets.folder_pairs import evaluate_folder_pairs

            if quality is not None:
                raise ConfigError(f"--quality applies to .bin pair sets and IJB, not to the folder {target}")
            results[target] = evaluate_folder_pairs(
                embedder, target, Path(target), detect=detect, face_filter=face_filter, far_levels=far_levels or (),
                strict=strict, **common,
            )
        else:
            path = resolve_pair_target(target, data_root)
            if path is None:
                raise ConfigError(
                    f"unknown target {target!r}: use a pair-set name with --data-root (lfw, cfp_fp, "
                    "agedb_30, calfw, cplfw, or any <name>.bin there), a .bin path, ijbb, ijbc or megaface"
                )
            results[target] = evaluate_pair_target(
                embedder, target, path, far_levels=far_levels or (), strict=strict, quality=quality, **common
            )
    return results


def _require_root(data_root: str | Path | None, target: str) -> Path:
    if data_root is None:
        raise ConfigError(f"target {target!r} needs --data-root")
    return Path(data_root)


def evaluate_models(
    models: Sequence[str | Path],
    targets: str | Sequence[str],
    data_root: str | Path | None,
    out_dir: str | Path | None,
    *,
    plots: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate several model files and write results.json, results.md and plots to `out_dir` (if given).

    Returns the results.json document: {"cdface_version", "created", "environment", "protocol_options",
    "models": [{"model", "sha256", "model_info", "results": {target: metrics}, "provenance": {...}}]}.
    """
    from cdface.eval import report

    load_keys = ("arch", "input_mean", "input_std", "bgr", "embedding_size")
    load_kwargs = {k: options.pop(k) for k in load_keys if options.get(k) is not None}
    # preprocessing flags fill in only what a model does not give itself (each model keeps its own card)
    fallback = {key: load_kwargs.pop(name, None) for key, name in _FALLBACK_KEYS.items()}
    entries = []
    per_model: list[tuple[str, dict[str, TargetResult]]] = []
    for spec in models:
        model_path, own = parse_model_spec(spec)
        loaded = load_embedding_model(
            model_path,
            device=options.get("device"),
            precision=options.get("precision", "fp32"),
            fallback_input=fallback,
            input_mean=own.get("mean"),
            input_std=own.get("std"),
            bgr=own.get("bgr"),
            **load_kwargs,
        )
        _label_per_model_values(loaded, own)
        results = evaluate_model(loaded, targets, data_root, **options)
        source = loaded.source_path or Path(model_path)
        entry = {
            "model": str(model_path),
            "sha256": sha256_file(source) if Path(source).is_file() else None,
            "model_info": loaded.describe(),
            "results": {t: r.metrics for t, r in results.items()},
            "provenance": {t: r.provenance for t, r in results.items()},
        }
        if own:
            entry["model_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in own.items()}
        entries.append(entry)
        per_model.append((str(model_path), results))
    document = {
        "cdface_version": cdface.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": str(options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")),
        },
        "protocol_options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items() if k != "progress"}
        | {
            "targets": parse_targets(targets),
            "data_root": str(data_root) if data_root else None,
            **load_kwargs,
            **{name: fallback[key] for key, name in _FALLBACK_KEYS.items() if fallback[key] is not None},
        },
        "models": entries,
    }
    if out_dir is not None:
        report.write_outputs(Path(out_dir), document, per_model, plots=plots)
    return document
