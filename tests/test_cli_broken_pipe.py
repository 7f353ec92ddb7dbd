"""`cdface models known | head`: a reader that closes the pipe early is not a user error (no
"error: Broken pipe" line, exit 141 = 128 + SIGPIPE as for any Unix filter cut off)."""

from __future__ import annotations

import sys

from cdface.cli import main


class _ClosedPipe:
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_is_not_reported_as_an_error(monkeypatch, capsys):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["models", "known"]) == 141
    assert "error" not in capsys.readouterr().err
