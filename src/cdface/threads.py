"""How many busy threads a process may run: torch intra-op threads plus DataLoader workers <= its cores.

PyTorch starts as many intra-op threads as the machine has cores, and every DataLoader worker is one more
busy process. On a 2-core machine the defaults (2 threads + 2 workers) ran 2-8x slower under load than
1 thread + 1 worker (docs/quickstart.md). ``plan_threads`` splits the cores this process may use (its CPU
affinity and cgroup quota, divided among the processes of this node) between the two.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("cdface")


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # torch intra-op threads of this process
    workers: int  # DataLoader worker processes of this process
    cores: int  # cores this process was given (its node's cores / processes on the node)
    note: str  # what was changed from the request, "" if nothing


def plan_threads(
    requested_workers: int, requested_threads: int = 0, processes_per_node: int = 1, cores: int | None = None
) -> ThreadPlan:
    """Split this process's share of the node's cores between torch threads and loader workers.

    ``requested_threads`` > 0 is taken as given, and so are the workers (the user's choice, even if it
    oversubscribes). With 0 (auto), the workers are capped at ``cores - 1`` and the threads get the rest, so
    threads + workers <= cores (one core: no worker, one thread).
    """
    node_cores = available_cores() if cores is None else cores
    share = max(1, node_cores // max(1, processes_per_node))
    workers = max(0, requested_workers)
    if requested_threads > 0:
        return ThreadPlan(requested_threads, workers, share, "")
    capped = min(workers, share - 1)
    threads = max(1, share - capped)
    note = ""
    if capped != workers:
        note = f"data.num_workers {workers} -> {capped} so that threads + workers <= {share} cores"
    return ThreadPlan(threads, capped, share, note)


@contextlib.contextmanager
def threads_applied(plan: ThreadPlan) -> Iterator[ThreadPlan]:
    """Torch's intra-op threads set to ``plan.threads`` inside the block and restored after it, so a library
    call (``fit``, an evaluation) does not leave its choice behind in the caller's process."""
    previous = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    try:
        yield plan
    finally:
        torch.set_num_threads(previous)


__all__ = ["ThreadPlan", "available_cores", "plan_threads", "threads_applied"]
