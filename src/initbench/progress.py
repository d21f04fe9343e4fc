"""Progress of a long loop: a tqdm bar on a terminal, a plain line every ~10 s elsewhere.

On a terminal (the stream is a tty) the bar shows the count, rate and ETA, appears only once
the loop has run ``min_duration`` seconds (a 0.1 s epoch shows nothing) and disappears when it
closes. Elsewhere (a pipe, a SLURM log, a W&B agent) a bar would write thousands of carriage
returns, so every ``interval`` seconds one line goes to ``write``:
``epoch 2/5: 1200/4690 steps (26%), 85.3 steps/s, ETA 0:00:41``. The first line comes after
``interval`` seconds too, so a short loop prints none.

``interval`` defaults to ``$INITBENCH_PROGRESS_S`` (seconds), else 10.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 10.0  # seconds between two lines when not on a terminal
DEFAULT_MIN_DURATION_S = 3.0  # a terminal bar appears only after this long


def default_interval() -> float:
    """``$INITBENCH_PROGRESS_S`` if set (a number >= 0), else 10 s."""
    value = os.environ.get("INITBENCH_PROGRESS_S")
    try:
        return max(0.0, float(value)) if value else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def hms(seconds: float) -> str:
    """``H:MM:SS``."""
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Counts ``update``\\ s towards ``total`` and shows how far, how fast and how long.

    Args:
        total: the count at the end.
        desc: what is counted, shown first (``epoch 2/5``).
        unit: the unit's name (``step``; lines add an ``s`` for the plural).
        initial: the count already done (a resumed epoch); the rate counts only what follows.
        stream: the terminal stream (default ``sys.stderr``) whose ``isatty`` picks the mode.
        tty: force the mode (True: tqdm bar, False: lines); None: ``stream.isatty()``.
        write: where lines go when not on a terminal (default: ``stream``).
        interval: seconds between two lines (default :func:`default_interval`); 0: a line
            on every update.
        min_duration: seconds before a terminal bar appears.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        unit: str = "step",
        *,
        initial: int = 0,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        write: Callable[[str], Any] | None = None,
        interval: float | None = None,
        min_duration: float = DEFAULT_MIN_DURATION_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self.initial = int(initial)
        self.postfix: dict[str, Any] = {}
        self.clock = clock
        self.start = self.last = clock()
        self.interval = default_interval() if interval is None else float(interval)
        stream = sys.stderr if stream is None else stream
        if tty is None:
            tty = bool(getattr(stream, "isatty", lambda: False)())
        self.write = write or (lambda line: print(line, file=stream, flush=True))
        self.bar = None
        self.redirect = None
        if tty:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # log lines (a signal's warning, an epoch's line) go above the bar, not onto it
            self.redirect = logging_redirect_tqdm(tqdm_class=tqdm)
            self.redirect.__enter__()
            self.bar = tqdm(
                total=self.total,
                desc=desc,
                unit=unit,
                initial=self.initial,
                file=stream,
                delay=min_duration,
                leave=False,
                dynamic_ncols=True,
            )
        self.closed = False

    def rate(self) -> float | None:
        """Units per second since the start (``initial`` not counted); None before any."""
        elapsed = self.clock() - self.start
        done = self.n - self.initial
        return done / elapsed if done > 0 and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the current rate; None while unknown."""
        rate = self.rate()
        return max(0, self.total - self.n) / rate if rate else None

    def line(self) -> str:
        """The plain line: ``desc: n/total units (pct%), rate, ETA, postfix``."""
        units = f"{self.unit}s"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total > 0 else ""
        parts = [f"{self.n}/{self.total} {units}{pct}"]
        rate, eta = self.rate(), self.eta()
        if rate is not None:
            shown = f"{rate:.3g} {units}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}"
            parts.append(shown)
        parts.append(f"ETA {hms(eta)}" if eta is not None else "ETA unknown")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; on a terminal move the bar, elsewhere write a line if it is time."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.write(self.line())

    def set_postfix(self, **values: Any) -> None:
        """Extra ``name value`` pairs shown after the ETA (``failed=2``)."""
        self.postfix.update(values)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, counting one as each next one is asked for (the previous one is done);
        closes when the loop ends, returns or raises."""
        try:
            first = True
            for item in items:
                if not first:
                    self.update()
                first = False
                yield item
            if not first:
                self.update()
        finally:
            self.close()

    def close(self) -> None:
        """Remove the bar (lines need nothing); safe to call twice."""
        if not self.closed and self.bar is not None:
            self.bar.close()
            self.redirect.__exit__(None, None, None)
        self.closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
