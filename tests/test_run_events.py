"""Run events: a run's history (started, cancelled, resumed, completed, ...) is kept in the store,
and compute time is told apart from wall time (a pause before a resume is not compute)."""
from __future__ import annotations

from datetime import timedelta

import duckdb
import pyarrow as pa

from store import Store
from store.schema import MIGRATIONS


def _place(store: Store, run_id: int, event: str, seconds: float) -> None:
    """Put one event of the run that many seconds after its start (as if that much time had passed)."""
    with store.write() as conn:
        conn.execute("UPDATE run_events SET happened_at = (SELECT happened_at FROM run_events WHERE run_id = ? AND event = 'started') "
                     "+ to_microseconds(?) WHERE run_id = ? AND event = ?", [run_id, int(seconds * 1_000_000), run_id, event])


def test_cancelled_resumed_completed_keeps_its_history_and_counts_compute_apart(store):
    run_id = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    store.end_run(run_id, "cancelled", "cancelled by the user")
    store.reopen_run(run_id)
    inputs = pa.table({"input_id": pa.array([0], pa.int32()), "source": ["prompt"], "text": ["hi"], "meta": ["{}"]})
    store.finish_run(run_id, inputs, None, {})
    assert [event for _, event, _ in store.run_events(run_id)] == ["started", "cancelled", "resumed", "completed"]
    assert store.run_events(run_id)[1][2] == "cancelled by the user"
    # 10 s of compute, a 100 s pause, 5 s of compute: wall 115 s, compute 15 s.
    for event, seconds in (("cancelled", 10), ("resumed", 110), ("completed", 115)):
        _place(store, run_id, event, seconds)
    assert store.run_times([run_id]) == {run_id: (115.0, 15.0)}
    listed = store.list_runs()
    row = dict(zip(listed.columns, listed.rows[0]))
    assert row["compute_s"] == 15.0


def test_a_running_run_counts_to_now_and_a_failed_one_to_its_end(store):
    running = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    with store.write() as conn:
        conn.execute("UPDATE run_events SET happened_at = happened_at - INTERVAL 30 SECOND WHERE run_id = ?", [running])
    failed = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    store.end_run(failed, "failed", "boom\ntraceback lines")
    store.end_run(failed, "cancelled")  # not running any more: no event, no change
    times = store.run_times([running, failed])
    assert times[running][1] >= 30 and times[running][0] >= 30
    assert [(event, detail) for _, event, detail in store.run_events(failed)] == [("started", None), ("failed", "boom")]
    store.delete_run(failed, [])
    assert store.run_events(failed) == []


def test_an_older_store_gets_its_runs_history_from_their_rows(db_path):
    conn = duckdb.connect(str(db_path))
    conn.execute("CREATE TABLE schema_version (version INTEGER, description VARCHAR, applied_at TIMESTAMP)")
    for version, description, statements in MIGRATIONS[:4]:  # a store written before run_events
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [version, description])
    created = conn.execute("SELECT now()::TIMESTAMP").fetchone()[0] - timedelta(minutes=5)
    conn.execute("INSERT INTO runs (run_id, analysis, model, status, created_at, finished_at) VALUES "
                 "(1, 'demo', 'm', 'done', ?, ? + INTERVAL 42 SECOND), (2, 'demo', 'm', 'failed', ?, ? + INTERVAL 3 SECOND)",
                 [created, created, created, created])
    conn.close()
    old = Store(db_path, read_only=True)  # a read-only open does not migrate: the history comes from the rows
    assert [event for _, event, _ in old.run_events(2)] == ["started", "failed"] and old.run_times([1]) == {1: (42.0, 42.0)}
    store = Store(db_path)
    assert [event for _, event, _ in store.run_events(1)] == ["started", "completed"]
    assert [event for _, event, _ in store.run_events(2)] == ["started", "failed"]
    assert store.run_times([1]) == {1: (42.0, 42.0)}
