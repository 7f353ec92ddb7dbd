"""The trainer: one `fit()` that reads top to bottom, like insightface's train_v2.py.

config -> distributed init -> data -> backbone -> margin head -> optimizer/schedule -> resume -> the loop.
The paper's method is configuration plus small collaborators (score bank, CD sampler, miners, CD loss);
stage 1 and stage 2 are the same loop with `method: arcface` or `method: cd`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from cdface import __version__
from cdface.config import TrainConfig, config_to_dict
from cdface.data.bad_samples import BadSampleTracker
from cdface.errors import CdfaceError, ConfigError
from cdface.losses import ClosenessDiversityLoss
from cdface.models import InputContract, create_model, load_state_dict_strict, strip_wrapper_prefixes
from cdface.parallel import ShardedMarginHead, gather_full_state, load_full_state, reshard
from cdface.process_group import DistInfo, init_distributed
from cdface.threads import ThreadPlan, plan_threads, threads_applied
from cdface.train import checkpoint as ckpt
from cdface.train.bad_step import BadSteps
from cdface.train.cd_sampler import FaceBatchSampler
from cdface.train.data_setup import build_training_data, training_input_contract
from cdface.train.distributed import gather_objects, own_entry
from cdface.train.export import export_backbone
from cdface.train.finetune import freeze_backbone
from cdface.train.head_setup import build_head
from cdface.train.health import TrainingHealth, collapse_plateau, health_line
from cdface.train.init_from import new_head, take_backbone
from cdface.train.interrupts import signals_held
from cdface.train.metrics_log import MetricsLog
from cdface.train.model_options import check_local_batch, model_options
from cdface.train.optim import build_optimizer
from cdface.train.plots import plot_training
from cdface.train.resume_policy import (
    apply_optimizer_config,
    check_resume_config,
    load_scaler_state,
    optimizer_hyperparameters,
)
from cdface.train.run_folder import claim_run_folder, write_run_config
from cdface.train.schedule import group_multipliers, lr_multiplier, schedule_notes
from cdface.train.score_bank import ScoreBank
from cdface.train.step import MicroBatch, TrainStep, to_micro_batch

log = logging.getLogger("cdface.train")


class TrainingStopped(CdfaceError):
    """The run stopped on purpose (too many non-finite losses, too many bad images)."""


@dataclass
class FitResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    health: list[str] = field(default_factory=list)  # the per-epoch health lines
    backbone: torch.nn.Module | None = None
    head: torch.nn.Module | None = None


def fit(cfg: TrainConfig, fault_hook: Any = None) -> FitResult:
    """Train according to `cfg`; returns where the run lives and its last step.

    `fault_hook(step, loss)` (tests only) may return a replacement loss, e.g. NaN, to exercise recovery.
    Torch threads + loader workers stay within this process's cores (oversubscribing 2 cores cost 2-8x on
    CPU); the caller's thread count is restored on return.
    """
    threads = plan_threads(cfg.data.num_workers, cfg.num_threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    with threads_applied(threads):
        return _fit(cfg, threads, fault_hook)


def _fit(cfg: TrainConfig, threads: ThreadPlan, fault_hook: Any) -> FitResult:
    """The body of `fit`, top to bottom."""
    # ---- 1. distributed, device, determinism ------------------------------------------------------
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    info = init_distributed("cuda" if use_cuda else "cpu", cfg.dist_timeout_s)
    device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if threads.note and info.is_main:
        log.info("%s (num_threads > 0 takes the choice back)", threads.note)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.precision == "fp16" and device.type != "cuda":
        # torch's gradient scaler works on CUDA only: fp16 without it lets small gradients underflow to zero
        raise ConfigError(f"precision: fp16 needs a CUDA device (its gradient scaler), this run is on {device.type}; "
                          "use precision: bf16 (no scaler needed) or fp32")
    run_dir = Path(cfg.output_dir) / cfg.name
    ckpt_dir = run_dir / "checkpoints"
    claim_run_folder(cfg, run_dir, info)  # nothing is written into the run folder before the run has started

    # ---- 2. data: dataset, score bank, batch sampler (CD samples appended), loader -----------------
    dataset, val_sets = build_training_data(cfg, info)
    scores = ScoreBank(len(dataset), momentum=cfg.scores.momentum, seed=cfg.seed, device=device)
    bad_samples = BadSampleTracker(max_bad_fraction=cfg.data.max_bad_fraction, source=cfg.data.path or "training data")
    sampler = FaceBatchSampler(
        dataset.labels,
        dataset.class_to_indices(),
        batch_size=cfg.batch_size,
        rank=info.rank,
        world_size=info.world_size,
        seed=cfg.seed,
        cd=cfg.cd if cfg.method == "cd" else None,
        scores=scores.lagged,
        grad_accum=cfg.grad_accum,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=threads.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=cfg.data.prefetch_factor if threads.workers > 0 else None,
        # its own generator: creating an iterator must not draw from the global RNG that dropout, drop-path and
        # patch masking use, or a resumed run would not repeat an uninterrupted one
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    steps_per_epoch = sampler.steps_per_epoch
    epoch_steps = int(math.ceil(cfg.epochs * steps_per_epoch))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else epoch_steps  # max_steps, when set, is the length

    # ---- 3. backbone and margin head ------------------------------------------------------------------
    backbone = create_model(cfg.model.arch, embedding_size=cfg.model.embedding_size, **model_options(cfg)).to(device)
    if cfg.model.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    check_local_batch(backbone, sampler.local_batch, info.world_size, cfg.finetune.freeze_bn)
    sharded = cfg.head.sharded  # class centres split over the ranks (Partial FC when sample_rate < 1)
    head = build_head(cfg, dataset.num_classes, info.rank, sampler.local_batch, device)
    margin = head.margin
    cd_scale = resolve_cd_scale(cfg, margin)
    cd_loss_fn = ClosenessDiversityLoss(s=cd_scale, wc=cfg.cd.wc, wd=cfg.cd.wd)
    if cfg.method == "cd" and info.is_main:
        log.info("CD: s=%g (%s), wc=%g, wd=%g", cd_scale, "cd.s" if cfg.cd.s is not None else "the head's s",
                 cfg.cd.wc, cfg.cd.wd)
    health = TrainingHealth(
        collapse_plateau(margin, dataset.num_classes),
        device,
        collapse_after_steps=int(cfg.health.collapse_after_epochs * steps_per_epoch),
        ce_fraction=cfg.health.collapse_ce_fraction,
        max_target_cosine=cfg.health.collapse_max_target_cosine,
    )
    head_setting = f"{cfg.head.name} " + " ".join(f"{k}={v:g}" for k, v in cfg.head.params.items())

    # ---- 4. optimizer, schedule, mixed precision (frozen parts and a slower backbone when fine-tuning) ------
    frozen = freeze_backbone(backbone, cfg.finetune)
    split = cfg.finetune.backbone_lr_scale != 1.0 or cfg.finetune.head_warmup_steps > 0
    optimizer = build_optimizer(cfg.optim, [backbone, head], [cfg.finetune.backbone_lr_scale, 1.0] if split else None)
    lr_factor = lr_multiplier(cfg.optim, steps_per_epoch, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, group_multipliers(optimizer.param_groups, lr_factor, cfg.finetune.head_warmup_steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")

    # ---- 5. start from stage 1 (init_from) or resume this run --------------------------------------
    step = 0
    resume_path = _resolve_resume(cfg, ckpt_dir, info)
    if resume_path is not None:
        state = _require(ckpt.load_checkpoint(resume_path), resume_path, RESUME_KEYS)
        same_set = ckpt.check_data_fingerprint(  # the same set, wherever it now lives; another set is refused
            state, dataset.fingerprint, resume_path, cfg.data.path,
            "; resume with the run's own training set, or start a new run from it with init_from",
        )
        check_resume_config(state.get("config"), cfg, resume_path, int(state["step"]), same_set)  # refuse or apply
        load_state_dict_strict(backbone, state["backbone"], resume_path)
        if isinstance(state.get("input_cfg"), dict):  # a fine-tuned backbone keeps its pretrained input contract
            backbone.input_cfg = dict(state["input_cfg"])
        _load_scores(scores, state, resume_path)
        configured = optimizer_hyperparameters(optimizer)
        if not sharded and (moments := (state.get("head_sharded") or {}).get("optimizer_state")):
            # a sharded run kept its head's moments in head_sharded (see _head_entries): back where a replicated
            # head's are, so the load casts them as any other parameter's
            state["optimizer"]["state"][_param_index(optimizer, head.get_parameter("core.weight"))] = moments
        optimizer.load_state_dict(state["optimizer"])
        _load_head(head, state, resume_path, optimizer, info)
        scheduler.load_state_dict(state["scheduler"])
        apply_optimizer_config(optimizer, scheduler, configured)
        load_scaler_state(scaler, state["scaler"])
        # Each rank's drawn-ahead batches are its own; with another world size the sampler draws anew.
        sampler_state = own_entry(state["sampler"], info)
        if sampler_state is not None:
            sampler.load_state_dict(sampler_state)
        bad_state = own_entry(state["bad_samples"], info)
        if bad_state is not None:
            bad_samples.load_state_dict(bad_state)
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        step = int(state["step"])
        if info.is_main:
            log.info("resumed from %s at step %d", resume_path, step)
            if cfg.resume != "auto" and (aside := ckpt.set_aside_newer(ckpt_dir, step)):
                log.warning("checkpoints after step %d moved to %s (a new history starts here)", step, aside)
    elif cfg.init_from:  # stage 2 from stage 1 (backbone, head, scores), or a pretrained backbone to fine-tune
        start = take_backbone(cfg, backbone, dataset)
        if start.state is not None:  # stage 2: this set's head and difficulty scores
            state = _require(start.state, start.path, ("backbone", "head", "scores"))
            _load_head(head, state, start.path)
            _load_scores(scores, state, start.path)
        else:  # fine-tuning: a new head (random or from class means), fresh scores
            new_head(cfg, start, head, backbone, dataset, device, info.is_main)
        if info.is_main:
            log.info("%s", start.summary())
    preprocess = training_input_contract(backbone, dataset, val_sets)  # uint8 RGB batch -> the model's input
    if info.is_main:
        if frozen.parameters or frozen.norms:
            log.info("fine-tuning: %s", frozen.describe())
        # the config in force; an overwritten run's files (or a resumed one's log after `step`) go now, not before
        write_run_config(cfg, run_dir, step if cfg.resume else None, steps_per_epoch)
    model = backbone
    ddp_modules: list[torch.nn.Module] = []  # [backbone, head] wrappers whose all-reduce no_sync can defer
    if info.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(backbone, device_ids=device_ids)
        ddp_modules.append(model)
        if not sharded:  # a sharded head reduces its own gradients
            head = DistributedDataParallel(head, device_ids=device_ids)
            ddp_modules.append(head)
    head_module = head.module if isinstance(head, DistributedDataParallel) else head
    if cfg.compile:
        model = torch.compile(model)

    def save(at_step: int) -> Path | None:
        path = None
        head_entries, optimizer_state = _head_entries(head_module, optimizer, info)  # collective for a sharded head
        sampler_states = gather_objects(sampler.state_dict(), info)  # per rank: its batches drawn ahead
        bad_states = gather_objects(bad_samples.state_dict(), info)
        if info.is_main:
            state = {
                "backbone": backbone.state_dict(),
                **head_entries,
                "scores": scores.state_dict(),
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "sampler": sampler_states,
                "bad_samples": bad_states,
                "rng": {"torch": torch.get_rng_state()}
                | ({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                "step": at_step,
                "epoch": at_step // steps_per_epoch,
                "num_classes": dataset.num_classes,
                "data_fingerprint": dataset.fingerprint.as_dict(),  # which set: compared on resume and init_from
                "input_cfg": InputContract.from_model(backbone).as_cfg(),
                "config": config_to_dict(cfg),
                "cdface_version": __version__,
            }
            try:
                with signals_held():  # Ctrl-C lands after the files are whole, and names this checkpoint
                    path = ckpt.save_checkpoint(state, ckpt_dir, at_step, keep=cfg.keep_checkpoints)
                    export_backbone(backbone, cfg, run_dir, dataset.num_classes, at_step)
            except ckpt.NonFiniteState as exc:  # never written: the last finite checkpoint stays the one named
                log.warning("step %d: no checkpoint written, non-finite values in %s", at_step,
                            ", ".join(exc.entries[:3]))
        if info.enabled:
            torch.distributed.barrier()
        return path

    if info.is_main:
        log_start_summary(cfg, info, device, run_dir, backbone, dataset, steps_per_epoch, total_steps, step,
                          resume_path, threads)

    # ---- 6. the loop ------------------------------------------------------------------------------
    metrics = MetricsLog(run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard, start_step=step)
    bad_steps = BadSteps(device, cfg.max_bad_steps)
    # the step: micro-batch forwards, margin loss, CD branch, backward, optimizer, scores (see train/step.py)
    train_step = TrainStep(
        cfg, info, device, model, head, ddp_modules, optimizer, scheduler, scaler, scores, cd_loss_fn, health,
        bad_steps, local_batch=sampler.local_batch, fault_hook=fault_hook,
    )
    skipped = 0
    last_cd_loss = 0.0
    health_lines: list[str] = []
    val_results: dict[str, float] = {}
    last_ckpt: Path | None = resume_path
    last_saved_step = step
    window_start, window_samples, window_paused = time.perf_counter(), 0, 0.0

    def check_bad_steps() -> None:
        """The one host read of the bad-step flags (logging, checkpoint and epoch-end steps)."""
        nonlocal skipped
        count, stop_at, last_bad = bad_steps.read()
        if count:
            skipped += count
            log.warning("%d bad step(s) skipped (non-finite loss or weights), the last at step %d", count, last_bad)
        if stop_at is not None:
            raise TrainingStopped(
                f"stopped at step {stop_at}: {cfg.max_bad_steps} bad steps in a row (non-finite loss or weights); "
                f"last good checkpoint: {last_ckpt or 'none'}"
            )

    model.train()
    head.train()
    frozen.hold()  # frozen BatchNorm layers stay on their running statistics
    while step < total_steps:
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, batch_in_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        micro_batches: list[MicroBatch] = []
        for images, labels, indices, bad_index in loader:
            bad_samples.update(bad_index)
            micro_batches.append(
                to_micro_batch(
                    images, labels, indices, sampler.local_batch, device, preprocess, cfg.model.channels_last
                )
            )
            if len(micro_batches) < cfg.grad_accum:
                continue
            micro_batches[-1].plan = sampler.take_plan(step)
            ce = train_step(micro_batches, step)
            micro_batches = []
            step += 1
            window_samples += cfg.batch_size * cfg.grad_accum

            end_of_epoch = step % steps_per_epoch == 0
            checkpoint_now = step % cfg.checkpoint_every == 0 or end_of_epoch or step == total_steps
            if step % cfg.log_every == 0 or checkpoint_now:
                check_bad_steps()
            if step % cfg.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start - window_paused  # verification and saving excluded
                window = health.read_window()
                if window is not None and window.cd_steps:
                    last_cd_loss = window.cd_loss
                record = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "ce_loss": float(ce.detach()),
                    "cd_loss": last_cd_loss,
                    "lr": optimizer.param_groups[0]["lr"],
                    "samples_per_s": window_samples / max(elapsed, 1e-9),
                    "skipped_steps": skipped,
                }
                if window is not None:
                    record |= window.record()
                if train_step.last_threshold is not None:
                    record["cd_threshold"] = train_step.last_threshold
                if cfg.precision == "fp16" and scaler.is_enabled():
                    record["grad_scale"] = float(scaler.get_scale())
                metrics.log(record, total_steps=total_steps)
                if info.is_main and (warning := health.check(window, step, head_setting)):
                    log.warning("%s", warning)
                window_start, window_samples, window_paused = time.perf_counter(), 0, 0.0
            pause_start = time.perf_counter()
            at_epoch_end = end_of_epoch and cfg.verify_at_epoch_end
            if cfg.verify_every and step % cfg.verify_every == 0 or (at_epoch_end and val_sets):
                val_results = _verify(backbone, val_sets, metrics, step, info, device)
                model.train()
                frozen.hold()
            if end_of_epoch and (epoch_stats := health.read_epoch()) is not None and info.is_main:
                extra = {f"val {name} acc %": 100 * acc for name, acc in val_results.items()}
                line = health_line(step // steps_per_epoch, epoch_stats, health.plateau, extra)
                health_lines.append(line)
                log.info("%s", line)
                with open(run_dir / "health.txt", "a") as health_file:  # the report's copy, kept across resumes
                    health_file.write(line + "\n")
            if end_of_epoch:  # before the epoch-end checkpoint, which then holds the next epoch's empty counts
                metrics.histogram("difficulty_scores", scores.scores, step)
                report = bad_samples.end_epoch()
                if report.bad and info.is_main:
                    log.warning("corrupt images substituted: %s", report)
            if checkpoint_now:
                last_ckpt = save(step) or last_ckpt
                last_saved_step = step
            window_paused += time.perf_counter() - pause_start
            if step >= total_steps:
                break
    if last_saved_step != step:
        last_ckpt = save(step) or last_ckpt
    metrics.close()
    if info.is_main:  # at the end of the run: matplotlib stays out of the training process until then
        plot_training(run_dir / "training.png", [run_dir])
    return FitResult(run_dir, step, last_ckpt, metrics.history, health_lines, backbone=backbone, head=head_module)


def log_start_summary(
    cfg: TrainConfig, info: DistInfo, device: torch.device, run_dir: Path, backbone: torch.nn.Module, dataset: Any,
    steps_per_epoch: int, total_steps: int, step: int, resume_path: Path | None, threads: ThreadPlan,
) -> None:
    """One block at the start: where the run lives, on what, with which model, data, head and schedule."""
    params = sum(p.numel() for p in backbone.parameters()) / 1e6
    start = (
        f"resumed from {resume_path} at step {step}" if resume_path is not None
        else f"initialised from {cfg.init_from}" if cfg.init_from else "from scratch"
    )
    lines = [
        f"run {cfg.name}: {run_dir} ({cfg.method}, {start})",
        f"device {device.type} x {info.world_size} process(es), precision {cfg.precision}, "
        f"{threads.threads} torch thread(s) + {threads.workers} loader worker(s) per process",
        f"model {cfg.model.arch} ({params:.2f} M parameters), embedding {cfg.model.embedding_size}",
        f"data {cfg.data.kind} {cfg.data.path}: {len(dataset)} images, {dataset.num_classes} classes",
        f"head {cfg.head.name} {cfg.head.params}" + (" (sharded)" if cfg.head.sharded else ""),
        f"batch {cfg.batch_size} (global)"
        + (f" x {cfg.grad_accum} accumulated = {cfg.batch_size * cfg.grad_accum}" if cfg.grad_accum > 1 else "")
        + f", {steps_per_epoch} steps/epoch, {total_steps} steps, "
        f"optimizer {cfg.optim.optimizer} lr {cfg.optim.lr:g} ({cfg.optim.scheduler})",
        f"logs {run_dir / 'metrics.jsonl'}, {run_dir / 'training.png'}; checkpoints {run_dir / 'checkpoints'}",
    ]
    epoch_steps = int(math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps > 0 and cfg.max_steps != epoch_steps:  # max_steps is the run's length: say what it changes
        lines.append(
            f"max_steps={cfg.max_steps} sets the length: {total_steps} steps = {total_steps / steps_per_epoch:.3g} "
            f"epochs, where epochs={cfg.epochs:g} alone gives {epoch_steps} steps"
        )
    log.info("start\n  %s", "\n  ".join(lines))
    for note in schedule_notes(cfg.optim, steps_per_epoch, total_steps):
        log.warning("%s", note)


def resolve_cd_scale(cfg: TrainConfig, margin: torch.nn.Module) -> float:
    """The diversity term's s: ``cd.s`` when set, else the margin head's own scale (the paper uses one s)."""
    return float(cfg.cd.s if cfg.cd.s is not None else getattr(margin, "s", 64.0))


def _param_index(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> int:
    """Position of `param` in the optimizer's state_dict numbering."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return next(i for i, p in enumerate(params) if p is param)


