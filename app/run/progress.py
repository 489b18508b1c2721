"""Progress as a person reads it: the job's own note, its rate and the time left (``Pace``), and the
CLI's line on stderr (redrawn in place on a terminal, throttled lines otherwise).

Every analysis reports ``progress(done, total, note)`` in its own units (blocks, documents, cells,
neurons: see analyses.core.contract.Progress). ``Pace`` turns the reports into a rate over the last
``WINDOW_S`` seconds and the time left at that rate; it names the rate by the unit the note counts
where the note says ``<unit> n/N`` with N the total (``layer 12/30`` → ``layers/s``), else per
second of the report's own count.
"""
from __future__ import annotations

import collections
import re
import sys
import time
from collections.abc import Callable

WINDOW_S = 20.0  # the rate is measured over the reports of the last 20 s
MIN_SPAN_S = 1.0  # no rate before the reports span a second (the first ones say little)
_COUNTED = re.compile(r"([A-Za-z][A-Za-z-]*)s? (\d+)(?:-\d+)?/(\d+)")


def duration(seconds: float) -> str:
    """3 s, 42 s, 2 min 5 s, 1 h 3 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def unit_of(note: str, total: int) -> str:
    """The plural unit the note counts against the total ('layer 12/30' with total 30: 'layers'); '' when none does."""
    for word, _, of in reversed(_COUNTED.findall(note)):
        if int(of) == total:
            return word if word.endswith("s") else word + "s"
    return ""


class Pace:
    """Rate and time left from a job's progress reports (one Pace per job)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.samples: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0
        self.started = clock()

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if total != self.total or (self.samples and done < self.samples[-1][1]):
            self.samples.clear()  # a new phase counts from zero again: its rate starts afresh
            self.total = total
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW_S:
            self.samples.popleft()

    def rate(self) -> float | None:
        """Units per second over the window; None until the reports span a second and something moved."""
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 - t0 < MIN_SPAN_S or d1 <= d0:
            return None
        return (d1 - d0) / (t1 - t0)

    def describe(self, done: int, total: int, note: str = "") -> str:
        """' · 3.1 layers/s · ~6 s left' (empty while there is no rate yet); the note's unit names the rate."""
        rate = self.rate()
        if rate is None or not total:
            return ""
        unit = unit_of(note, total)
        # Without a unit in the note, the report's count is abstract: the rate is given as a share of the whole.
        speed = (f"{rate:.3g} {unit}/s" if rate >= 0.1 else f"{1 / rate:.3g} s per {unit[:-1]}") if unit else f"{100 * rate / total:.2g}%/s"
        return f" · {speed} · ~{duration((total - done) / rate)} left"


class StderrProgress:
    def __init__(self, label: str, stream=None, min_interval: float = 1.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.min_interval = min_interval if not self.tty else 0.1
        self.last_draw = 0.0
        self.drawn = False
        self.pace = Pace()

    def __call__(self, done: int, total: int, note: str = "") -> None:
        now = time.monotonic()
        self.pace.update(done, total)
        # Only show progress for work that takes more than a second.
        if now - self.started < 1.0 or (now - self.last_draw < self.min_interval and done < total):
            return
        self.last_draw = now
        width = 24
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        pace = self.pace.describe(done, total, note) if done < total else ""
        line = f"{self.label} [{bar}] {done}/{total} {note}{pace} ({now - self.started:.1f}s)"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:150])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn and self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
