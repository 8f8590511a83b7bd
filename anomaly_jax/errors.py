"""The errors a user can cause (bad config, bad data, a busy or broken workdir, a diverged run).

Entry points catch `USER_ERRORS` and print the message as one line instead of a traceback;
every other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

from anomaly_jax.checkpoint import CheckpointError, WorkdirBusy
from anomaly_jax.config import ConfigError
from anomaly_jax.data import DataError
from anomaly_jax.train import NonFiniteLoss

USER_ERRORS = (ConfigError, DataError, CheckpointError, WorkdirBusy, NonFiniteLoss,
               FileNotFoundError)


def exit_code(error: BaseException) -> int:
    """1 for a run that failed (diverged), 2 for input the user must fix."""
    return 1 if isinstance(error, NonFiniteLoss) else 2
