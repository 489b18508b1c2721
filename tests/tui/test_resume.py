"""The TUI face of resumable runs, with the real worker: a cancelled corpus run shows its partial
results, R in History finishes it, and the finished run equals an uninterrupted one."""
from __future__ import annotations

import threading
import time

import pytest

from analyses.core.errors import Cancelled
from app.run.runner import RunRequest, execute, prepare
from app.run.worker import Failed, Finished
from store import Store
from tests.helpers.shards import pile_inputs, same_results
from tests.helpers.tui import row_by_label, settle, shown

pytestmark = [pytest.mark.integration, pytest.mark.tui]


async def test_history_resumes_a_cancelled_run_with_the_real_worker(tmp_path, embedded_model):
    from app.tui.app import Workbench
    from app.tui.settings import Settings
    from app.tui.store_access import SerialStore

    db = tmp_path / "resume.duckdb"
    writer = Store(db)
    prepared = prepare(RunRequest("truncation", pile_inputs(6), {"k_max": "2"}))
    reference = execute(writer, embedded_model, prepared, lambda *a: None, shard_docs=2)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        execute(writer, embedded_model, prepared, lambda d, t, note="": cancel.set() if note.endswith("stored") else None, cancel, shard_docs=2)
    cancelled = reference + 1

    settings = Settings(db, model="smollm2-135m", device="cpu", dtype="float32",
                        worker_log=tmp_path / "worker.log", crash_log=tmp_path / "crash.log", lock_retry_s=5.0)
    app = Workbench(SerialStore(db), settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        history = app.screen
        table = history.query_one("#runs")
        assert "cancelled 1/3 shards" in row_by_label(table, str(cancelled))["status"]
        table.move_cursor(row=table.get_row_index(str(cancelled)))
        await settle(app, pilot)
        assert "R resumes it" in shown(history.query_one("#run-detail"))
        await pilot.press("enter")  # the partial results draw
        await settle(app, pilot)
        assert "1/3 shards stored" in " ".join(shown(app.screen.query_one("#run-info")).split())
        assert any(data is not None for data in app.screen.loaded)
        await pilot.press("f4")
        await settle(app, pilot)
        seen = len(app.events_seen)
        await pilot.press("R")
        deadline = time.monotonic() + 300
        while not any(isinstance(e, (Finished, Failed)) for e in app.events_seen[seen:]):
            assert time.monotonic() < deadline, app.events_seen[seen:]
            await pilot.pause(0.1)
        ended = next(e for e in app.events_seen[seen:] if isinstance(e, (Finished, Failed)))
        assert isinstance(ended, Finished) and ended.run_id == cancelled, ended
        await settle(app, pilot)
        assert app.screen.name == "history" or app.screen.run_id == cancelled
    assert writer.run_row(cancelled)["status"] == "done"
    same_results(db, reference, cancelled)
