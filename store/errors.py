"""The store's errors, on the one error tree (analyses.core.errors, a module that imports nothing)."""
from __future__ import annotations

from analyses.core.errors import BadInput


class StoreError(BadInput):
    """A store problem the user can act on (bad path, bad SQL, unknown run); exit code 2."""

    title = "Database"


class DatabaseBusy(StoreError):
    """The database stayed locked by another process for the whole retry window; exit code 3."""

    exit_code = 3
    title = "Database busy"


class ResultsPending(StoreError):
    """A run finished and its results are safe on disk, but the database stayed locked, so they
    are not registered yet; the next command that opens the database (or `iwb resume`) does it."""

    exit_code = 3
    title = "Results pending"


class RunBusy(StoreError):
    """The run is being computed by another process (a second resume of one run); exit code 3, busy."""

    exit_code = 3
    title = "Run busy"
