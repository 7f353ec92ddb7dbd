"""What a resumed run does with config values that differ from its checkpoint's.

Every key is either applied from the resumed step on (and logged: `optim.lr 0.01 -> 0.001 from step 3`) or
refused with a ConfigError, never silently ignored; `config.yaml` is then rewritten with the config in force.
A key is refused when the saved state cannot hold the new value (another model, head, data set, batch or
sampler) and applied when the state carries over. `RESUME_POLICY` lists the rule of every key (the most
specific entry wins); docs/training.md shows it as a table, and a test checks that every config key has one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from cdface.config import TrainConfig, config_to_dict
from cdface.errors import ConfigError

log = logging.getLogger("cdface.train")

APPLY, REFUSE, IGNORE = "apply", "refuse", "ignore"

# key (or section) -> (rule, why); the most specific entry wins.
RESUME_POLICY: dict[str, tuple[str, str]] = {
    "name": (IGNORE, "where the run lives, not how it trains"),
    "output_dir": (IGNORE, "where the run lives, not how it trains"),
    "resume": (IGNORE, "what to continue from"),
    "overwrite": (IGNORE, "only acts on a new run"),
    "init_from": (IGNORE, "only acts on a new run (resume takes precedence)"),
    "method": (REFUSE, "stage 1 and stage 2 are separate runs (start stage 2 with init_from)"),
    "seed": (REFUSE, "the order of every epoch and every CD draw derive from it"),
    "batch_size": (REFUSE, "the step, epoch and sampler positions of the checkpoint count batches of this size"),
    "grad_accum": (REFUSE, "the step and sampler positions of the checkpoint count micro-batches per step"),
    "epochs": (APPLY, "the run ends at the new length; the lr schedule is recomputed for it"),
    "max_steps": (APPLY, "the run ends at the new length; the lr schedule is recomputed for it"),
    "device": (APPLY, "the state is loaded onto the new device"),
    "precision": (APPLY, "autocast changes from the resumed step on; a new fp16 run starts a fresh loss scale"),
    "compile": (APPLY, "how the same model is run"),
    "deterministic": (APPLY, "how the same model is run"),
    "log_every": (APPLY, "bookkeeping"),
    "checkpoint_every": (APPLY, "bookkeeping"),
    "keep_checkpoints": (APPLY, "bookkeeping"),
    "verify_every": (APPLY, "bookkeeping"),
    "verify_at_epoch_end": (APPLY, "bookkeeping"),
    "max_bad_steps": (APPLY, "bookkeeping"),
    "dist_timeout_s": (APPLY, "bookkeeping"),
    "tensorboard": (APPLY, "bookkeeping"),
    "num_threads": (APPLY, "how the same model is run"),
    "health": (APPLY, "bookkeeping: when the log calls a run collapsed"),
    "data": (REFUSE, "the difficulty scores and sampler positions belong to one training set"),
    "data.path": (APPLY, "a moved set resumes: the checkpoint's data fingerprint (N, C, label hash) is compared "
                  "instead, and another set is refused (a checkpoint written before fingerprints refuses a new path)"),
    "data.cache_dir": (APPLY, "where the label table is cached, not which labels it holds"),
    "data.label_cache": (APPLY, "whether the label table is cached, not which labels it holds"),
    "data.max_image_pixels": (APPLY, "the decoding limit of the images drawn from the resumed step on"),
    "data.num_workers": (APPLY, "loading only: the pending batches are replayed whatever the worker count"),
    "data.prefetch_factor": (APPLY, "loading only"),
    "data.val_targets": (APPLY, "verification only"),
    "data.max_bad_fraction": (APPLY, "the limit is checked against the restored counts"),
    "data.flip_p": (APPLY, "augmentation of the images drawn from the resumed step on"),
    "data.random_resized_crop": (APPLY, "augmentation of the images drawn from the resumed step on"),
    "data.color_jitter": (APPLY, "augmentation of the images drawn from the resumed step on"),
    "data.low_res_prob": (APPLY, "augmentation of the images drawn from the resumed step on"),
    "model": (REFUSE, "the saved weights belong to one architecture"),
    "model.gradient_checkpointing": (APPLY, "how the same model is run"),
    "model.channels_last": (APPLY, "how the same model is run"),
    "head": (REFUSE, "the saved centres belong to one margin and its parameters"),
    "head.sharded": (APPLY, "the head is saved whole and loads into either layout"),
    "head.sample_rate": (APPLY, "Partial FC samples with the new rate from the resumed step on"),
    "scores": (REFUSE, "the saved difficulty scores were accumulated with these settings"),
    "cd": (REFUSE, "the CD samples already drawn ahead were drawn with these settings"),
    "cd.wc": (APPLY, "a weight of the CD loss: the drawn samples stay, their loss is weighted anew"),
    "cd.wd": (APPLY, "a weight of the CD loss: the drawn samples stay, their loss is weighted anew"),
    "cd.s": (APPLY, "the diversity term's scale: the drawn samples stay, their loss is scaled anew"),
    "cd.num_negatives": (APPLY, "the nearest wrong centres are mined at each CD step, not drawn ahead"),
    "cd.per_class_centres": (APPLY, "the nearest wrong centres are mined at each CD step, not drawn ahead"),
    "optim": (APPLY, "the optimizer's hyperparameters are set from the config; its moments carry over"),
    "optim.optimizer": (REFUSE, "the saved moments belong to one optimizer"),
    "optim.no_decay_on_bn": (REFUSE, "the saved moments are stored per parameter group"),
    "finetune": (REFUSE, "the saved moments are stored per parameter group, and these set the groups (a backbone "
                 "group apart from the head's, frozen parameters left out)"),
    "finetune.backbone_only": (IGNORE, "only acts when a new run starts from init_from"),
    "finetune.head_init": (IGNORE, "only acts when a new run starts from init_from"),
    "finetune.head_init_images": (IGNORE, "only acts when a new run starts from init_from"),
    "finetune.freeze_bn": (APPLY, "how the same model is run: BatchNorm statistics frozen (or learnt) from the "
                           "resumed step on"),
}


def rule_of(key: str) -> tuple[str, str]:
    """(rule, why) of a dotted config key: its own entry, else its section's."""
    probe = key
    while probe not in RESUME_POLICY:
        if "." not in probe:
            raise KeyError(f"no resume rule for config key {key!r}: add it to RESUME_POLICY")
        probe = probe.rsplit(".", 1)[0]
    return RESUME_POLICY[probe]


