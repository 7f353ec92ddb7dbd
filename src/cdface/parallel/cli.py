"""`cdface bench memory` (per-GPU memory of a sharded / Partial FC head) and
`cdface parallel import-insightface` (per-rank insightface head files -> one world-size-free file)."""

from __future__ import annotations

import argparse
from typing import Any

from .memory import HeadMemory, backbone_parameters, format_bytes, head_memory

__all__ = ["register", "memory_report"]


def register(subparsers: Any) -> None:
    """Add the `bench` and `parallel` subcommands to the `cdface` parser."""
    bench = subparsers.add_parser("bench", help="resource estimates (memory of the margin head)")
    bench.set_defaults(func=_help_of(bench))
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    memory = bench_sub.add_parser(
        "memory",
        help="per-GPU memory of a sharded / Partial FC margin head",
        description="Per-GPU memory of the margin head (weights, optimizer state, gradient, logits) "
        "for C classes sharded over G GPUs with Partial FC rate r, from the formula in docs/scale.md.",
    )
    memory.add_argument("--classes", type=int, required=True, help="number of identities C")
    memory.add_argument("--world", type=int, default=1, help="GPUs the head is sharded over (default 1)")
    memory.add_argument("--sample-rate", type=float, default=1.0, help="Partial FC rate r in (0, 1]")
    memory.add_argument("--batch", type=int, default=128, help="batch per GPU (default 128)")
    memory.add_argument("--model", default=None, help="add a registered backbone's weights/grad/optimizer")
    memory.add_argument("--embedding-size", type=int, default=512)
    memory.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="dtype of the logits")
    memory.add_argument("--optimizer", choices=("sgd", "adamw", "none"), default="sgd")
    memory.set_defaults(func=_run_memory)

    parallel = subparsers.add_parser("parallel", help="model-parallel head utilities")
    parallel.set_defaults(func=_help_of(parallel))
    parallel_sub = parallel.add_subparsers(dest="parallel_command", metavar="ACTION")
    imp = parallel_sub.add_parser(
        "import-insightface",
        help="join insightface's per-rank head files into one cdface head file",
        description="Read softmax_fc_gpu_{rank}.pt, checkpoint_gpu_{rank}.pt or rank_{rank}_softmax_weight.pt "
        "(+ _mom) files from SOURCE and write one full head state (any world size can resume it).",
    )
    imp.add_argument("source", help="folder with the per-rank files")
    imp.add_argument("output", help="file to write (torch.save, weights only)")
    imp.add_argument("--classes", type=int, default=None, help="expected number of classes (checked)")
    imp.set_defaults(func=_run_import)


def memory_report(memory: HeadMemory, embedding_size: int, dtype: str, optimizer: str, model: str | None) -> str:
    """The table `cdface bench memory` prints."""
    sampling = (
        f"Partial FC r={memory.sample_rate:g} ({memory.sampled_classes:,} centres per step)"
        if memory.sampled_classes < memory.shard_classes
        else "all centres every step"
    )
    lines = [
        f"{memory.num_classes:,} classes over {memory.world} GPU(s): {memory.shard_classes:,} per GPU, {sampling}",
        f"global batch {memory.batch:,}, embedding {embedding_size}, logits {dtype}, optimizer {optimizer}",
        "",
        f"{'per GPU':<24}{'bytes':>16}{'size':>14}",
    ]
    rows = [
        ("head weights", memory.weight),
        ("optimizer state", memory.optimizer),
        ("gradient", memory.gradient),
        ("logits (fwd + bwd)", memory.logits),
    ]
    if model:
        rows.append((f"backbone {model}", memory.backbone))
    rows.append(("total", memory.total))
    lines += [f"{name:<24}{count:>16,}{format_bytes(count):>14}" for name, count in rows]
    return "\n".join(lines)


def _run_memory(args: argparse.Namespace) -> int:
    params = backbone_parameters(args.model, args.embedding_size) if args.model else 0
    memory = head_memory(
        args.classes,
        args.world,
        args.sample_rate,
        args.batch * args.world,
        embedding_size=args.embedding_size,
        dtype=args.dtype,
        optimizer=args.optimizer,
        backbone_params=params,
    )
    print(memory_report(memory, args.embedding_size, args.dtype, args.optimizer, args.model))
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from .checkpoint import import_insightface, write_full_state

    state = import_insightface(args.source, num_classes=args.classes)
    write_full_state(args.output, state)
    extra = ", with " + ", ".join(state["optimizer_state"]) if state["optimizer_state"] else ""
    print(f"wrote {args.output}: {state['num_classes']:,} x {state['embedding_size']} centres{extra}")
    return 0


def _help_of(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show
