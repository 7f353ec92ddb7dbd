"""The project's own exception types: every parser raises these, with the file and record/line named."""

from __future__ import annotations


class CdfaceError(Exception):
    """Base class: a clear, user-facing error (the CLI prints it without a traceback)."""


class FormatError(CdfaceError, ValueError):
    """A file does not have the expected layout. The message names the file and record/line."""

    def __init__(self, path: object, where: str | None, expected: str) -> None:
        self.path = str(path)
        self.where = where
        self.expected = expected
        location = f"{self.path}" + (f", {where}" if where else "")
        super().__init__(f"{location}: {expected}")

    def __reduce__(self) -> tuple[type, tuple[str, str | None, str]]:
        # rebuilt from its fields, so the error survives a DataLoader worker -> main process trip
        return (type(self), (self.path, self.where, self.expected))


class UnsafeFileError(CdfaceError, ValueError):
    """A file tried to make us run code (a pickle with a global, a non-weights checkpoint)."""


class ConfigError(CdfaceError, ValueError):
    """A config key is unknown or has the wrong type; the message lists the allowed keys/values."""
