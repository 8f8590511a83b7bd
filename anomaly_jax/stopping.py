"""Graceful stop: SIGTERM (a scheduler's preemption notice) and SIGINT (Ctrl-C) end a run at
the next step with a checkpoint, instead of losing up to a checkpoint interval of work.

`GracefulStop` is a context manager the training loop holds: the first signal only sets a
flag, which the loop reads between steps (`requested`); a second signal stops at once, as
the default handlers would (SIGINT raises KeyboardInterrupt, SIGTERM kills the process).
In a run of several processes every process must stop at the same step, because a save is a
collective: `agreed` asks all of them at a step every process reaches (see train.py) through
JAX's key-value store, and they stop if any of them was signalled.
"""
from __future__ import annotations

import signal
import threading

import jax

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """Turns the first SIGTERM/SIGINT into a request to stop; restores the handlers on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._rounds = 0

    def __enter__(self) -> "GracefulStop":
        # Python delivers signals to the main thread only; elsewhere (a test's worker thread)
        # there is nothing to install and the run simply cannot be stopped this way.
        if threading.current_thread() is threading.main_thread():
            for s in _SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second signal: stop now, as if no handler were set
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agreed(self) -> int | None:
        """The signal to stop on, agreed by every process (this one's in a single process).

        Call it at the same step on every process: it waits for all of them to answer.
        """
        if jax.process_count() == 1:
            return self.signum
        from jax._src import distributed
        client = distributed.global_state.client
        self._rounds += 1
        prefix = f"anomaly_jax/stop/{self._rounds}"
        client.key_value_set(f"{prefix}/{jax.process_index()}", str(self.signum or 0))
        answers = [int(client.blocking_key_value_get(f"{prefix}/{p}", 600_000))
                   for p in range(jax.process_count())]
        signalled = [a for a in answers if a]
        if signalled and self.signum is None:
            self.signum = signalled[0]
        return signalled[0] if signalled else None
