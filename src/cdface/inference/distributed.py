"""Multi-process feature extraction: `torchrun --nproc_per_node=G -m cdface eval ...`.

Each rank embeds a contiguous block of the image list, made of whole batches (rank r: batches
``[r * B // G, (r + 1) * B // G)`` of the B batches a single process would run), then the blocks are all-gathered
in rank order, which is the original order. Every batch is the single-process batch (same images, same size),
so the features are bit-identical to a one-process run with the same batch size (convolution kernels may round
differently for another batch composition, which is why the split is by batches, not by images).
Every rank receives the features and runs the (deterministic) scoring, which keeps targets that extract several
lists in lock step; only rank 0 prints and writes results. Each rank logs its images/s on stderr.

The process group is torchrun's (env://): NCCL with each rank on ``cuda:LOCAL_RANK``, gloo on CPU.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cdface.collectives import all_gather_rows, rank_and_world

__all__ = ["eval_process_group", "shard_bounds", "sharded_extract", "is_main_process"]


def eval_process_group(device: str | None, timeout_s: float = 1800.0) -> tuple[int, int, str | None]:
    """Join torchrun's process group when ``WORLD_SIZE > 1``; returns (rank, world size, device for this rank).

    With CUDA, ``device`` None or "cuda" becomes ``cuda:LOCAL_RANK`` (one GPU per process).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    from cdface.process_group import init_distributed

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        if device in (None, "cuda"):
            device = f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    info = init_distributed("cuda" if cuda else "cpu", timeout_s=timeout_s)
    return info.rank, info.world_size, device


def is_main_process() -> bool:
    """Rank 0, or no process group."""
    return rank_and_world()[0] == 0


def shard_bounds(n: int, rank: int, world: int, batch_size: int = 1) -> tuple[int, int]:
    """[start, stop) of rank's contiguous block of ``n`` items: whole batches of ``batch_size`` are dealt out
    (block sizes differ by at most one batch), so every batch holds the very images of the single-process run."""
    batches = -(-n // batch_size)
    return min(n, rank * batches // world * batch_size), min(n, (rank + 1) * batches // world * batch_size)


def sharded_extract(local_extract: Callable[..., Any], embedder: Any, dataset: Dataset, batch_size: int,
                    num_workers: int, progress: bool, desc: str) -> Any:
    """Run ``local_extract`` on this rank's block of ``dataset`` and all-gather the features in order.

    Returns the same ``Features`` a single process returns: rows in dataset order, ``failed`` as dataset
    indices, every rank's error messages, and ``seconds`` = the slowest rank's extraction time.
    """
    rank, world = rank_and_world()
    n = len(dataset)
    start, stop = shard_bounds(n, rank, world, batch_size)
    local = local_extract(embedder, _Block(dataset, start, stop), batch_size, num_workers, progress,
                          f"{desc} [rank {rank}/{world}]")
    rate = (stop - start) / local.seconds if local.seconds > 0 else float("nan")
    print(f"cdface eval [rank {rank}/{world}] {desc}: {stop - start} images in {local.seconds:.1f} s "
          f"({rate:.1f} images/s)", file=sys.stderr, flush=True)
    meta = [None] * world
    torch.distributed.all_gather_object(meta, {
        "dim": int(local.plain.shape[1]), "flipped": local.flipped is not None, "seconds": local.seconds,
        "failed": [start + i for i in local.failed], "errors": local.errors,
    })
    dim = max(m["dim"] for m in meta)
    flipped = any(m["flipped"] for m in meta)
    # NCCL gathers device tensors, gloo host tensors
    device = embedder.model.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")

    def gather(rows: np.ndarray | None) -> np.ndarray:
        block = np.zeros((stop - start, dim), np.float32) if rows is None or rows.shape[1] != dim else rows
        out, _ = all_gather_rows(torch.from_numpy(np.ascontiguousarray(block)).to(device))
        return out.cpu().numpy()

    plain = gather(local.plain)
    flip = gather(local.flipped) if flipped else None
    return type(local)(plain=plain, flipped=flip, failed=[i for m in meta for i in m["failed"]],
                       errors=[e for m in meta for e in m["errors"]], seconds=max(m["seconds"] for m in meta))


class _Block(Dataset):
    """Items ``[start, stop)`` of a dataset, re-indexed from 0 (the datasets yield their own index first)."""

    def __init__(self, dataset: Dataset, start: int, stop: int) -> None:
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[self.start + index]
        return (item[0] - self.start, *item[1:])
