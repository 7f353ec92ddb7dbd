"""`cdface train`, `cdface quickstart` and `cdface ablate`."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from cdface.config import TrainConfig
from cdface.errors import CdfaceError, ConfigError


class DistributedRunError(CdfaceError):
    """A rank lost its peers; the message says how to resume."""


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (torchrun -m cdface train ... for several GPUs)",
        description="Train from CONFIG.yaml; key=value arguments override config keys (e.g. optim.lr=0.01). "
        "resume=auto continues a killed run from its newest valid checkpoint; init_from=RUN starts stage 2 "
        "from a stage-1 run. --show-config prints the resolved config and exits.",
        epilog=_train_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("config", help="YAML config: your own file, or a shipped config's name (listed below)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, dotted for sections (optim.lr=0.01)")
    train.add_argument("--show-config", action="store_true",
                       help="print the config with its base: chain and overrides applied, then exit")
    train.set_defaults(func=_train)

    quick = subparsers.add_parser(
        "quickstart",
        help="the paper's whole pipeline on the built-in synthetic identity set (CPU, minutes)",
    )
    quick.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    quick.add_argument("--scale", type=float, default=1.0, help="shrink data and epochs (e.g. 0.2 for a smoke run)")
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(func=_quickstart)

    ablate = subparsers.add_parser(
        "ablate",
        help="stage-2 variants x seeds from shared stage 1s on the synthetic set: accuracy and mechanism metrics",
        description="Train stage 1 once per stage-1 seed, then every variant for every seed from its checkpoint, "
        "evaluate all, and write ablation.md / ablation.json (mean ± std over runs, paired difference to the "
        "baseline on the same stage 1 and seed with a 95% t-interval, per stage 1 too when there are several, "
        "mechanism metrics). Interrupted studies continue where they stopped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ablate.add_argument("--out", default="runs/ablate", help="output folder")
    ablate.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: the quickstart regime (idle 2 cores: 2 min per stage 1, ~1.5 min per stage-2 run); "
                        "gpu: iresnet50, 20k identities, bf16 (one H100/H200)")
    ablate.add_argument("--seeds", default="0,1,2", help="comma-separated stage-2 seeds")
    ablate.add_argument("--stage1-seeds", default="0",
                        help="comma-separated stage-1 seeds: one stage 1 each, every variant x seed from each; "
                        "runs pair on (stage-1 seed, seed), and a table gives each stage 1's differences")
    ablate.add_argument("--variants", default="arcface,cd,closeness,diversity",
                        help="comma-separated, from: " + ", ".join(_variant_names()))
    ablate.add_argument("--baseline", default="arcface",
                        help="the variant every other is paired with, seed by seed (one of --variants)")
    ablate.add_argument("--scale", type=float, default=1.0, help="shrink data and epochs (e.g. 0.1 for a smoke run)")
    ablate.add_argument("overrides", nargs="*", help="key=value config overrides for every run (e.g. device=cpu)")
    ablate.set_defaults(func=_ablate)


def _variant_names() -> list[str]:
    from cdface.train.ablation import VARIANTS

    return list(VARIANTS)


def _train_epilog() -> str:
    """The config sections and their keys, and the shipped configs, for `cdface train --help`."""
    import dataclasses

    from cdface.config import TrainConfig

    lines = ["config keys (see docs/training.md):"]
    top = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in _SECTIONS]
    lines.append("  " + ", ".join(top))
    for section in _SECTIONS:
        keys = [f.name for f in dataclasses.fields(getattr(TrainConfig(), section))]
        lines.append(f"  {section}.: " + ", ".join(keys))
    from cdface.config import shipped_configs

    shipped = list(shipped_configs())
    if shipped:
        lines.append("shipped configs (by name; configs/NAME.yaml in a checkout): " + ", ".join(shipped))
    lines.append("examples: cdface train synthetic_arcface max_steps=100 | ... resume=auto")
    return "\n".join(lines)


_SECTIONS = ("data", "model", "head", "scores", "cd", "optim", "health", "finetune")


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _train(args: argparse.Namespace) -> int:
    from cdface.config import load_config
    from cdface.train.interrupts import Terminated, sigterm_interrupts
    from cdface.train.trainer import fit

    _setup_logging()
    cfg = None
    try:
        cfg = load_config(args.config, args.overrides)
        if args.show_config:
            from cdface.config import dump_config

            print(dump_config(cfg), end="")
            return 0
        with sigterm_interrupts():  # SIGTERM ends the run as Ctrl-C does: the same cleanup and message
            result = fit(cfg)
    except ConfigError:
        if _rank() != 0:  # every rank finds the same config error: rank 0 alone prints it (exit 2, as main)
            return 2
        raise
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        if _rank() == 0:
            print(interrupted_message(args, cfg, "terminated (SIGTERM)" if terminated else "interrupted"),
                  file=sys.stderr)
        return 143 if terminated else 130  # 128 + the signal's number, as a shell reports it
    except RuntimeError as exc:
        explained = explain_runtime_error(exc, cfg)
        if explained is exc:
            raise
        raise explained from exc
    print(f"finished at step {result.step}; checkpoint {result.checkpoint}; backbone {result.run_dir / 'backbone.pt'}")
    return 0


def interrupted_message(args: argparse.Namespace, cfg: TrainConfig | None, what: str = "interrupted") -> str:
    """One line for Ctrl-C or SIGTERM (`what`): the newest valid checkpoint and the command that continues."""
    if cfg is None:
        return f"{what} before the run started"
    from cdface.train import checkpoint as ckpt

    newest = ckpt.latest_valid_checkpoint(Path(cfg.output_dir) / cfg.name / "checkpoints")
    kept = [o for o in args.overrides if o.split("=", 1)[0].strip() not in ("resume", "overwrite")]
    command = shlex.join(["cdface", "train", args.config, *kept, "resume=auto"])
    where = f"newest checkpoint {newest}" if newest else "no checkpoint written yet"
    return f"{what}; {where}; continue with: {command}"


# What a collective's own error says when its peer is gone (gloo, NCCL, the TCP store).
_PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out", "timeout",
              "communicator was aborted", "remote process exited", "socket")


def explain_runtime_error(exc: RuntimeError, cfg: TrainConfig | None) -> BaseException:
    """The error to report for a RuntimeError out of `fit`: a peer failure under DDP says so and how to resume;
    out-of-memory says what to lower; anything else is the exception itself, named as it is."""
    import torch
    import torch.distributed as dist

    rank = f"rank {_rank()}: "
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, torch.OutOfMemoryError):
        return CdfaceError(
            f"{rank}out of memory ({first}); lower batch_size, or use precision: bf16 or "
            "model.gradient_checkpointing: true"
        )
    distributed = dist.is_available() and dist.is_initialized()
    peer_gone = isinstance(exc, dist.DistError) or any(m in str(exc).lower() for m in _PEER_GONE)
    if distributed and peer_gone:
        timeout = f" (dist_timeout_s={cfg.dist_timeout_s})" if cfg is not None else ""
        return DistributedRunError(
            f"{rank}a collective with the other ranks failed{timeout}: another rank died or stopped responding "
            f"({type(exc).__name__}: {first}). Restart the whole job with resume=auto to continue from the "
            "newest checkpoint"
        )
    return exc


def _quickstart(args: argparse.Namespace) -> int:
    from cdface.train.quickstart import format_table, run_quickstart

    _setup_logging()
    outcome = run_quickstart(args.out, scale=args.scale, seed=args.seed)
    print(format_table(outcome["rows"]))
    if outcome["smoke"]:
        print(f"smoke run (--scale {args.scale:g}): the pipeline ran; too short to be evidence, no conclusion drawn")
    print(f"report: {outcome['report']}")
    return 0


def _seed_list(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise CdfaceError(f"{option}: expected comma-separated integers, got {text!r}") from None


def _ablate(args: argparse.Namespace) -> int:
    from cdface.train.ablation import VARIANTS, format_ablation, run_ablation

    seeds, stage1_seeds = _seed_list("--seeds", args.seeds), _seed_list("--stage1-seeds", args.stage1_seeds)
    if not stage1_seeds or len(set(stage1_seeds)) != len(stage1_seeds):
        raise CdfaceError(f"--stage1-seeds: expected distinct comma-separated integers, got {args.stage1_seeds!r}")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or not seeds:
        raise CdfaceError(f"--variants/--seeds: unknown {unknown or 'empty list'}; variants: {', '.join(VARIANTS)}")
    if args.baseline not in variants:
        raise CdfaceError(f"--baseline {args.baseline!r}: not one of --variants ({', '.join(variants)})")
    _setup_logging()
    from cdface.config import parse_overrides

    overrides = parse_overrides(args.overrides)
    if "seed" in overrides:  # it would set stage 1's seed behind --stage1-seeds' back (stage 2's come from --seeds)
        raise CdfaceError("seed=...: give stage-1 seeds with --stage1-seeds and stage-2 seeds with --seeds")
    result = run_ablation(args.out, preset=args.preset, seeds=seeds, variants=variants, scale=args.scale,
                          overrides=overrides, baseline=args.baseline, stage1_seeds=stage1_seeds)
    print(format_ablation(result))
    print(f"written: {args.out}/ablation.md, {args.out}/ablation.json")
    return 0
