"""The workbench's settings: one typed model, passed in (never read from a global)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_worker_log() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "iwb" / "worker.log"


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
    sql_page_rows: int = 100
    """Rows fetched per page in the SQL console."""
