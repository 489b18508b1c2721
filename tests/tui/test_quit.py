"""Quitting: at once when no job runs; while one runs, ctrl+q asks, and yes cancels the job and quits
when the worker has stopped it, so the run is stored `cancelled` instead of being left `running`.
The last test uses the REAL worker host (a spawned worker, the tiny model, a slow test analysis)."""
from __future__ import annotations

import pytest

from app.run.worker import Failed, Finished, JobCancelled, JobProgress, Started
from tests.helpers.tui import make_app, real_worker_app, settle, until

pytestmark = pytest.mark.tui


async def test_ctrl_q_without_a_job_quits_at_once(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert not app.job_state.running
        await pilot.press("ctrl+q")
        await until(lambda: app.return_code is not None, "the app to exit")
    assert app.return_code == 0


async def test_ctrl_q_during_a_job_asks_and_no_keeps_the_job(tui_store):
    from app.tui.widgets.confirm import ConfirmModal

    app = make_app(tui_store, hold=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#prompt").insert("The Eiffel Tower is in")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.job_state.running
        await pilot.press("ctrl+q")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmModal)
        assert "Job 1 (logit-lens, run 1) is still running" in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("ctrl+q")  # asked already: a second ctrl+q does not stack another question
        await settle(app, pilot)
        assert sum(isinstance(screen, ConfirmModal) for screen in app.screen_stack) == 1
        await pilot.press("n")
        await settle(app, pilot)
        assert app.screen.name == "probe" and app.job_state.running and app.return_code is None
        assert app.host.cancelled == []


async def test_quit_during_a_real_job_cancels_its_run(tmp_path, tiny_model, monkeypatch):
    from app.tui.widgets.confirm import ConfirmModal

    app, store = real_worker_app(tmp_path, tiny_model, monkeypatch, "quit.duckdb")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = app.screen
        probe.query_one("#analysis").value = "slow-steps"
        await settle(app, pilot)
        probe.query_one("#prompt").insert("The Eiffel Tower is in")
        probe.query_one("#param-steps").value = "100000"
        probe.query_one("#param-step_seconds").value = "0.02"
        await pilot.press("ctrl+r")
        await until(lambda: any(isinstance(e, JobProgress) for e in app.events_seen), "the job's first step")
        started = next(e for e in app.events_seen if isinstance(e, Started))
        assert store.run_row(started.run_id)["status"] == "running"
        await pilot.press("ctrl+q")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await until(lambda: app.return_code is not None, "the app to quit after the cancel")
    ended = [e for e in app.events_seen if isinstance(e, (JobCancelled, Failed, Finished))]
    assert [type(e) for e in ended] == [JobCancelled], app.events_seen
    assert store.run_row(started.run_id)["status"] == "cancelled"
    assert app.return_code == 0
