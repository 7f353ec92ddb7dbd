"""Atomic, checksummed checkpoints: a killed run never leaves a half-written file that looks valid.

Write order: a temporary file beside it -> fsync -> rename to `<name>.pt` -> fsync the folder
(`cdface.files.atomic_write`); then the sha256 sidecar `<name>.pt.sha256` the same way. A checkpoint counts
only when its sidecar exists and matches, so a kill between the two renames, or a truncated file, is skipped
by `resume: auto` (and by `init_from` and `cdface eval` given a run folder). A state holding a NaN or an
infinity (weights, optimizer moments, scores) is never written: every checkpoint on disk is one a run can
continue from.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import torch

from cdface.data.fingerprint import DataFingerprint
from cdface.errors import CdfaceError, FormatError
from cdface.files import atomic_write, load_weights
from cdface.run_files import (  # checkpoint discovery lives below train/ and inference/, which both use it
    checkpoint_path,
    is_valid,
    latest_valid_checkpoint,
    list_checkpoints,
    newest_valid_checkpoint,
    step_of,
)

# writing and reading here; finding a run's checkpoints is cdface.run_files', offered here too for train/
__all__ = ["CheckpointError", "NonFiniteState", "save_checkpoint", "load_checkpoint", "set_aside_newer",
           "check_data_fingerprint", "nonfinite_entries", "checkpoint_path", "is_valid", "latest_valid_checkpoint",
           "list_checkpoints", "newest_valid_checkpoint", "step_of"]

log = logging.getLogger("cdface.train")


class CheckpointError(CdfaceError):
    """A checkpoint could not be written or read."""


class NonFiniteState(CheckpointError):
    """``save_checkpoint`` refused a state holding NaN or inf; ``entries``: the dotted keys of those tensors."""

    def __init__(self, message: str, entries: list[str]) -> None:
        super().__init__(message)
        self.entries = entries


def nonfinite_entries(state: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the floating-point tensors in `state` (nested dicts, lists, tuples) holding NaN or inf."""
    if isinstance(state, torch.Tensor):
        return [prefix or "<tensor>"] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, float):
        return [] if state == state and abs(state) != float("inf") else [prefix or "<value>"]
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    found: list[str] = []
    for key, value in items:
        found += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int, keep: int = 3) -> Path:
    """Write `state` atomically; on failure the previous checkpoints are untouched and the error says so.

    A state with a non-finite floating-point value raises NonFiniteState (a CheckpointError) and writes
    nothing; this is the one scan of the state per checkpoint (the trainer catches it and goes on).
    """
    directory = Path(directory)
    path = checkpoint_path(directory, step)
    bad = nonfinite_entries(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteState(f"refusing to write checkpoint {path}: non-finite values in {shown}", bad)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    try:
        atomic_write(path, payload)
        digest = hashlib.sha256(payload).hexdigest()
        atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n")
    except OSError as exc:
        previous = latest_valid_checkpoint(directory)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {path} ({exc.strerror or exc}); {kept}") from exc
    _prune(directory, keep, step)
    return path


def _prune(directory: Path, keep: int, current_step: int) -> None:
    """Keep the `keep` newest checkpoints up to `current_step` (the one just written among them)."""
    if keep <= 0:
        return
    older = [p for p in list_checkpoints(directory) if step_of(p) <= current_step]
    for old in older[:-keep]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)


def set_aside_newer(directory: str | Path, step: int) -> Path | None:
    """Move checkpoints of steps after `step` into `abandoned_after_<step>/`: resuming from an older
    checkpoint starts a new history, and `resume: auto` must not jump back into the abandoned one."""
    directory = Path(directory)
    newer = [p for p in list_checkpoints(directory) if step_of(p) > step]
    if not newer:
        return None
    target = directory / f"abandoned_after_{step:08d}"
    target.mkdir(exist_ok=True)
    for path in newer:
        for part in (path, path.with_name(path.name + ".sha256")):
            if part.exists():
                os.replace(part, target / part.name)
    return target


def check_data_fingerprint(
    state: dict[str, Any], fingerprint: DataFingerprint, path: str | Path, data_path: str, hint: str = ""
) -> bool:
    """Compare the checkpoint's data fingerprint (N, C, label hash; every checkpoint stores one as
    ``data_fingerprint``) with this run's set: CheckpointError naming what differs (then `hint`) for another
    set; True when they match (wherever the set now lives); False for a checkpoint without a fingerprint."""
    saved = DataFingerprint.from_dict(state.get("data_fingerprint"))
    if saved is None:
        return False
    if differences := saved.differences(fingerprint):
        raise CheckpointError(
            f"{path}: belongs to another training set than data.path {data_path}: {'; '.join(differences)}{hint}"
        )
    return True


def load_checkpoint(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Load with `weights_only=True`: a checkpoint that needs arbitrary code is refused, not run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if verify and path.with_name(path.name + ".sha256").exists() and not is_valid(path):
        raise CheckpointError(f"{path}: checksum does not match its .sha256 sidecar (truncated or corrupt)")
    try:
        state = load_weights(path, "a checkpoint written by cdface train")
    except FormatError as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint: {exc.expected}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(state).__name__}")
    return state
