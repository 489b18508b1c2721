"""Where the results database lives: --db, then IWB_DB, then the XDG data dir."""
from __future__ import annotations

import os
from pathlib import Path


def default_db_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "iwb" / "results.duckdb"


def resolve_db_path(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get("IWB_DB")
    if from_env:
        return Path(from_env).expanduser()
    return default_db_path()
