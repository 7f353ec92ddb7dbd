"""`cdface train`, `cdface quickstart` and `cdface ablate`."""

from __future__ import annotations

import argparse
import logging
import os

from cdface.errors import CdfaceError


class DistributedRunError(CdfaceError):
    """A rank lost its peers; the message says how to resume."""


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (torchrun -m cdface train ... for several GPUs)",
        description="Train from CONFIG.yaml; key=value arguments override config keys (e.g. optim.lr=0.01).",
    )
    train.add_argument("config", help="YAML config (see configs/)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, dotted for sections")
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
        help="stage-2 variants x seeds from one shared stage 1 on the synthetic set: accuracy and mechanism metrics",
        description="Train stage 1 once, then every variant for every seed from its checkpoint, evaluate all, "
        "and write ablation.md / ablation.json (mean ± std over seeds, paired difference to ArcFace continued "
        "with a 95%% t-interval, mechanism metrics). Interrupted studies continue where they stopped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ablate.add_argument("--out", default="runs/ablate", help="output folder")
    ablate.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: the quickstart regime (2 cores, ~30 min for 3 seeds x 4 variants); "
                        "gpu: iresnet50, 20k identities, bf16 (one H100/H200)")
    ablate.add_argument("--seeds", default="0,1,2", help="comma-separated stage-2 seeds")
    ablate.add_argument("--variants", default="arcface,cd,closeness,diversity",
                        help="comma-separated, from: " + ", ".join(_variant_names()))
    ablate.add_argument("--scale", type=float, default=1.0, help="shrink data and epochs (e.g. 0.1 for a smoke run)")
    ablate.add_argument("overrides", nargs="*", help="key=value config overrides for every run (e.g. device=cpu)")
    ablate.set_defaults(func=_ablate)


def _variant_names() -> list[str]:
    from cdface.train.ablation import VARIANTS

    return list(VARIANTS)


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def _train(args: argparse.Namespace) -> int:
    from cdface.config import load_config
    from cdface.train.trainer import fit

    _setup_logging()
    cfg = load_config(args.config, args.overrides)
    try:
        result = fit(cfg)
    except RuntimeError as exc:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise
        raise DistributedRunError(
            f"rank {dist.get_rank()}: a collective with the other ranks failed or timed out "
            f"(dist_timeout_s={cfg.dist_timeout_s}); another rank probably died. Restart the whole job with "
            f"resume=auto to continue from the newest checkpoint. Cause: {exc}"
        ) from exc
    print(f"finished at step {result.step}; checkpoint {result.checkpoint}; backbone {result.run_dir / 'backbone.pt'}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from cdface.train.quickstart import format_table, run_quickstart

    _setup_logging()
    outcome = run_quickstart(args.out, scale=args.scale, seed=args.seed)
    print(format_table(outcome["rows"]))
    print(f"report: {outcome['report']}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from cdface.train.ablation import VARIANTS, format_ablation, run_ablation

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise CdfaceError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or not seeds:
        raise CdfaceError(f"--variants/--seeds: unknown {unknown or 'empty list'}; variants: {', '.join(VARIANTS)}")
    _setup_logging()
    from cdface.config import parse_overrides

    result = run_ablation(args.out, preset=args.preset, seeds=seeds, variants=variants, scale=args.scale,
                          overrides=parse_overrides(args.overrides))
    print(format_ablation(result))
    print(f"written: {args.out}/ablation.md, {args.out}/ablation.json")
    return 0
