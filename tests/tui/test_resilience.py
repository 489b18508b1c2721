"""Errors off the happy path: the relay thread survives its own errors, a store that refuses a write
does not stop it, and a crash that does end the app exits non-zero with its traceback in the crash log."""
from __future__ import annotations

import os
import queue
import signal

import pytest

from analyses.core.contract import Input
from analyses.core.registry import REGISTRY
from app.run.worker import Failed, Finished, JobProgress, ModelChoice, Started, Submitted
from tests.helpers.tui import make_app, settle
from tests.helpers.worker_events import wait_for

SLOW = {"slow-steps": "tests.helpers.slow_analysis:SlowSteps"}
PROMPT = (Input(0, "prompt", "The Eiffel Tower is located in the city of"),)


class RefusingStore:
    """The real store, except that marking a run ended fails (as under a lock held elsewhere)."""

    def __init__(self, store) -> None:
        self._store = store

    def end_run(self, *args, **kwargs) -> None:
        raise RuntimeError("database stayed locked by another process")

    def __getattr__(self, name: str):
        return getattr(self._store, name)


@pytest.fixture
def host(tiny_model, store, monkeypatch, tmp_path):
    from app.run.worker_host import WorkerHost

    monkeypatch.setitem(REGISTRY, "slow-steps", SLOW["slow-steps"])
    events: queue.Queue = queue.Queue()
    worker_host = WorkerHost(RefusingStore(store), events.put, ModelChoice(tiny_model.location, "cpu", "float32"),
                             log_path=str(tmp_path / "worker.log"), extra_analyses=SLOW)
    worker_host.events = events
    worker_host.start()
    yield worker_host
    worker_host.close()


def test_relay_error_fails_the_job_with_its_cause_and_the_relay_goes_on(host, tmp_path, monkeypatch):
    job = host.submit("slow-steps", PROMPT, {"steps": "400", "step_seconds": "0.05"})
    wait_for(host, (JobProgress,), job)
    original = type(host)._check_cancel_deadline

    def broken(self) -> None:
        monkeypatch.setattr(type(host), "_check_cancel_deadline", original)
        raise KeyError("a bug in the relay")

    monkeypatch.setattr(type(host), "_check_cancel_deadline", broken)
    failed = wait_for(host, (Failed, Finished), job)[-1]
    assert isinstance(failed, Failed) and failed.error_class == "RelayError"
    assert "KeyError" in failed.message and "a bug in the relay" in failed.message
    assert "could not be marked failed" in failed.message  # the refusing store is reported, not fatal
    assert "a bug in the relay" in (tmp_path / "worker.log").read_text()
    assert host._thread.is_alive()
    after = host.submit("slow-steps", PROMPT, {"steps": "2", "step_seconds": "0"})
    assert isinstance(wait_for(host, (Finished, Failed), after)[-1], Finished)


def test_worker_death_with_a_store_that_refuses_still_fails_the_job(host):
    job = host.submit("slow-steps", PROMPT, {"steps": "400", "step_seconds": "0.05"})
    seen = wait_for(host, (JobProgress,), job)
    assert any(isinstance(e, Started) for e in seen)
    os.kill(host.worker_pid, signal.SIGKILL)
    failed = wait_for(host, (Failed, Finished), job)[-1]
    assert isinstance(failed, Failed) and failed.error_class == "WorkerDied" and "could not be marked" in failed.message
    assert host._thread.is_alive()
    after = host.submit("slow-steps", PROMPT, {"steps": "2", "step_seconds": "0"})
    assert isinstance(wait_for(host, (Finished, Failed), after)[-1], Finished)


@pytest.mark.tui
async def test_a_crash_that_ends_the_app_exits_non_zero_and_logs_its_traceback(tui_store, tmp_path):
    from dataclasses import replace

    app = make_app(tui_store)
    app.settings = replace(app.settings, crash_log=tmp_path / "state" / "crash.log")
    # The malformed event's handler raises (its tables are None); run_test re-raises that error.
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'items'"):
        async with app.run_test(size=(100, 32)) as pilot:
            await settle(app, pilot)
            app.post_job_event(Submitted(3, "logit-lens"))
            app.post_job_event(Finished(3, 1, None, 1.0))  # a malformed event
            await settle(app, pilot)
    assert app.return_code == 1
    log = (tmp_path / "state" / "crash.log").read_text()
    assert "the app stopped on this error" in log and "AttributeError" in log and "on_job_event" in log