def _leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and key != "params":  # head.params is one value (replaced whole)
            out.update(_leaves(value, f"{full}."))
        else:
            out[full] = value
    return out


def config_changes(saved: dict[str, Any], cfg: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) of every config key whose value differs; keys absent from `saved`
    (a checkpoint written before the key existed) are not compared."""
    old, new = _leaves(saved), _leaves(config_to_dict(cfg))
    return [(k, old[k], new[k]) for k in new if k in old and old[k] != new[k]]


# Applied only when the checkpoint's data fingerprint was compared with this run's set.
NEEDS_FINGERPRINT = ("data.path",)


def check_resume_config(
    saved: dict[str, Any] | None, cfg: TrainConfig, path: object, step: int, fingerprint_checked: bool = True
) -> None:
    """ConfigError for the first refused change; logs the applied ones ("optim.lr 0.01 → 0.001 from step 3").

    `fingerprint_checked`: whether the checkpoint's data fingerprint matched this run's set (False for a
    checkpoint without one, which then cannot move to another data.path)."""
    if not isinstance(saved, dict):
        return
    changes = config_changes(saved, cfg)
    for key, old, new in changes:
        rule, why = rule_of(key)
        if key in NEEDS_FINGERPRINT and not fingerprint_checked:
            rule, why = REFUSE, "the checkpoint holds no data fingerprint to show that the new path holds the same set"
        if rule == REFUSE:
            raise ConfigError(
                f"{key}: cannot change from {old!r} to {new!r} when resuming {path}: {why}. "
                f"Resume with {key}={old!r}, or start a new run from this one with init_from and another name"
            )
    for key, old, new in changes:
        if rule_of(key)[0] == APPLY:
            log.info("%s %r → %r from step %d", key, old, new, step)


def optimizer_hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's hyperparameters (all but the parameters), as the config built them."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def apply_optimizer_config(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, fresh: list[dict[str, Any]]
) -> None:
    """After loading a checkpoint: the groups' hyperparameters and base lr from the config (`fresh`, taken
    before the load), the current lr from the schedule at the resumed step; the optimizer moments stay."""
    for group, hyper, lr_lambda in zip(optimizer.param_groups, fresh, scheduler.lr_lambdas, strict=True):
        group.update(hyper)
        group["lr"] = hyper["initial_lr"] * lr_lambda(scheduler.last_epoch)
    scheduler.base_lrs = [hyper["initial_lr"] for hyper in fresh]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """An fp16 run resumed from a checkpoint without a loss scale (fp32 or bf16 before) starts a fresh one."""
    if state or not scaler.is_enabled():
        scaler.load_state_dict(state)
