"""The two formatters of the one error tree (analyses.core.errors): a line and an exit code for
the CLI, a line for a TUI screen. Errors of the tree are the user's to act on and show their own
message; anything else is a bug or a foreign failure and shows its class too."""
from __future__ import annotations

from analyses.core.errors import IwbError


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def cli_line(error: IwbError) -> tuple[str, int]:
    """`iwb: <message>` and the exit code (2 bad input, 3 busy or pending, 1 failure, 130 cancelled).
    One line: DuckDB's multi-line context (LINE 1: ...) stays for the TUI."""
    return f"iwb: {first_line(error)}", error.exit_code


def tui_line(error: BaseException, db_path: object = None) -> str:
    """One line for a screen; the database is named by its file name (its folder is known)."""
    text = first_line(error)
    if db_path is not None:
        text = text.replace(str(db_path), getattr(db_path, "name", str(db_path)))
    return text if isinstance(error, IwbError) else f"{type(error).__name__}: {text}"
