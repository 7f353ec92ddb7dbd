"""A bad training step is skipped, and leaves no trace: the one place that decides and counts it.

A step is bad when its loss (on any rank) is not finite, or, under fp16's gradient scaler, when a gradient
overflowed. A skipped step changes no parameter, no buffer (BatchNorm statistics and their counter, a margin's
running values), no optimizer moment and no optimizer step counter, so the next applied step is the one a run
that never had the bad step would apply. ``TrainStep`` (train/step.py) skips with ``RunningBuffers`` and
``OptimizerStep``; ``fit`` reads ``BadSteps`` at logging and checkpoint steps and stops a run that keeps failing.

Without a host read in the steady state: torch's fused optimizers take a device flag ``found_inf`` and skip
inside the kernel (fused AdamW also takes its step counter back). Two torch behaviours need care:

* fused SGD allocates its momentum buffers with ``empty_like`` on its first step and the kernel returns early
  on ``found_inf``: a skipped *first* step would keep uninitialised memory as momentum. So until the optimizer
  has applied one step, the flag is read on the host and a bad step never reaches the optimizer. This is the
  first step of every run, resume and ``init_from`` stage, and with fp16 the scaler's first overflowing steps.
* ``GradScaler.unscale_`` records its ``found_inf`` once and ``step`` does not look again: the bad flag is put
  into the gradients (a NaN) before anything unscales them (``unscale_`` runs before clipping), never after.

An optimizer that is not fused reads the flag on the host at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


class BadSteps:
    """Device-side account of bad steps (a non-finite loss, or an update that made the weights non-finite).

    ``record`` adds a step's flag without a host read; ``read`` (logging/checkpoint steps) returns
    (bad steps since the last read, the step at which ``limit`` bad steps in a row were first reached or
    None) and is the only host read.
    """

    def __init__(self, device: torch.device, limit: int) -> None:
        self.limit = limit
        # [bad steps since the last read, current streak, step where the streak reached the limit (-1: never),
        #  last bad step (-1: none)]
        self._state = torch.tensor([0, 0, -1, -1], dtype=torch.int64, device=device)

    def record(self, bad: Tensor, step: int) -> None:
        bad = bad.to(torch.int64)
        count, streak, stop_at, last = self._state.unbind()
        streak = (streak + 1) * bad
        stop_at = torch.where((stop_at < 0) & (streak >= self.limit), step, stop_at)
        last = torch.where(bad > 0, step, last)
        self._state = torch.stack([count + bad, streak, stop_at, last])

    def read(self) -> tuple[int, int | None, int]:
        """(bad steps since the last read, step where the limit was reached or None, last bad step or -1)."""
        count, _, stop_at, last = self._state.tolist()
        self._state[0] = 0
        return count, (stop_at if stop_at >= 0 else None), last


class RunningBuffers:
    """Every buffer of ``modules`` (BatchNorm's running statistics and batch counter, a margin's running values)
    as it was before a step's forwards: ``restore(bad)`` puts them back on the device when the step is bad."""

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.buffers = [b for module in modules for b in module.buffers()]
        self.saved = [b.detach().clone() for b in self.buffers]

    @torch.no_grad()
    def restore(self, bad: Tensor) -> None:
        for buffer, before in zip(self.buffers, self.saved, strict=True):
            buffer.copy_(torch.where(bad, before, buffer))


class OptimizerStep:
    """``step(bad, clip)``: clip the gradients, then step ``optimizer`` (through ``scaler`` when it is enabled)
    unless the device flag ``bad`` (a bool scalar) is set; then clear the gradients.

    ``clip`` (optional) clips the unscaled gradients in place. ``reads_host``: whether the next step reads
    the flag on the host (an optimizer that is not fused, or one that has not applied a step yet).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self.optimizer, self.scaler = optimizer, scaler
        self.fused = all(group.get("fused") for group in optimizer.param_groups)
        self.started = False  # the optimizer has applied a step: its state exists

    @property
    def reads_host(self) -> bool:
        return not (self.fused and self.started)

    def step(self, bad: Tensor, clip: Callable[[], None] | None = None) -> None:
        optimizer, scaler = self.optimizer, self.scaler
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        on_host = self.reads_host
        if scaler.is_enabled():
            # before unscale_ (which records found_inf once): a bad loss reaches the scaler through the gradients
            torch._foreach_add_(grads, torch.where(bad, float("nan"), 0.0))
            if clip is not None or on_host:
                scaler.unscale_(optimizer)
            if clip is not None:
                clip()
            if on_host:
                # the scaler's verdict, read here: an overflow, or the bad flag put into the gradients above
                skip = bool(bad) or not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
                if not skip:
                    scaler.step(optimizer)
                    self.started = True
            else:
                scaler.step(optimizer)  # fused: the kernel skips on the scaler's found_inf
            scaler.update()  # a skipped step backs the scale off (found_inf was recorded by unscale_)
        else:
            if clip is not None:
                clip()
            if on_host:
                if not bool(bad):
                    optimizer.step()
                    self.started = True
            else:
                optimizer.found_inf = bad.float()  # the fused kernels' skip flag, as GradScaler passes it
                try:
                    optimizer.step()
                finally:
                    del optimizer.found_inf
        optimizer.zero_grad(set_to_none=True)


__all__ = ["BadSteps", "OptimizerStep", "RunningBuffers"]
