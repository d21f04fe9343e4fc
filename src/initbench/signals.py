"""SIGTERM/SIGINT as a polled flag, so training stops at a step boundary and saves first;
handlers installed for a block and the previous ones put back after it."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

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

    with handling_signals(handler):
        yield lambda: received[0] if received else None


@contextmanager
def handling_signals(
    handler: Callable[[int, FrameType | None], Any],
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[None]:
    """``handler`` for ``signals`` while the block runs, the previous handlers after it.

    Outside the main thread, where Python takes no handlers, signals are left alone.
    """
    try:
        previous = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
