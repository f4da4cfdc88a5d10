"""Exceptions that the command line turns into one-line messages."""

from __future__ import annotations

__all__ = ["ThagpuError", "InputError", "OutputError", "DeviceError", "describe"]


class ThagpuError(Exception):
    """Base class of every error that thagpu reports to a user.

    The command line prints ``str(error)`` on one line and exits non-zero;
    any other exception is a bug and keeps its traceback.
    """


class InputError(ThagpuError, ValueError):
    """An input file or folder cannot be used; the message names it and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OutputError(ThagpuError, OSError):
    """An output could not be written (full disk, no permission...); nothing partial is left."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DeviceError(ThagpuError, RuntimeError):
    """The requested compute device is not available."""


def describe(error: BaseException) -> str:
    """``"Type: first line of the message"`` (``"Type"`` alone when the message is empty), for one-line reports."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
