"""Save a sharded head as one full matrix, resume it on any number of ranks, import insightface shards.

The saved form is world-size free: ``{"format", "num_classes", "embedding_size", "state_dict",
"optimizer_state"}`` where ``state_dict`` uses ``MarginHead``'s keys (``core.weight`` (C, D) and the
margin's buffers), so a sharded run can also be evaluated or continued with the replicated head, and
``optimizer_state`` holds the centres' optimizer rows (SGD ``momentum_buffer``, Adam ``exp_avg``...)
as full (C, D) tensors plus any scalar entries (Adam's ``step``). Saving streams each rank's rows to
rank 0 (point-to-point, one shard in flight at a time); loading memory-maps the file and copies only
this rank's rows (``reshard``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cdface.collectives import is_distributed
from cdface.errors import FormatError
from cdface.files import atomic_writer
from cdface.files import load_weights as _safe_load

from .sharded_head import ShardedMarginHead
from .sharding import reshard, shard_sizes

__all__ = [
    "FORMAT",
    "gather_full_state",
    "load_full_state",
    "save_sharded_head",
    "load_sharded_head",
    "read_full_state",
    "write_full_state",
    "import_insightface",
    "reshard",
]

FORMAT = "cdface.sharded_head.v1"
_WEIGHT_KEY = "core.weight"


def gather_full_state(
    head: ShardedMarginHead, optimizer: torch.optim.Optimizer | None = None, dst: int = 0
) -> dict[str, Any] | None:
    """The full head state on rank ``dst`` (CPU tensors), None on the other ranks. Collective."""
    state_dict = {_WEIGHT_KEY: _gather_rows_to(head.weight.detach(), head, dst)}
    for name, buffer in head.margin.state_dict().items():
        state_dict[f"margin.{name}"] = buffer.detach().cpu().clone()
    optimizer_state: dict[str, Any] = {}
    if optimizer is not None:
        for key, value in sorted(optimizer.state.get(head.weight, {}).items()):
            if _is_row_state(value, head):
                optimizer_state[key] = _gather_rows_to(value, head, dst)
            else:
                optimizer_state[key] = value.detach().cpu().clone() if isinstance(value, Tensor) else value
    if head.rank != dst:
        return None
    return {
        "format": FORMAT,
        "num_classes": head.num_classes,
        "embedding_size": head.embedding_size,
        "state_dict": state_dict,
        "optimizer_state": optimizer_state,
    }


def load_full_state(
    head: ShardedMarginHead, state: Mapping[str, Any], optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Copy this rank's rows of a full state (from any world size) into ``head`` and ``optimizer``."""
    _check_state(state, head, "state")
    weights = state["state_dict"]
    head.load_full_weight(weights[_WEIGHT_KEY])
    margin_state = {k[len("margin.") :]: v for k, v in weights.items() if k.startswith("margin.")}
    if margin_state:
        head.margin.load_state_dict(margin_state)
    if optimizer is None or not state.get("optimizer_state"):
        return
    if not any(p is head.weight for group in optimizer.param_groups for p in group["params"]):
        raise ValueError("the optimizer does not hold the sharded head's weight")
    device = head.weight.device
    rows: dict[str, Any] = {}
    for key, value in state["optimizer_state"].items():
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == head.num_classes:
            rows[key] = reshard(value, head.rank, head.world).to(device)
        else:
            rows[key] = value.clone() if isinstance(value, Tensor) else value
    optimizer.state[head.weight] = rows


