"""Ctrl-C and SIGTERM wait until a checkpoint is whole (train/interrupts.py; the trainer's use in test_train_fit)."""

from __future__ import annotations

import os
import signal

import pytest

from cdface.train.interrupts import signals_held


def test_sigint_inside_the_block_is_raised_after_it(sigint_raises_keyboardinterrupt):
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # give the handler every chance to run inside the block
                pass
            reached_end = True
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_goes_to_the_old_handler_once_after_the_block():
    calls = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert calls == []
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)
