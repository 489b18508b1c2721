"""The store's one error: a problem the user can act on."""
from __future__ import annotations


class StoreError(Exception):
    """A store problem the user can act on (bad path, bad SQL, unknown run); exit code 2."""

    exit_code = 2


class ResultsPending(StoreError):
    """A run finished and its results are safe on disk, but the database stayed locked, so they
    are not registered yet; the next command that opens the database (or `iwb resume`) does it."""

    exit_code = 3


class RunBusy(StoreError):
    """The run is being computed by another process (a second resume of one run); exit code 3, busy."""

    exit_code = 3
