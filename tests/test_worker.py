"""The worker process for real: warm model, the protocol sequence, kill -9 mid-job, cancel, stuck jobs.

Uses the tiny random Llama (its folder is loaded by name in the spawned worker) and a test-only
analysis whose steps take a set time, so the crash and cancel paths do not race the model.
"""
from __future__ import annotations

import os
import queue
import signal

import pytest

from analyses.core.contract import Input
from analyses.core.registry import REGISTRY
from app.run.worker import (
    Failed,
    Finished,
    JobCancelled,
    JobProgress,
    ModelChoice,
    Started,
    Submitted,
)
from tests.helpers.worker_events import wait_for

SLOW = {"slow-steps": "tests.helpers.slow_analysis:SlowSteps"}
PROMPT = (Input(0, "prompt", "The Eiffel Tower is located in the city of"),)


@pytest.fixture
def host(tiny_model, store, monkeypatch):
    from app.run.worker_host import WorkerHost

    monkeypatch.setitem(REGISTRY, "slow-steps", SLOW["slow-steps"])
    events: queue.Queue = queue.Queue()
    worker_host = WorkerHost(store, events.put, ModelChoice(tiny_model.location, "cpu", "float32"), cancel_grace_s=2.0, extra_analyses=SLOW)
    worker_host.events = events
    worker_host.start()
    yield worker_host
    worker_host.close()


def job_events(seen: list, job_id: int) -> list:
    return [type(e) for e in seen if getattr(e, "job_id", None) == job_id and not hasattr(e, "level")]


def test_job_sequence_then_kill_9_then_next_job_runs(host, store):
    job = host.submit("logit-lens", PROMPT, {})
    seen = wait_for(host, (Finished, Failed), job)
    kinds = job_events(seen, job)
    assert kinds[0] is Submitted and kinds[1] is Started and kinds[-1] is Finished and JobProgress in kinds
    finished = seen[-1]
    assert store.run_row(finished.run_id)["status"] == "done"
    assert finished.table_rows["logit_lens"] == store.query("SELECT count(*) FROM logit_lens WHERE run_id = ?", [finished.run_id]).rows[0][0]

    first_pid = host.worker_pid
    slow = host.submit("slow-steps", PROMPT, {"steps": "400", "step_seconds": "0.05"})
    seen = wait_for(host, (JobProgress,), slow)
    started = next(e for e in seen if isinstance(e, Started))
    os.kill(host.worker_pid, signal.SIGKILL)
    failed = wait_for(host, (Failed, Finished), slow)[-1]
    assert isinstance(failed, Failed) and failed.error_class == "WorkerDied" and "SIGKILL" in failed.message
    row = store.run_row(started.run_id)
    assert row["status"] == "failed" and "SIGKILL" in row["error"]

    after = host.submit("logit-lens", PROMPT, {})
    done = wait_for(host, (Finished, Failed), after)[-1]
    assert isinstance(done, Finished) and host.worker_pid not in (None, first_pid)


def test_cancel_stops_between_units_and_a_stuck_job_is_terminated(host, store):
    job = host.submit("slow-steps", PROMPT, {"steps": "400", "step_seconds": "0.05"})
    seen = wait_for(host, (JobProgress,), job)
    run_id = next(e for e in seen if isinstance(e, Started)).run_id
    pid = host.worker_pid
    host.cancel(job)
    cancelled = wait_for(host, (JobCancelled, Finished, Failed), job)[-1]
    assert isinstance(cancelled, JobCancelled) and cancelled.run_id == run_id
    assert store.run_row(run_id)["status"] == "cancelled"
    assert host.worker_pid == pid  # a cooperative cancel keeps the warm worker

    stuck = host.submit("slow-steps", PROMPT, {"steps": "400", "step_seconds": "0.05", "ignore_cancel": "true"})
    seen = wait_for(host, (JobProgress,), stuck)
    stuck_run = next(e for e in seen if isinstance(e, Started)).run_id
    host.cancel(stuck)
    cancelled = wait_for(host, (JobCancelled, Finished, Failed), stuck)[-1]
    assert isinstance(cancelled, JobCancelled) and "did not stop" in cancelled.reason
    assert store.run_row(stuck_run)["status"] == "cancelled"
    assert host.worker_pid is None
    again = host.submit("slow-steps", PROMPT, {"steps": "2", "step_seconds": "0"})
    assert isinstance(wait_for(host, (Finished, Failed), again)[-1], Finished)
