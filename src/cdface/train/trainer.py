"""The trainer: one `fit()` that reads top to bottom, like insightface's train_v2.py.

config -> distributed init -> data -> backbone -> margin head -> optimizer/schedule -> resume -> the loop.
The paper's method is configuration plus small collaborators (score bank, CD sampler, miners, CD loss);
stage 1 and stage 2 are the same loop with `method: arcface` or `method: cd`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from cdface import __version__
from cdface.config import TrainConfig, check_world_size, config_to_dict
from cdface.data.bad_samples import BadSampleTracker
from cdface.data.transforms import normalize_uint8
from cdface.errors import CdfaceError
from cdface.files import atomic_write, atomic_writer
from cdface.heads import create_head, create_margin
from cdface.losses import ClosenessDiversityLoss
from cdface.miners.hard_negatives import hard_negative_centres
from cdface.models import create_model, load_state_dict_strict
from cdface.parallel import ShardedMarginHead, gather_full_state, load_full_state
from cdface.threads import ThreadPlan, plan_threads, threads_applied
from cdface.train import checkpoint as ckpt
from cdface.train.cd_sampler import CDPlan, FaceBatchSampler
from cdface.train.data_setup import build_training_data
from cdface.train.distributed import (
    DistInfo,
    all_gather_cat,
    all_reduce_sum,
    any_rank,
    gather_objects,
    init_distributed,
    own_entry,
)
from cdface.train.health import TrainingHealth, collapse_plateau, health_line
from cdface.train.metrics_log import MetricsLog
from cdface.train.model_options import model_options
from cdface.train.optim import build_optimizer
from cdface.train.plots import plot_training
from cdface.train.resume_policy import (
    apply_optimizer_config,
    check_resume_config,
    load_scaler_state,
    optimizer_hyperparameters,
)
from cdface.train.run_folder import claim_run_folder, write_run_config
from cdface.train.schedule import lr_multiplier
from cdface.train.score_bank import ScoreBank

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


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    check_world_size(cfg.batch_size, info.world_size)
    run_dir = Path(cfg.output_dir) / cfg.name
    ckpt_dir = run_dir / "checkpoints"
    claim_run_folder(cfg, run_dir, info)  # nothing is written into the run folder before the run has started

    # ---- 2. data: dataset, score bank, batch sampler (CD samples appended), loader -----------------
    dataset, val_sets = build_training_data(cfg, info)
    scores = ScoreBank(len(dataset), momentum=cfg.scores.momentum, seed=cfg.seed)
    bad_samples = BadSampleTracker(max_bad_fraction=cfg.data.max_bad_fraction, source=cfg.data.path or "training data")
    sampler = FaceBatchSampler(
        dataset.labels,
        dataset.class_to_indices(),
        batch_size=cfg.batch_size,
        rank=info.rank,
        world_size=info.world_size,
        seed=cfg.seed,
        cd=cfg.cd if cfg.method == "cd" else None,
        scores=scores.numpy,
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
    total_steps = int(math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)

    # ---- 3. backbone and margin head ------------------------------------------------------------------
    backbone = create_model(cfg.model.arch, embedding_size=cfg.model.embedding_size, **model_options(cfg)).to(device)
    if cfg.model.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    sharded = cfg.head.sharded
    if sharded:  # class centres split over the ranks (Partial FC when sample_rate < 1); see cdface.parallel
        head = ShardedMarginHead(
            cfg.model.embedding_size,
            dataset.num_classes,
            create_margin(cfg.head.name, **cfg.head.params),
            sample_rate=cfg.head.sample_rate,
            generator=torch.Generator(device).manual_seed(cfg.seed * 1000 + info.rank),
        ).to(device)
    else:
        head = create_head(cfg.head.name, cfg.model.embedding_size, dataset.num_classes, **cfg.head.params).to(device)
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

    # ---- 4. optimizer, schedule, mixed precision -------------------------------------------------
    optimizer = build_optimizer(cfg.optim, [backbone, head])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg.optim, steps_per_epoch, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")

    # ---- 5. start from stage 1 (init_from) or resume this run --------------------------------------
    step = 0
    resume_path = _resolve_resume(cfg, ckpt_dir, info)
    if resume_path is not None:
        state = _require(ckpt.load_checkpoint(resume_path), resume_path, RESUME_KEYS)
        check_resume_config(state.get("config"), cfg, resume_path, int(state["step"]))  # refuse or apply, logged
        load_state_dict_strict(backbone, state["backbone"], resume_path)
        _load_scores(scores, state, resume_path)
        configured = optimizer_hyperparameters(optimizer)
        optimizer.load_state_dict(state["optimizer"])
        _load_head(head, state, resume_path, optimizer)
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
        if sharded:  # Partial FC continues each rank's sampling stream (another world size samples anew)
            head.load_sampling_state(own_entry(state.get("head_sampling", []), info))
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        step = int(state["step"])
        if info.is_main:
            log.info("resumed from %s at step %d", resume_path, step)
            if cfg.resume != "auto" and (aside := ckpt.set_aside_newer(ckpt_dir, step)):
                log.warning("checkpoints after step %d moved to %s (a new history starts here)", step, aside)
    elif cfg.init_from:
        init_path = _resolve_init(cfg.init_from)
        state = _require(ckpt.load_checkpoint(init_path), init_path, ("backbone", "head", "scores"))
        load_state_dict_strict(backbone, state["backbone"], init_path)
        _load_head(head, state, init_path)
        _load_scores(scores, state, init_path)
        if info.is_main:
            log.info("initialised backbone, head and difficulty scores from %s", cfg.init_from)

    if info.is_main:
        # the config in force; an overwritten run's files (or a resumed one's log after `step`) go now, not before
        write_run_config(cfg, run_dir, step if resume_path is not None else None)
    model = backbone
    if info.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(backbone, device_ids=device_ids)
        if not sharded:  # a sharded head reduces its own gradients
            head = DistributedDataParallel(head, device_ids=device_ids)
    head_module = head.module if isinstance(head, DistributedDataParallel) else head
    no_sync = model.no_sync if isinstance(model, DistributedDataParallel) else contextlib.nullcontext
    if cfg.compile:
        model = torch.compile(model)

    def save(at_step: int) -> Path | None:
        path = None
        # The head is saved whole (a sharded one gathered to rank 0), so any world size can resume it.
        head_full = gather_full_state(head_module, optimizer) if sharded else None
        sampler_states = gather_objects(sampler.state_dict(), info)  # per rank: its batches drawn ahead
        bad_states = gather_objects(bad_samples.state_dict(), info)
        head_sampling = gather_objects(head_module.sampling_state(), info) if sharded else []
        if info.is_main:
            optimizer_state = optimizer.state_dict()
            if sharded:
                optimizer_state["state"].pop(_param_index(optimizer, head_module.weight), None)
            state = {
                "backbone": backbone.state_dict(),
                "head": head_full["state_dict"] if sharded else head_module.state_dict(),
                "head_sharded": head_full or {},
                "scores": scores.state_dict(),
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "sampler": sampler_states,
                "bad_samples": bad_states,
                "head_sampling": head_sampling,
                "rng": {"torch": torch.get_rng_state()}
                | ({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                "step": at_step,
                "epoch": at_step // steps_per_epoch,
                "num_classes": dataset.num_classes,
                "config": config_to_dict(cfg),
                "cdface_version": __version__,
            }
            if bad := ckpt.nonfinite_entries(state):  # never written: the last finite checkpoint stays the one named
                log.warning("step %d: no checkpoint written, non-finite values in %s", at_step, ", ".join(bad[:3]))
            else:
                path = ckpt.save_checkpoint(state, ckpt_dir, at_step, keep=cfg.keep_checkpoints)
                export_backbone(backbone, cfg, run_dir, dataset.num_classes, at_step)
        if info.enabled:
            torch.distributed.barrier()
        return path

    if info.is_main:
        log_start_summary(cfg, info, device, run_dir, backbone, dataset, steps_per_epoch, total_steps, step,
                          resume_path, threads)

    # ---- 6. the loop ------------------------------------------------------------------------------
    metrics = MetricsLog(run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard, start_step=step)
    bad_streak, skipped = 0, 0
    last_cd_loss, last_threshold = 0.0, None
    health_lines: list[str] = []
    val_results: dict[str, float] = {}
    last_ckpt: Path | None = resume_path
    last_saved_step = step
    window_start, window_samples, window_paused = time.perf_counter(), 0, 0.0
    model.train()
    head.train()
    while step < total_steps:
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, batch_in_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for images, labels, indices, bad_index in loader:
            plan = sampler.take_plan(step)
            images = images.to(device, non_blocking=True)
            if images.dtype == torch.uint8:
                images = normalize_uint8(images)
            labels = labels.to(device, non_blocking=True)
            if cfg.model.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            n = sampler.local_batch
            bad_samples.update(bad_index)

            # Plain margin loss on the batch. On a CD step its backward must not all-reduce yet, and DDP
            # decides that at forward time: the forward and the backward both run under no_sync().
            with no_sync() if plan is not None else contextlib.nullcontext():
                with _autocast(cfg, device):
                    embeddings = model(images[:n])
                out = head(embeddings.float(), labels[:n])
                if sharded:
                    ce = out.loss  # distributed cross-entropy (+ aux) over this rank's rows
                else:
                    ce = F.cross_entropy(out.logits, labels[:n])
                    if out.aux_loss is not None:
                        ce = ce + out.aux_loss
                if fault_hook is not None:
                    ce = fault_hook(step, ce)
                finite = not any_rank(not torch.isfinite(ce).item(), info, device)
                if finite and plan is not None:
                    if sharded:
                        centres = _sharded_centres(head_module, embeddings.detach(), plan, cfg, info, device)
                    else:
                        centre_ids = _hard_negative_ids(out.cosine.detach(), labels[:n], plan, cfg, info, device)
                        centres = head_module.weight.detach()[centre_ids]
                if finite:
                    scaler.scale(ce).backward()

            # Closeness & diversity on the appended easy/hard samples; gradients accumulate, then all-reduce.
            if finite and plan is not None:
                with _autocast(cfg, device):
                    cd_embeddings = model(images[n:])
                per_class = cfg.cd.num_easy + cfg.cd.num_hard
                cd_embeddings = cd_embeddings.float().view(len(plan.local_classes), per_class, -1)
                easy, hard = cd_embeddings[:, : cfg.cd.num_easy], cd_embeddings[:, cfg.cd.num_easy :]
                close, diverse = cd_loss_fn.components(easy, hard, centres.float())
                cd_value = cd_loss_fn.weighted(close, diverse)
                finite = not any_rank(not torch.isfinite(cd_value).item(), info, device)
                if finite:
                    scaler.scale(cd_value).backward()
                    health.update_cd(cd_value, close, diverse)
                    last_threshold = plan.threshold

            if not finite:  # skip the update, count it, stop after too many in a row
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("step %d: non-finite loss, step skipped", step)
            else:
                if cfg.optim.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    _clip_gradients(optimizer, cfg.optim.grad_clip, head_module if sharded else None, info)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                # a finite loss can still overflow the weights: a bad step too, never checkpointed (see save)
                weights = [*backbone.state_dict().values(), *head_module.state_dict().values()]
                finite = not any_rank(not ckpt.tensors_finite(weights), info, device)
                if not finite:
                    log.warning("step %d: the update made the weights non-finite", step)
            bad_streak = 0 if finite else bad_streak + 1
            if bad_streak >= cfg.max_bad_steps:
                raise TrainingStopped(
                    f"stopped at step {step}: {bad_streak} bad steps in a row (non-finite loss or weights); "
                    f"last good checkpoint: {last_ckpt or 'none'}"
                )
            if finite:
                health.update(ce, out.correct, out.target_cosine)
                # Difficulty scores: every rank applies every rank's updates, so all ranks hold one view.
                idx_local = indices[:n].to(device)
                if cfg.scores.sync == "gather":
                    all_idx, all_cos = all_gather_cat(idx_local, info), all_gather_cat(out.target_cosine, info)
                    scores.update(all_idx.cpu(), all_cos.cpu())
                else:
                    scores.update(idx_local.cpu(), out.target_cosine.cpu())
                    if info.enabled and (step + 1) % cfg.scores.average_every == 0:
                        scores.sync()
            scheduler.step()
            step += 1
            window_samples += cfg.batch_size

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
                if last_threshold is not None:
                    record["cd_threshold"] = last_threshold
                if cfg.precision == "fp16" and scaler.is_enabled():
                    record["grad_scale"] = float(scaler.get_scale())
                metrics.log(record, total_steps=total_steps)
                if info.is_main and (warning := health.check(window, step, head_setting)):
                    log.warning("%s", warning)
                window_start, window_samples, window_paused = time.perf_counter(), 0, 0.0
            end_of_epoch = step % steps_per_epoch == 0
            pause_start = time.perf_counter()
            at_epoch_end = end_of_epoch and cfg.verify_at_epoch_end
            if cfg.verify_every and step % cfg.verify_every == 0 or (at_epoch_end and val_sets):
                val_results = _verify(backbone, val_sets, metrics, step, info, device)
                model.train()
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
            if step % cfg.checkpoint_every == 0 or end_of_epoch or step == total_steps:
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
        f"batch {cfg.batch_size} (global), {steps_per_epoch} steps/epoch, {total_steps} steps, "
        f"optimizer {cfg.optim.optimizer} lr {cfg.optim.lr:g} ({cfg.optim.scheduler})",
        f"logs {run_dir / 'metrics.jsonl'}, {run_dir / 'training.png'}; checkpoints {run_dir / 'checkpoints'}",
    ]
    log.info("start\n  %s", "\n  ".join(lines))


def resolve_cd_scale(cfg: TrainConfig, margin: torch.nn.Module) -> float:
    """The diversity term's s: ``cd.s`` when set, else the margin head's own scale (the paper uses one s)."""
    return float(cfg.cd.s if cfg.cd.s is not None else getattr(margin, "s", 64.0))


def _clip_gradients(
    optimizer: torch.optim.Optimizer, max_norm: float, sharded_head: ShardedMarginHead | None, info: DistInfo
) -> None:
    """Clip by the global gradient norm. A sharded head's rows live on different ranks, so their squared
    norm is summed over the ranks: every rank then applies the same factor and the replicas stay equal."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if sharded_head is None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    shard = [p for p in params if p is sharded_head.weight]
    replicated = [p for p in params if p is not sharded_head.weight]
    device = params[0].grad.device
    shard_sq = sum((p.grad.float().pow(2).sum() for p in shard), torch.zeros((), device=device))
    total_sq = all_reduce_sum(shard_sq, info) + sum(
        (p.grad.float().pow(2).sum() for p in replicated), torch.zeros((), device=device)
    )
    factor = torch.clamp(max_norm / (total_sq.sqrt() + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(factor.to(p.grad.dtype))


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


def _load_head(
    head: torch.nn.Module, state: dict[str, Any], path: Path, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load a checkpoint's full head into a replicated or a sharded head (any world size)."""
    if not isinstance(head, ShardedMarginHead):
        load_state_dict_strict(head, state["head"], path)
        return
    if state.get("head_sharded"):
        load_full_state(head, state["head_sharded"], optimizer)
        return
    head.load_full_weight(state["head"]["core.weight"])  # from a replicated-head run (e.g. stage 1)
    margin_state = {k[len("margin.") :]: v for k, v in state["head"].items() if k.startswith("margin.")}
    if margin_state:
        head.margin.load_state_dict(margin_state)


def _resolve_init(init_from: str) -> Path:
    """A checkpoint file, or a run folder / checkpoints folder whose newest valid checkpoint is taken."""
    path = Path(init_from)
    if path.is_dir():
        found = ckpt.newest_valid_checkpoint(path)
        if found is None:
            raise CdfaceError(f"init_from: no valid checkpoint in {path}")
        return found
    return path


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


def _hard_negative_ids(
    cosine: torch.Tensor,
    labels: torch.Tensor,
    plan: CDPlan,
    cfg: TrainConfig,
    info: DistInfo,
    device: torch.device,
) -> torch.Tensor:
    """Centre ids for this rank's CD classes. Each class's logits row lives on the rank that holds the
    class's chosen (last) batch sample; that rank finds the top-NP negatives and an all-reduce shares them."""
    num_classes = cosine.shape[1]
    k_total = len(plan.classes)
    num_neg = min(cfg.cd.num_negatives, num_classes - 1)
    ids = torch.zeros((k_total, num_neg), dtype=torch.int64, device=device)
    mine = np.flatnonzero(plan.owner_rank == info.rank)
    if len(mine):
        rows = torch.as_tensor(plan.owner_row[mine], device=device)
        owned_classes = torch.as_tensor(plan.classes[mine], device=device)
        ids[torch.as_tensor(mine, device=device)] = hard_negative_centres(
            cosine[rows], labels[rows], owned_classes, num_negatives=num_neg, per_class=True
        )
    ids = all_reduce_sum(ids, info)
    selected = torch.as_tensor(plan.classes, device=device)
    if cfg.cd.per_class_centres:
        lo, hi = plan.local_slice
        return ids[lo:hi]
    union = torch.unique(ids)
    return union[~torch.isin(union, selected)]


def _sharded_centres(
    head: ShardedMarginHead, embeddings: torch.Tensor, plan: CDPlan, cfg: TrainConfig, info: DistInfo, device
) -> torch.Tensor:
    """CD centres mined across the shards: each class's query is the embedding of its chosen batch row."""
    mine = np.flatnonzero(plan.owner_rank == info.rank)
    found = head.hard_negatives(
        embeddings[torch.as_tensor(plan.owner_row[mine], device=device)],
        torch.as_tensor(plan.classes[mine], device=device),
        cfg.cd.num_negatives,
        per_class=cfg.cd.per_class_centres,
        all_ranks=True,
    )
    if not cfg.cd.per_class_centres:
        return found.centres
    gathered_order = np.concatenate([np.flatnonzero(plan.owner_rank == r) for r in range(info.world_size)])
    position = {int(k): i for i, k in enumerate(gathered_order)}
    lo, hi = plan.local_slice
    return found.centres[[position[k] for k in range(lo, hi)]]


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


def export_backbone(backbone: torch.nn.Module, cfg: TrainConfig, run_dir: Path, num_classes: int, step: int) -> Path:
    """`backbone.pt` (a plain state_dict, loadable with weights_only=True) and its model card `model.json`."""
    path = run_dir / "backbone.pt"
    with atomic_writer(path) as handle:
        torch.save({k: v.detach().cpu() for k, v in backbone.state_dict().items()}, handle)
    input_cfg = dict(getattr(backbone, "input_cfg", {}) or {})
    card = {
        "arch": cfg.model.arch,
        "embedding_size": cfg.model.embedding_size,
        # the options that define the architecture; fp16 / checkpointing / channels_last are how it was trained
        "model_kwargs": {
            k: v
            for k, v in dict(getattr(backbone, "model_kwargs", model_options(cfg))).items()
            if k not in ("fp16", "gradient_checkpointing", "channels_last")
        },
        "input_size": list(input_cfg.get("input_size", (112, 112))),
        "mean": list(input_cfg.get("mean", (0.5, 0.5, 0.5))),
        "std": list(input_cfg.get("std", (0.5, 0.5, 0.5))),
        "color": input_cfg.get("color", "RGB"),
        "training": {
            "method": cfg.method,
            "head": cfg.head.name,
            "head_params": cfg.head.params,
            "dataset": cfg.data.path,
            "num_classes": num_classes,
            "step": step,
            "cdface_version": __version__,
        },
        "evaluation": {},
    }
    atomic_write(run_dir / "model.json", json.dumps(card, indent=2, sort_keys=True))
    return path


__all__ = ["fit", "FitResult", "TrainingStopped", "export_backbone"]
