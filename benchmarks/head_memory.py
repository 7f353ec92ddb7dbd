"""Per-GPU memory of the margin head at face-recognition scale (the formula of cdface.parallel.memory).

    PYTHONPATH=src python benchmarks/head_memory.py [--batch 128] [--optimizer sgd] [--dtype fp32]

Rows: 85k (MS1MV2), 360k (Glint360K), 2M (WebFace42M), 10M identities, sharded over 1, 8, 32 GPUs, with
Partial FC rates 1, 0.3, 0.1. ``--batch`` is per GPU (the logits see the global batch, batch x world).
The formula is checked against real tensors in tests/parallel/test_parallel_head.py.
"""

from __future__ import annotations

import argparse

from cdface.parallel.memory import format_bytes, head_memory

CLASSES = (85_742, 360_232, 2_059_906, 10_000_000)
WORLDS = (1, 8, 32)
RATES = (1.0, 0.3, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="batch per GPU")
    parser.add_argument("--embedding-size", type=int, default=512)
    parser.add_argument("--optimizer", choices=("sgd", "adamw", "none"), default="sgd")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="logits dtype")
    args = parser.parse_args()

    header = ("classes", "GPUs", "r", "C/GPU", "S/step", "weights", "optimizer", "gradient", "logits", "total")
    rows = []
    for classes in CLASSES:
        for world in WORLDS:
            for rate in RATES:
                m = head_memory(
                    classes, world, rate, args.batch * world, args.embedding_size, args.dtype, args.optimizer
                )
                rows.append(
                    (
                        f"{classes:,}",
                        str(world),
                        f"{rate:g}",
                        f"{m.shard_classes:,}",
                        f"{m.sampled_classes:,}",
                        *(format_bytes(v) for v in (m.weight, m.optimizer, m.gradient, m.logits, m.total)),
                    )
                )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    print(
        f"per-GPU head memory: batch {args.batch}/GPU, D={args.embedding_size}, "
        f"optimizer {args.optimizer}, logits {args.dtype} (fwd + bwd copies)"
    )
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
