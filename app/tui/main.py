"""`iwb` with no arguments: open the workbench on a results database."""
from __future__ import annotations

from pathlib import Path

from app.tui.settings import Settings, default_worker_log


def run_tui(db_path: str | Path, model_name: str = "smollm2-135m", device: str = "auto", dtype: str = "auto") -> int:
    from app.tui.app import Workbench
    from app.tui.store_access import SerialStore

    settings = Settings(Path(db_path), model=model_name or "smollm2-135m", device=device, dtype=dtype, worker_log=default_worker_log())
    app = Workbench(SerialStore(settings.db_path), settings)
    try:
        app.run()
    finally:
        app.host.close()
    return 0
