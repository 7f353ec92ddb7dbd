"""Hold Ctrl-C and SIGTERM while a checkpoint is written, then deliver them.

A SIGINT that lands inside ``torch.save`` leaves torch's zip writer half-closed: its cleanup raises a
RuntimeError ("unexpected pos ...") that replaces the KeyboardInterrupt, so the user sees a traceback
instead of the one-line "interrupted; newest checkpoint ..." message, and the checkpoint named may be the
one before. SIGTERM (a scheduler's preemption, ``kill``) is held for the same reason: files are written
atomically either way, but a run stopped between the checkpoint and its ``.sha256`` or ``backbone.pt``
loses the step it had just paid for.

`sigterm_interrupts` turns SIGTERM into `Terminated`, a KeyboardInterrupt, for the duration of `cdface train`:
the run then ends as Ctrl-C ends it (the same cleanup, the same one-line message naming the newest checkpoint
and the command that continues it), instead of dying silently.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held(signals: tuple[int, ...] = HELD) -> Iterator[None]:
    """Record `signals` arriving inside the block and re-raise each, once, after it (with the old handlers back).

    Only the main thread may install handlers; elsewhere the block runs unprotected. A signal whose old
    handler ignored it stays ignored; one whose old handler was the default (SIGTERM) ends the process after
    the block, as it would have inside it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, _frame) -> None:
        if signum not in pending:
            pending.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)  # now with the old handler: KeyboardInterrupt for SIGINT


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program was, as Ctrl-C raises KeyboardInterrupt."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block SIGTERM raises `Terminated` (main thread only; elsewhere nothing changes); the old
    handler is back after it. `signals_held` still holds it while a checkpoint is written, then delivers it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, _frame) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
