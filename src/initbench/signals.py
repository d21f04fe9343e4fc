"""SIGTERM/SIGINT as a polled flag, so training stops at a step boundary and saves first;
before anything polls it (data loading, model building, initialization, the step-0 report)
there is nothing to save, and a signal stops the run at once. Handlers are installed for a
block and the previous ones put back after it."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class StopNow(BaseException):
    """A signal arrived before the flag was first polled: raised by the handler, wherever the
    program was, as KeyboardInterrupt is (a BaseException, so no ``except Exception`` on the
    way swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} before training started")


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], int | None]]:
    """Turn SIGTERM/SIGINT into a polled flag for the duration of the block.

    Yields a function returning the signal number received (None if none). Until that function
    is first called (the training loop polls after every step), nothing would see the flag,
    so the first signal raises :class:`StopNow` at once instead: a slow start-up (LSUV on a deep
    model) stops within a moment, not after it. A second SIGINT stops at once
    (KeyboardInterrupt). Outside the main thread, signals are left alone.
    """
    received: list[int] = []
    polled = False

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        if not polled and len(received) == 1:
            raise StopNow(signum)
        log.warning("%s received: stopping after this step", signal.Signals(signum).name)

    def poll() -> int | None:
        nonlocal polled
        polled = True
        return received[0] if received else None

    with handling_signals(handler):
        yield poll


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
