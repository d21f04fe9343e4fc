"""SIGTERM/SIGINT as a polled flag, so training stops at a step boundary and saves first."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], int | None]]:
    """Turn SIGTERM/SIGINT into a polled flag for the duration of the block.

    Yields a function returning the signal number received (None if none). A second SIGINT
    stops at once (KeyboardInterrupt). Outside the main thread, signals are left alone.
    """
    received: list[int] = []

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        log.warning("%s received: stopping after this step", signal.Signals(signum).name)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
