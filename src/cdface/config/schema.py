"""Typed training configs: the dataclasses (every key and its default), the allowed values and ranges of
keys, and how a value is checked against its type and applied to a config (`apply_values`).

The rest of `cdface.config`: loading (YAML files, their `base:` chains, `key=value` overrides), merging,
validation across keys, the shipped configs; `cdface.config` re-exports every public name.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from cdface.config.sources import Sources, located
from cdface.errors import ConfigError


@dataclass
class DataConfig:
    kind: str = "recordio"  # recordio | folder | list | synthetic
    path: str = ""  # .rec / its folder, image folder, list file; for `synthetic`, where the set is built
    num_workers: int = 2
    prefetch_factor: int = 2
    flip_p: float = 0.5
    random_resized_crop: list[float] = field(default_factory=list)  # [min_scale, max_scale]; empty = off
    color_jitter: float = 0.0
    low_res_prob: float = 0.0
    max_bad_fraction: float = 0.01
    val_targets: list[str] = field(default_factory=list)  # .bin files for periodic verification
    # Derived data (a RecordIO set's label table) is cached here, never beside the data;
    # "" = $XDG_CACHE_HOME/cdface or ~/.cache/cdface. label_cache: false reads the labels every start.
    cache_dir: str = ""
    label_cache: bool = True
    # Images whose header declares more pixels are refused before decoding (corrupt-image accounting);
    # 0 = $CDFACE_MAX_IMAGE_PIXELS or cdface.data.decode.DEFAULT_MAX_IMAGE_PIXELS (64M).
    max_image_pixels: int = 0
    # Sizes of the built-in synthetic set (kind: synthetic).
    synthetic_identities: int = 300
    synthetic_images_per_identity: int = 12
    synthetic_eval_identities: int = 100
    synthetic_pairs: int = 600
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    arch: str = "iresnet50"
    embedding_size: int = 512
    dropout: float = 0.0  # passed to the architecture as given (0 included); see train/model_options.py
    fp16: bool = False  # refused: use precision: fp16, which brings the gradient scaler
    gradient_checkpointing: bool = False
    channels_last: bool = False


@dataclass
class HeadConfig:
    name: str = "arcface"  # a margin of cdface.heads.MARGINS: arcface | cosface | combined | curricularface | ...
    params: dict[str, float] = field(default_factory=lambda: {"s": 64.0, "m": 0.5})
    sharded: bool = False  # model-parallel head (cdface.parallel); needs torchrun
    sample_rate: float = 1.0  # Partial FC; 1.0 = every class centre each step


@dataclass
class ScoreConfig:
    momentum: float = 0.9  # score = momentum * score + (1 - momentum) * cos
    sync: str = "gather"  # gather: every rank applies every rank's updates each step; average: the reference's
    average_every: int = 100  # with sync: average, all-reduce the scores every N steps


@dataclass
class CDConfig:
    interval: int = 5
    num_classes: int = 64  # K, across all ranks
    num_easy: int = 7  # NE
    num_hard: int = 1  # NH
    num_negatives: int = 500  # NP
    percentile: float = 0.2  # p: threshold t is the p-quantile of the scores
    widen_step: float = 0.05
    threshold_samples: int = 100_000
    wc: float = 0.5
    wd: float = 1.0
    s: float | None = None  # diversity scale; None = the head's scale (head.params.s), as the paper uses one s
    per_class_centres: bool = False  # push each hard sample from its own class's NP centres only


@dataclass
class HealthConfig:
    """When the trainer calls a run collapsed (cdface.train.health): after this many epochs, a log window whose
    mean CE is >= ce_fraction x the all-cosines-zero plateau while its mean target cosine is < max_target_cosine."""

    collapse_after_epochs: float = 1.0
    collapse_ce_fraction: float = 0.9
    collapse_max_target_cosine: float = 0.1


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    no_decay_on_bn: bool = True
    scheduler: str = "step"  # step | cosine | poly | constant
    milestones: list[float] = field(default_factory=lambda: [10.0, 18.0, 22.0])  # in epochs
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    poly_power: float = 2.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off


@dataclass
class FinetuneConfig:
    """Starting from a pretrained backbone (docs/training.md, "Fine-tune a pretrained model"). The freezing and lr
    options act on any run; backbone_only and head_init act when the run starts from init_from."""

    backbone_only: bool = False  # from an init_from checkpoint take the backbone only: new head, fresh scores
    head_init: str = "random"  # random | class_means: a new head's centres = mean embeddings of each class
    head_init_images: int = 16  # images per class for class_means (the first ones of each class); 0 = all
    backbone_lr_scale: float = 1.0  # the backbone's lr = this x the head's (optim.lr and its schedule)
    head_warmup_steps: int = 0  # the backbone's lr is 0 for the first steps: the new head alone learns
    freeze_bn: bool = False  # the backbone's BatchNorm layers keep their running statistics (eval mode)
    freeze: list[str] = field(default_factory=list)  # backbone parameter-name prefixes not trained (e.g. layer1)


@dataclass
class TrainConfig:
    name: str = "run"
    output_dir: str = "runs"
    method: str = "arcface"  # arcface (stage 1 / plain margin losses) | cd (stage 2)
    init_from: str = ""  # stage-1 checkpoint whose backbone, head and scores start this run
    resume: str = ""  # "" | auto | path of a checkpoint
    overwrite: bool = False  # start a new run in a run folder that already holds one (its files are replaced)
    seed: int = 0
    batch_size: int = 512  # global, whatever the world size
    grad_accum: int = 1  # micro-batches per optimizer step: the effective batch is grad_accum * batch_size
    epochs: float = 24.0
    max_steps: int = 0  # stop after this many steps in total (0 = run all epochs)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16
    compile: bool = False
    deterministic: bool = False
    log_every: int = 50
    checkpoint_every: int = 2000  # steps; also at every epoch end
    keep_checkpoints: int = 3
    verify_every: int = 0  # steps; 0 = only at epoch ends when val_targets are set
    verify_at_epoch_end: bool = True  # the val_targets at every epoch end too (the quickstart turns it off)
    max_bad_steps: int = 5  # consecutive NaN/inf losses before the run stops
    dist_timeout_s: float = 1800.0  # a collective that waits longer (a rank died) fails the run
    tensorboard: bool = True
    num_threads: int = 0  # torch intra-op threads; 0 = auto: threads + data.num_workers <= this process's cores
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    cd: CDConfig = field(default_factory=CDConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


_CHOICES: dict[str, tuple[str, ...]] = {
    "method": ("arcface", "cd"),
    "precision": ("fp32", "bf16", "fp16"),
    "device": ("auto", "cpu", "cuda"),
    "data.kind": ("recordio", "folder", "list", "synthetic"),
    "scores.sync": ("gather", "average"),
    "optim.optimizer": ("sgd", "adamw"),
    "optim.scheduler": ("step", "cosine", "poly", "constant"),
    "finetune.head_init": ("random", "class_means"),
}


def _choices(key: str) -> tuple[str, ...] | None:
    """Allowed values of a string key; margin names come from the head registry, so a new head is one edit."""
    if key == "head.name":
        from cdface.heads import MARGINS

        return tuple(MARGINS)
    return _CHOICES.get(key)


# Allowed ranges of numeric keys: (low, high, low inclusive, high inclusive); None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "epochs": (0.0, None, False, True),
    "max_steps": (0, None, True, True),
    "grad_accum": (1, None, True, True),
    "log_every": (1, None, True, True),
    "checkpoint_every": (1, None, True, True),
    "keep_checkpoints": (0, None, True, True),
    "verify_every": (0, None, True, True),
    "max_bad_steps": (1, None, True, True),
    "dist_timeout_s": (0.0, None, False, True),
    "data.num_workers": (0, None, True, True),
    "data.prefetch_factor": (1, None, True, True),
    "data.flip_p": (0.0, 1.0, True, True),
    "data.color_jitter": (0.0, None, True, True),
    "data.low_res_prob": (0.0, 1.0, True, True),
    "data.max_bad_fraction": (0.0, 1.0, True, True),
    "data.synthetic_identities": (2, None, True, True),
    "data.synthetic_images_per_identity": (2, None, True, True),
    "data.synthetic_eval_identities": (2, None, True, True),
    "data.synthetic_pairs": (1, None, True, True),
    "model.embedding_size": (1, None, True, True),
    "model.dropout": (0.0, 1.0, True, False),
    "scores.momentum": (0.0, 1.0, True, False),
    "scores.average_every": (1, None, True, True),
    "cd.num_classes": (1, None, True, True),
    "cd.num_easy": (1, None, True, True),
    "cd.num_hard": (1, None, True, True),
    "cd.num_negatives": (1, None, True, True),
    "cd.widen_step": (0.0, None, False, True),
    "cd.threshold_samples": (1, None, True, True),
    "cd.wc": (0.0, None, True, True),
    "cd.wd": (0.0, None, True, True),
    "cd.s": (0.0, None, False, True),
    "optim.lr": (0.0, None, False, True),
    "optim.momentum": (0.0, 1.0, True, False),
    "optim.weight_decay": (0.0, None, True, True),
    "optim.gamma": (0.0, None, False, True),
    "optim.warmup_epochs": (0.0, None, True, True),
    "optim.poly_power": (0.0, None, False, True),
    "optim.grad_clip": (0.0, None, True, True),
    "num_threads": (0, None, True, True),
    "health.collapse_after_epochs": (0.0, None, True, True),
    "health.collapse_ce_fraction": (0.0, 1.0, False, True),
    "health.collapse_max_target_cosine": (-1.0, 1.0, True, True),
    "finetune.head_init_images": (0, None, True, True),
    "finetune.backbone_lr_scale": (0.0, None, True, True),
    "finetune.head_warmup_steps": (0, None, True, True),
}


def _range_problem(value: float, bounds: tuple[float | None, float | None, bool, bool]) -> str | None:
    low, high, low_in, high_in = bounds
    if value != value:  # NaN
        return "a number"
    below = low is not None and (value < low or (value == low and not low_in))
    above = high is not None and (value > high or (value == high and not high_in))
    if not (below or above):
        return None
    lo = "" if low is None else f"{'[' if low_in else '('}{low}"
    hi = "" if high is None else f"{high}{']' if high_in else ')'}"
    if low is not None and high is not None:
        return f"in {lo}, {hi}"
    return f"{'>=' if low_in else '>'} {low}" if low is not None else f"{'<=' if high_in else '<'} {high}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# A decimal number with an exponent but no dot (1e-3, 5E-4, 1e6): a float in YAML 1.2 and to every user, a string
# to PyYAML's YAML 1.1 resolver.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):  # YAML 1.1 reads 1e-3 as a string
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def apply_values(obj: Any, values: dict[str, Any], prefix: str = "", sources: Sources | None = None) -> None:
    """Set ``values`` (nested, as merged) on the dataclass ``obj``, each checked against its type, choices and
    range; a ConfigError names the key and, through ``sources``, the file or override it came from."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise located(sources, full, f"unknown key {full!r}; allowed keys here: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                fields = ", ".join(f.name for f in dataclasses.fields(tp))
                raise located(sources, full, f"{full}: expected a mapping of {fields}")
            apply_values(getattr(obj, key), value, prefix=f"{full}.", sources=sources)
            continue
        if typing.get_origin(tp) is dict and isinstance(value, dict):
            for item, item_value in value.items():  # merged key by key (head.params): each has its own origin
                try:
                    _coerce(item_value, typing.get_args(tp)[1], f"{full}.{item}")
                except ConfigError as exc:
                    raise located(sources, f"{full}.{item}", str(exc)) from None
        try:
            value = _coerce(value, tp, full)
        except ConfigError as exc:
            raise located(sources, full, str(exc)) from None
        choices = _choices(full)
        if choices is not None and value not in choices:
            raise located(sources, full, f"{full}: {value!r} is not one of {', '.join(choices)}")
        if value is not None and full in _RANGES and (problem := _range_problem(value, _RANGES[full])) is not None:
            raise located(sources, full, f"{full}: must be {problem}, got {value!r}")
        setattr(obj, key, value)