RESUME_KEYS = (
    "backbone", "head", "scores", "optimizer", "scheduler", "scaler", "sampler", "bad_samples", "rng", "step",
)


def _require(state: dict[str, Any], path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ckpt.CheckpointError(f"{path}: not a cdface training checkpoint: missing {', '.join(missing)}")
    if bad := ckpt.nonfinite_entries({k: state[k] for k in keys}):
        raise ckpt.CheckpointError(f"{path}: holds non-finite values ({', '.join(bad[:3])}); use an earlier checkpoint")
    return state


def _load_scores(scores: ScoreBank, state: dict[str, Any], path: Path) -> None:
    saved = state["scores"].get("scores") if isinstance(state["scores"], dict) else None
    if saved is None or saved.shape[0] != len(scores.scores):
        found = "no score array" if saved is None else f"{saved.shape[0]} scores"
        raise ckpt.CheckpointError(
            f"{path}: difficulty scores are for another training set: {found}, "
            f"this set has {len(scores.scores)} samples"
        )
    scores.load_state_dict(state["scores"])


def _head_entries(
    head: torch.nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The checkpoint's head entries and the optimizer state (rank 0; ({}, None) elsewhere), for either head.

    The head is saved whole, so any world size can resume it: a sharded one is gathered to rank 0 (its rows'
    optimizer moments go into ``head_sharded``, not the optimizer state) with each rank's Partial FC stream.
    """
    if not isinstance(head, ShardedMarginHead):
        entries = {"head": head.state_dict(), "head_sharded": {}, "head_sampling": []}
        return (entries, optimizer.state_dict()) if info.is_main else ({}, None)
    full = gather_full_state(head, optimizer)
    sampling = gather_objects(head.sampling_state(), info)
    if not info.is_main:
        return {}, None
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"].pop(_param_index(optimizer, head.weight), None)
    return {"head": full["state_dict"], "head_sharded": full, "head_sampling": sampling}, optimizer_state


def _load_head(
    head: torch.nn.Module,
    state: dict[str, Any],
    path: Path,
    optimizer: torch.optim.Optimizer | None = None,
    info: DistInfo | None = None,
) -> None:
    """Load a checkpoint's full head into a replicated or a sharded head (any world size); with ``info`` (a
    resume) a sharded head also continues each rank's Partial FC sampling stream (another world size samples
    anew)."""
    if not isinstance(head, ShardedMarginHead):
        load_state_dict_strict(head, state["head"], path)
        return
    if info is not None:
        head.load_sampling_state(own_entry(state.get("head_sampling", []), info))
    if state.get("head_sharded"):
        load_full_state(head, state["head_sharded"], optimizer)
        return
    replicated = strip_wrapper_prefixes(state["head"])  # from a replicated-head run (e.g. stage 1), maybe DDP's
    if "core.weight" not in replicated:
        raise ckpt.CheckpointError(f"{path}: the head holds no class centres (core.weight)")
    try:
        head.load_full_weight(replicated["core.weight"])
    except ConfigError as exc:  # another training set's classes
        raise ckpt.CheckpointError(f"{path}: head: {exc}") from None
    if optimizer is not None and head.weight in optimizer.state:  # a resumed replicated run: all C rows' moments
        optimizer.state[head.weight] = {
            k: reshard(v, head.rank, head.world) if torch.is_tensor(v) and v.dim() and len(v) == head.num_classes else v
            for k, v in optimizer.state[head.weight].items()
        }
    margin_state = {k[len("margin.") :]: v for k, v in replicated.items() if k.startswith("margin.")}
    if margin_state:
        head.margin.load_state_dict(margin_state)


def _resolve_resume(cfg: TrainConfig, ckpt_dir: Path, info: DistInfo) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        # Rank 0 decides, so every rank resumes the same checkpoint (output_dir must be a shared filesystem).
        choice = [str(ckpt.latest_valid_checkpoint(ckpt_dir) or "") if info.is_main else ""]
        if info.enabled:
            torch.distributed.broadcast_object_list(choice, src=0)
        return Path(choice[0]) if choice[0] else None
    path = Path(cfg.resume)
    if not path.is_file():
        raise CdfaceError(f"resume: {path} does not exist")
    return path


@torch.no_grad()
def _verify(
    backbone, val_sets, metrics: MetricsLog, step: int, info: DistInfo, device: torch.device
) -> dict[str, float]:
    """Pair accuracy of every validation set (rank 0; {} elsewhere), logged."""
    if not info.is_main or not val_sets:
        return {}
    from cdface.train.verification import verify_pair_set

    backbone.eval()
    accuracies = {}
    for name, pair_set in val_sets.items():
        result = verify_pair_set(backbone, pair_set, device=device)
        metrics.log({"step": step, f"val/{name}/accuracy": result.accuracy, f"val/{name}/tar_at_far_1e-3": result.val})
        accuracies[name] = result.accuracy
    return accuracies


__all__ = ["fit", "FitResult", "TrainingStopped"]
