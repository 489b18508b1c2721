"""`iwb` with no arguments: open the workbench on a results database."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from app.tui.settings import Settings, default_crash_log, default_worker_log


def lock_retry_from_env() -> float:
    """IWB_LOCK_RETRY_S: seconds to retry a database locked by another process (default 30)."""
    try:
        return max(0.0, float(os.environ.get("IWB_LOCK_RETRY_S", "30")))
    except ValueError:
        return 30.0


def make_workbench(settings: Settings, host_factory: Any = None) -> Any:
    """The app on its database; with a Ray address in the settings its worker runs every job as a
    sweep on that many actors (each stored shard's progress line then names every actor's count)."""
    from app.run.worker import SweepChoice
    from app.tui.app import Workbench
    from app.tui.store_access import SerialStore

    app = Workbench(SerialStore(settings.db_path, lock_retry_seconds=settings.lock_retry_s), settings, host_factory=host_factory)
    if settings.ray_address:
        app.host.sweep = SweepChoice(settings.ray_address, settings.ray_actors)
    return app


def run_tui(db_path: str | Path, model_name: str = "smollm2-135m", device: str = "auto", dtype: str = "auto",
            ray_address: str | None = None, ray_actors: int | None = None) -> int:
    """Run the workbench; 0 after a clean quit, 1 after a crash (its traceback is in the crash log)."""
    from app.tui.app import append_traceback

    settings = Settings(Path(db_path), model=model_name or "smollm2-135m", device=device, dtype=dtype,
                        worker_log=default_worker_log(), crash_log=default_crash_log(), lock_retry_s=lock_retry_from_env(),
                        ray_address=ray_address, ray_actors=ray_actors)
    app = make_workbench(settings)
    try:
        app.run()
    except Exception as error:
        append_traceback(settings.crash_log, "the app stopped on this error", error)
        print(f"iwb stopped on an error: {type(error).__name__}: {error} (traceback in {settings.crash_log})", file=sys.stderr)
        return 1
    finally:
        app.host.close()
    if app.return_code:
        print(f"iwb stopped on an error; its traceback is in {settings.crash_log}", file=sys.stderr)
    return app.return_code or 0
