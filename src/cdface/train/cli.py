"""`cdface train` and `cdface quickstart`."""

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
