"""Where a run's checkpoints are and which one counts: `ckpt_<step:08d>.pt` files, each valid only when its
`.sha256` sidecar matches (written by `cdface.train.checkpoint.save_checkpoint`). The one rule for
`resume=auto`, `init_from=RUN` and `cdface eval --model RUN`; below both train/ and inference/, which use it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from cdface.files import sha256_file

__all__ = ["checkpoint_path", "step_of", "list_checkpoints", "is_valid", "latest_valid_checkpoint",
           "newest_valid_checkpoint"]

_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")
log = logging.getLogger("cdface.train")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:08d}.pt"


def step_of(path: Path) -> int:
    return int(_CKPT_RE.match(path.name).group(1))


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first (by step), whatever their validity."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _CKPT_RE.match(p.name)]
    return sorted(found, key=step_of)


def is_valid(path: Path) -> bool:
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file() or not sidecar.is_file():
        return False
    expected = sidecar.read_text(errors="replace").split()  # a damaged sidecar is a mismatch, not a crash
    return bool(expected) and expected[0] == sha256_file(path)


def latest_valid_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint of a checkpoints folder whose sha256 sidecar matches; newer ones that do not
    (truncated, corrupt, or their sidecar missing) are skipped with a warning naming them."""
    for path in reversed(list_checkpoints(directory)):
        if is_valid(path):
            return path
        log.warning("%s: skipped: no .sha256 sidecar matches it (truncated, corrupt, or copied without it)", path)
    return None


def newest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a run folder stands for: the newest valid one in `<run_dir>/checkpoints/`, else in
    `run_dir` itself (a checkpoints folder given directly). The one rule for `resume=auto`'s folder, `init_from=RUN`
    and `cdface eval --model RUN` (`latest_valid_checkpoint`'s checksum check included)."""
    run_dir = Path(run_dir)
    return latest_valid_checkpoint(run_dir / "checkpoints") or latest_valid_checkpoint(run_dir)
