"""One error tree: every error a user can cause or act on is an IwbError with its exit code and
title; the CLI prints one line and exits with the code, the TUI shows the tree's message in place."""
from __future__ import annotations

import subprocess
import sys

import pytest

from analyses.core.errors import BadInput, Cancelled, IwbError, ModelUnavailable
from app.errors import cli_line, tui_line
from store.errors import DatabaseBusy, ResultsPending, RunBusy, StoreError
from tests.helpers.cli import iwb


@pytest.mark.parametrize(("error", "code"), [
    (IwbError("x"), 1), (BadInput("x"), 2), (ModelUnavailable("x"), 2), (StoreError("x"), 2),
    (DatabaseBusy("x"), 3), (ResultsPending("x"), 3), (RunBusy("x"), 3), (Cancelled("x"), 130),
])
def test_every_error_is_on_the_tree_with_its_exit_code(error, code):
    assert isinstance(error, IwbError) and error.title
    assert cli_line(error) == ("iwb: x", code)


def test_the_cli_line_is_the_first_line_and_the_tui_names_only_foreign_classes(tmp_path):
    assert cli_line(StoreError("Parser Error: syntax error\nLINE 1: SELEC")) == ("iwb: Parser Error: syntax error", 2)
    db = tmp_path / "results.duckdb"
    assert tui_line(StoreError(f"database {db} is locked"), db) == "database results.duckdb is locked"
    assert tui_line(ZeroDivisionError("division by zero")) == "ZeroDivisionError: division by zero"


def test_a_locked_database_is_exit_3_busy_not_bad_input(tmp_path):
    db = tmp_path / "results.duckdb"
    assert iwb("runs", db=db).returncode == 2  # no database yet: bad input
    from store import Store

    Store(db)
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(db)!r}); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        locked = iwb("sql", "SELECT 1", db=db, env={"IWB_LOCK_RETRY_S": "0.3"})
    finally:
        holder.communicate("")
    assert locked.returncode == 3, locked.stderr
    assert locked.stderr.startswith("iwb: database") and "locked" in locked.stderr and len(locked.stderr.strip().splitlines()) == 1
