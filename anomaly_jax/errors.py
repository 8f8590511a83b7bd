"""The errors a user can cause (bad config, bad data, a busy or broken workdir, a diverged run).

Every user-facing error class is defined here, and this module imports nothing from
anomaly_jax, so any module can raise them. Entry points catch `USER_ERRORS` and print the
message as one line instead of a traceback; every other exception is a bug and keeps its
traceback.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad override or config value; its message is one line meant for the user."""


class DataError(ValueError):
    """Bad or missing data; the message is one line naming the file (and row) at fault."""


class UnreadableImage(DataError):
    """An image file Pillow cannot decode; `reason` says why (empty, truncated, ...)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # keeps it picklable across grain worker processes
        return (UnreadableImage, (self.path, self.reason))


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a checkpoint that does not belong to this config."""


class WorkdirBusy(RuntimeError):
    """Another live process holds the workdir."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the run stopped before saving it."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, WorkdirBusy, NonFiniteLoss,
               FileNotFoundError)


def exit_code(error: BaseException) -> int:
    """1 for a run that failed (diverged), 2 for input the user must fix."""
    return 1 if isinstance(error, NonFiniteLoss) else 2
