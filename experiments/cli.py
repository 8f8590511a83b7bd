"""What every entry point shares: a failure the user can fix is one line and an exit code,
never a traceback (unless --debug asks for it).

`experiments.run`, `scripts.evaluate`, `scripts.predict`, `scripts.make_dataset` and
`scripts.detection_auc` wrap their work in `guarded`; which errors count as the user's is
decided in one place, `anomaly_jax.errors.user_error`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and the libraries' own log lines")


def guarded(body: Callable[[], int], *, debug: bool,
            on_error: Callable[[BaseException], None] | None = None) -> int:
    """Runs `body`; a user's error (or Ctrl-C) becomes `error: ...` on stderr and its exit
    code. `on_error` runs first (e.g. to tell the other processes of a run)."""
    from anomaly_jax.errors import exit_code, user_error
    if not debug:
        # Orbax logs an asynchronous save's failure from each of its threads, with a
        # traceback each; the error itself reaches us, and is reported once, below. asyncio
        # does the same for the failed write's coroutine when it is collected before Orbax
        # reads its result ("Task exception was never retrieved": seen under load, disk full).
        logging.getLogger("absl").setLevel(logging.CRITICAL)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        sys.unraisablehook = _quiet_closed_event_loops
    try:
        return body()
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 -- bugs are re-raised below
        error = user_error(e)
        if error is None or debug:
            raise
        if on_error is not None:
            on_error(error)
        code = exit_code(error)
        # A run stopped by a signal did what was asked of it: not an "error".
        print(f"{'' if code >= 128 else 'error: '}{error}", file=sys.stderr, flush=True)
        return code


def _quiet_closed_event_loops(unraisable, _default=sys.unraisablehook) -> None:
    """Drops TensorStore's late callbacks into the event loop Orbax closed after a failed save
    (dozens of identical 'Event loop is closed' tracebacks); anything else is printed."""
    if (unraisable.exc_type is RuntimeError
            and str(unraisable.exc_value) == "Event loop is closed"):
        return
    _default(unraisable)