def write_full_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Atomic ``torch.save`` of a full state (`cdface.files.atomic_writer`: temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        torch.save(dict(state), handle)


def read_full_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a saved full state, memory-mapped (only the rows a rank copies are read from disk)."""
    state = _safe_load(path, mmap=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FormatError(path, None, f"a sharded-head checkpoint (format {FORMAT!r})")
    return state


def save_sharded_head(
    path: str | os.PathLike[str], head: ShardedMarginHead, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Gather to rank 0 and write ``path`` there. Collective: every rank must call it."""
    state = gather_full_state(head, optimizer, dst=0)
    if state is not None:
        write_full_state(path, state)
    if is_distributed(head.group):
        dist.barrier(group=head.group)


def load_sharded_head(
    path: str | os.PathLike[str], head: ShardedMarginHead, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Resume ``head`` (and the centres' optimizer state) from ``path``, whatever world size saved it."""
    state = read_full_state(path)
    try:
        load_full_state(head, state, optimizer)
    except ValueError as exc:
        raise FormatError(path, None, str(exc)) from exc


def import_insightface(source: str | os.PathLike[str], num_classes: int | None = None) -> dict[str, Any]:
    """Assemble insightface arcface_torch per-rank head files in ``source`` into one full state.

    Recognised layouts (rank r = 0..W-1, rows in insightface's order, which is ``shard_range``'s):
    ``softmax_fc_gpu_{r}.pt`` (PartialFC module state_dict with ``weight``), ``checkpoint_gpu_{r}.pt``
    (``state_dict_softmax_fc`` plus ``state_optimizer``: the head's momentum is taken from the last
    parameter of the last group when its shape matches) and the older
    ``rank_{r}_softmax_weight.pt`` / ``rank_{r}_softmax_weight_mom.pt`` tensors.
    """
    source = Path(source)
    for pattern, reader in _INSIGHTFACE_LAYOUTS:
        files = _rank_files(source, pattern)
        if files:
            weights, optimizer_rows = zip(*(reader(f) for f in files))
            break
    else:
        raise FormatError(
            source,
            None,
            "insightface head shards: softmax_fc_gpu_{rank}.pt, "
            "checkpoint_gpu_{rank}.pt or rank_{rank}_softmax_weight.pt",
        )
    full = torch.cat(weights)
    sizes = [w.shape[0] for w in weights]
    if num_classes is not None and full.shape[0] != num_classes:
        raise FormatError(source, None, f"{num_classes} classes in total, found {full.shape[0]}")
    if sizes != shard_sizes(full.shape[0], len(sizes)):
        raise FormatError(source, None, f"shard sizes {shard_sizes(full.shape[0], len(sizes))}, found {sizes}")
    optimizer_state: dict[str, Any] = {}
    keys = set(optimizer_rows[0])
    if keys and all(set(rows) == keys for rows in optimizer_rows):
        optimizer_state = {k: torch.cat([rows[k] for rows in optimizer_rows]) for k in sorted(keys)}
    return {
        "format": FORMAT,
        "num_classes": int(full.shape[0]),
        "embedding_size": int(full.shape[1]),
        "state_dict": {_WEIGHT_KEY: full},
        "optimizer_state": optimizer_state,
    }


def _read_softmax_fc(path: Path) -> tuple[Tensor, dict[str, Tensor]]:
    return _weight_from(_safe_load(path), path, "a PartialFC state_dict with 'weight'"), {}


def _read_checkpoint_gpu(path: Path) -> tuple[Tensor, dict[str, Tensor]]:
    state = _safe_load(path)
    if not isinstance(state, dict) or "state_dict_softmax_fc" not in state:
        raise FormatError(path, None, "an insightface checkpoint with 'state_dict_softmax_fc'")
    weight = _weight_from(state["state_dict_softmax_fc"], path, "'state_dict_softmax_fc' with 'weight'")
    return weight, _head_optimizer_rows(state.get("state_optimizer"), weight)


def _read_rank_weight(path: Path) -> tuple[Tensor, dict[str, Tensor]]:
    weight = _safe_load(path)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise FormatError(path, None, "a (classes, embedding_size) tensor")
    momentum_path = path.with_name(path.name.replace("_softmax_weight.pt", "_softmax_weight_mom.pt"))
    if not momentum_path.exists():
        return weight, {}
    momentum = _safe_load(momentum_path)
    if not isinstance(momentum, Tensor) or momentum.shape != weight.shape:
        raise FormatError(momentum_path, None, f"a momentum tensor of shape {tuple(weight.shape)}")
    return weight, {"momentum_buffer": momentum}


_INSIGHTFACE_LAYOUTS = (
    (re.compile(r"softmax_fc_gpu_(\d+)\.pt"), _read_softmax_fc),
    (re.compile(r"checkpoint_gpu_(\d+)\.pt"), _read_checkpoint_gpu),
    (re.compile(r"rank_(\d+)_softmax_weight\.pt"), _read_rank_weight),
)


def _rank_files(source: Path, pattern: re.Pattern[str]) -> list[Path]:
    if not source.is_dir():
        raise FormatError(source, None, "a folder of insightface per-rank files")
    found = {int(m.group(1)): p for p in source.iterdir() if (m := pattern.fullmatch(p.name))}
    if found and sorted(found) != list(range(len(found))):
        raise FormatError(source, None, f"ranks 0..{len(found) - 1} for {pattern.pattern}, found {sorted(found)}")
    return [found[r] for r in range(len(found))]


def _weight_from(state: Any, path: Path, expected: str) -> Tensor:
    weight = state.get("weight") if isinstance(state, Mapping) else None
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise FormatError(path, None, expected)
    return weight


def _head_optimizer_rows(optimizer_state: Any, weight: Tensor) -> dict[str, Tensor]:
    """The head's per-row optimizer tensors in an optimizer state_dict: its last parameter's entry."""
    if not isinstance(optimizer_state, Mapping) or not optimizer_state.get("param_groups"):
        return {}
    params = optimizer_state["param_groups"][-1].get("params") or []
    entry = optimizer_state.get("state", {}).get(params[-1]) if params else None
    if not isinstance(entry, Mapping):
        return {}
    return {k: v for k, v in entry.items() if isinstance(v, Tensor) and v.shape == weight.shape}


def _is_row_state(value: Any, head: ShardedMarginHead) -> bool:
    return isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == head.num_local


def _gather_rows_to(shard: Tensor, head: ShardedMarginHead, dst: int) -> Tensor | None:
    """Rank ``dst`` receives every rank's rows in turn (one shard buffer on the device at a time)."""
    if not is_distributed(head.group):
        return shard.detach().cpu().clone()
    global_rank = _global_rank_fn(head.group)
    if head.rank != dst:
        dist.send(shard.detach().contiguous(), dst=global_rank(dst), group=head.group)
        return None
    sizes = shard_sizes(head.num_classes, head.world)
    full = torch.empty((head.num_classes, *shard.shape[1:]), dtype=shard.dtype)
    start = 0
    for rank, size in enumerate(sizes):
        if rank == dst:
            full[start : start + size] = shard.detach().cpu()
        else:
            buffer = shard.new_empty((size, *shard.shape[1:]))
            dist.recv(buffer, src=global_rank(rank), group=head.group)
            full[start : start + size] = buffer.cpu()
        start += size
    return full


def _global_rank_fn(group: Any) -> Any:
    if group is None:
        return lambda rank: rank
    return lambda rank: dist.get_global_rank(group, rank)


def _check_state(state: Mapping[str, Any], head: nn.Module, where: str) -> None:
    if state.get("format") != FORMAT:
        raise ValueError(f"{where}: not a sharded-head state (format {FORMAT!r})")
    weight = state["state_dict"].get(_WEIGHT_KEY)
    expected = (head.num_classes, head.embedding_size)
    if not isinstance(weight, Tensor) or tuple(weight.shape) != expected:
        found = tuple(weight.shape) if isinstance(weight, Tensor) else None
        raise ValueError(f"{where}: head weight of shape {expected} expected, found {found}")
