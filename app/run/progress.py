"""A progress line on stderr for the CLI: redrawn in place on a terminal, throttled lines otherwise."""
from __future__ import annotations

import sys
import time


class StderrProgress:
    def __init__(self, label: str, stream=None, min_interval: float = 1.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.min_interval = min_interval if not self.tty else 0.1
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int, note: str = "") -> None:
        now = time.monotonic()
        # Only show progress for work that takes more than a second.
        if now - self.started < 1.0 or (now - self.last_draw < self.min_interval and done < total):
            return
        self.last_draw = now
        width = 24
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        line = f"{self.label} [{bar}] {done}/{total} {note} ({now - self.started:.1f}s)"
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
