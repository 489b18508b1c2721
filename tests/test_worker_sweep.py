"""The workbench's worker runs a job as a sweep (the settings' Ray address and actors): its shards on
two real local Ray actors, the run row written after the request's checks, and the progress line
saying how many shards each actor has done; the results equal the inline run's."""
from __future__ import annotations

import queue
import threading

import pytest

from analyses.inputs import corpus
from app.run.worker import Failed, Finished, Job, JobProgress, Log, ModelChoice, Started, SweepChoice, _WorkerLoop

pytestmark = pytest.mark.integration


def _events(events: queue.Queue) -> list:
    seen = []
    while not events.empty():
        seen.append(events.get())
    return seen


def test_a_job_runs_as_a_sweep_on_two_actors_with_per_actor_progress(db_path, tiny_model):
    pytest.importorskip("ray")
    from store import Store

    events: queue.Queue = queue.Queue()
    loop = _WorkerLoop(None, events, threading.Event(), str(db_path))
    choice = corpus.InputChoice("pile", n_docs=40, max_tokens=8, seed=4, store_texts=False)
    model = ModelChoice(tiny_model.location, "cpu", "float32")
    loop.run_job(Job(1, "logit-lens", (), {}, model, choice=choice, sweep=SweepChoice("local", 2)))
    seen = _events(events)
    failed = [event for event in seen if isinstance(event, Failed)]
    assert not failed, failed
    started = [event for event in seen if isinstance(event, Started)]
    finished = [event for event in seen if isinstance(event, Finished)]
    assert len(started) == 1 and len(finished) == 1 and finished[0].run_id == started[0].run_id
    logs = [event.text for event in seen if isinstance(event, Log)]
    assert sum("ray: actor" in text and "started" in text for text in logs) == 2, logs
    notes = [event.note for event in seen if isinstance(event, JobProgress) and "stored" in event.note]
    # Forty documents in shards of 16 (the default): three shards, and the per-actor counts on the
    # progress line of the last one stored add up to them.
    last = notes[-1]
    counts = [int(part.split(": ")[1].split()[0]) for part in last.split("; ", 1)[1].split(", ")]
    store = Store(db_path)
    row = store.run_row(finished[0].run_id)
    assert row["status"] == "done" and row["n_shards"] == 3 and sum(counts) == 3

    # The same job in the worker itself gives the same rows.
    loop.run_job(Job(2, "logit-lens", (), {}, model, choice=choice))
    inline = [event for event in _events(events) if isinstance(event, Finished)][0].run_id
    rows = "SELECT * EXCLUDE (run_id) FROM logit_lens WHERE run_id = ? ORDER BY ALL"
    assert store.query(rows, [inline]).rows == store.query(rows, [finished[0].run_id]).rows


def test_a_bad_parameter_in_a_sweep_job_stores_nothing(db_path, tiny_model):
    from store import Store

    events: queue.Queue = queue.Queue()
    loop = _WorkerLoop(None, events, threading.Event(), str(db_path))
    model = ModelChoice(tiny_model.location, "cpu", "float32")
    job = Job(1, "first-layer-heads", (), {"layers": "7"}, model, choice=corpus.InputChoice("pile", n_docs=2, max_tokens=8),
              sweep=SweepChoice("local", 2))
    loop.run_job(job)
    seen = _events(events)
    failed = [event for event in seen if isinstance(event, Failed)]
    assert len(failed) == 1 and failed[0].expected and failed[0].run_id is None and "layers must be below 3" in failed[0].message
    assert not any(isinstance(event, Started) for event in seen)
    assert Store(db_path).query("SELECT count(*) FROM runs").rows[0][0] == 0
