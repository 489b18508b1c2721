"""Reading the results database from Python without ever blocking iwb.

DuckDB lets no process write a file while another holds any connection to it, so a notebook that
keeps ``duckdb.connect(path, read_only=True)`` open stops every iwb run from registering results
(iwb then keeps them on disk and registers them later, but the notebook still sees none of them).
Use either:

    from store.notebook import query, snapshot
    query("select run_id, analysis, status from runs").to_pandas()   # open, fetch, close
    con = snapshot()           # a private copy of the database: keep it open as long as you like
    con.sql("select ...").df()
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from store.paths import resolve_db_path


def query(sql: str, params: list | None = None, db: str | Path | None = None) -> Any:
    """Run one read-only query on a connection held only while it runs; an Arrow table."""
    from store.db import Store

    return Store(resolve_db_path(str(db) if db else None), read_only=True).arrow(sql, params)


def snapshot(db: str | Path | None = None, folder: str | Path | None = None) -> Any:
    """A read-only DuckDB connection to a copy of the database taken now (the original is locked
    only for the copy); the copy lives in ``folder`` (default: a new temporary folder)."""
    import duckdb

    from store.db import Store

    source = resolve_db_path(str(db) if db else None)
    target_dir = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="iwb-snapshot-"))
    target = target_dir / source.name
    store = Store(source, read_only=True)
    with store.read():  # no writer can hold the file while this connection is open
        shutil.copy2(source, target)
        wal = source.with_name(source.name + ".wal")
        if wal.exists():
            shutil.copy2(wal, target.with_name(target.name + ".wal"))
    return duckdb.connect(str(target), read_only=True)
