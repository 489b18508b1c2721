"""One error hierarchy for what a user can cause; foreign exceptions are wrapped at the boundary."""
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
    """The job was cancelled between units of work."""

    title = "Cancelled"
