"""The errors a user can cause (bad config, bad data, a busy or broken workdir, a diverged run).

Every user-facing error class is defined here, and this module imports nothing from
anomaly_jax, so any module can raise them. Entry points catch `USER_ERRORS` and print the
message as one line instead of a traceback; every other exception is a bug and keeps its
traceback.
"""
from __future__ import annotations

import errno
import signal


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


class StorageError(RuntimeError):
    """The disk refused a write: full, over quota, read-only or not writable by this user."""


class Stopped(Exception):
    """SIGTERM or SIGINT stopped the run after writing a checkpoint (anomaly_jax.stopping)."""

    def __init__(self, signum: int, step: int, workdir: str):
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}; checkpoint {step} is saved in "
                         f"{workdir}/checkpoints; rerun the same command to resume")
        self.signum, self.step, self.workdir = signum, step, workdir


USER_ERRORS = (ConfigError, DataError, CheckpointError, WorkdirBusy, NonFiniteLoss,
               StorageError, Stopped, FileNotFoundError)

# A write the disk refused, as opposed to a bug: these errnos are the user's to fix.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                            errno.EPERM})


def user_error(error: BaseException) -> BaseException | None:
    """The user-facing form of `error` (printed as one line by the entry points), or None
    when it is a bug that keeps its traceback."""
    if isinstance(error, USER_ERRORS):
        return error
    if isinstance(error, KeyboardInterrupt):
        return Interrupted("interrupted (a second Ctrl-C); the last checkpoint written is kept")
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        where = error.filename or "the run directory"
        return StorageError(f"{where}: {error.strerror}; free space or fix the permissions "
                            "(or use another --workdir), then rerun to resume (checkpoints "
                            "already written are not touched)")
    return None


class Interrupted(Exception):
    """A second SIGINT: the run stopped at once, without a new checkpoint."""


def exit_code(error: BaseException) -> int:
    """1 for a run that failed (diverged), 2 for input the user must fix, 128 + the signal
    for a run stopped by one (143 SIGTERM, 130 SIGINT)."""
    if isinstance(error, Stopped):
        return 128 + error.signum
    if isinstance(error, Interrupted):
        return 128 + signal.SIGINT
    return 1 if isinstance(error, (NonFiniteLoss, StorageError)) else 2
