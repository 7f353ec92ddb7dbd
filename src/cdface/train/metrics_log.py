"""Progress a person can follow: a line every N steps, a JSONL history, TensorBoard when installed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from cdface.files import atomic_write

log = logging.getLogger("cdface.train")


class MetricsLog:
    """``start_step``: the step the run (re)starts from; the ETA uses this process's own pace. The records after
    it (a resumed run's abandoned steps) were dropped by ``write_run_config`` (train/run_folder.py), which runs
    first: this log only appends."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self.start_step = start_step
        path = run_dir / "metrics.jsonl"
        self._file = open(path, "a") if enabled else None  # noqa: SIM115
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                log.info(
                    "TensorBoard logging is off: the tensorboard package is not installed "
                    "(pip install \"cdface[tensorboard]\", or set tensorboard: false); curves go to training.png"
                )
                self._tb = None

    def log(self, record: dict[str, Any], total_steps: int | None = None) -> None:
        if not self.enabled:
            return
        self.history.append(record)
        assert self._file is not None
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        step = int(record["step"])
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
        if "ce_loss" in record:
            eta = ""
            if total_steps:
                rate = (time.perf_counter() - self.start) / max(step - self.start_step, 1)
                eta = f" eta {max(total_steps - step, 0) * rate / 60:.1f} min"
            log.info(
                "epoch %.2f step %d/%s ce %.4f cd %.4f lr %.5f %.1f samples/s%s",
                record["epoch"], step, total_steps or "?", record["ce_loss"], record["cd_loss"],
                record["lr"], record["samples_per_s"], eta,
            )
        else:
            log.info("step %d %s", step, " ".join(f"{k} {v:.5f}" for k, v in record.items() if k != "step"))

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """TensorBoard histogram (the difficulty scores, whose p-quantile splits easy from hard)."""
        if self._tb is not None:
            self._tb.add_histogram(tag, values, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the JSONL records of steps <= `step`, atomically (a resumed run logs the later steps again; a line
    that is not a record, e.g. cut by a kill, goes too)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    if len(kept) != len(lines):
        atomic_write(path, "".join(kept))
