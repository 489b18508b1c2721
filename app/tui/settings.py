"""The workbench's settings: one typed model, passed in (never read from a global)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def state_dir() -> Path:
    """Where the workbench keeps its logs: $XDG_STATE_HOME/iwb (default ~/.local/state/iwb)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "iwb"


def default_worker_log() -> Path:
    return state_dir() / "worker.log"


def default_crash_log() -> Path:
    return state_dir() / "crash.log"


@dataclass(frozen=True)
class Settings:
    db_path: Path
    """The results database (DuckDB file)."""
    model: str = "smollm2-135m"
    """The model the worker loads first; the model picker switches it."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    dtype: str = "auto"
    """auto, float32, float16 or bfloat16."""
    theme: str = "textual-dark"
    """The Textual theme at start (ctrl+t toggles dark and light)."""
    worker_log: Path | None = None
    """Where the worker's stdout and stderr go (kept off the screen)."""
    crash_log: Path | None = None
    """Where tracebacks of errors in the app go (handled ones and a crash that ends it)."""
    sql_page_rows: int = 100
    """Rows fetched per page in the SQL console."""
    lock_retry_s: float = 30.0
    """How long the app and its worker retry a database locked by another process before giving up."""
    ray_address: str | None = None
    """Run every job as a sweep: its shards on Ray actors at this address (local, auto, host:port or
    ray://host:10001, as `iwb sweep --ray`); None runs jobs in the worker itself."""
    ray_actors: int | None = None
    """Actors of a sweep (None: one per GPU, else one per CPU)."""
