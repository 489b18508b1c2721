"""The store's one error: a problem the user can act on."""
from __future__ import annotations


class StoreError(Exception):
    """A store problem the user can act on (bad path, bad SQL, unknown run); exit code 2."""

    exit_code = 2
