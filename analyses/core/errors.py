"""The one error tree of iwb, for what a user can cause or act on; foreign exceptions are wrapped
at the boundary. Each class carries its exit code and a title; the CLI prints ``iwb: <message>``
and exits with the code, the TUI shows the title and the message in place (app.errors).

    IwbError (1, an internal failure the user can act on)
    ├── BadInput (2): a prompt, parameter, model, path or SQL that cannot be used
    │   ├── ModelUnavailable (2)
    │   └── StoreError (2, store.errors): a bad database path or file, bad SQL, an unknown run
    │       ├── DatabaseBusy (3): the database stayed locked by another process
    │       ├── ResultsPending (3): results safe on disk, registration waits for the lock
    │       └── RunBusy (3): another process is computing that run
    └── Cancelled (130): stopped by the user

This module imports nothing, so that the store (which knows nothing else of the engine) can
build its errors on it.
"""
from __future__ import annotations


class IwbError(Exception):
    """An expected failure with a one-line message meant for the user."""

    exit_code = 1
    title = "Error"


class BadInput(IwbError):
    """The user's input (prompt, parameter, model name, path, SQL) cannot be used."""

    exit_code = 2
    title = "Bad input"


class ModelUnavailable(BadInput):
    """The model is unknown here or cannot be reached."""

    title = "Model unavailable"


class Cancelled(IwbError):
    """The job was cancelled between units of work. ``partial``: what an analysis made of its shard
    before the cancel (a Result: generate's steps so far), which the runner keeps apart from the
    computed shards; ``shard``: that shard's index, set by the runner."""

    exit_code = 130
    title = "Cancelled"

    def __init__(self, *args: object, partial: object = None) -> None:
        super().__init__(*args)
        self.partial = partial
        self.shard: int | None = None
