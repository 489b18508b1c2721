"""The store as the TUI uses it: one connection at a time inside this process.

DuckDB refuses a read-only and a read-write connection to one file at once inside a process,
and the TUI reads from several threads while the worker relay writes; a lock serialises them.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from store import Store

_CONNECTION_LOCK = threading.RLock()


class SerialStore(Store):
    @contextlib.contextmanager
    def read(self) -> Iterator:
        with _CONNECTION_LOCK, super().read() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self, retry_seconds: float | None = None) -> Iterator:
        with _CONNECTION_LOCK, super().write(retry_seconds) as conn:
            yield conn
