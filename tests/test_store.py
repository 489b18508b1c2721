"""Store: migrations, atomic run writes, interrupted marking, locks, read-only queries."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import duckdb
import pyarrow as pa
import pytest

from store import Store, StoreError
from store.schema import SCHEMA_VERSION

COLUMNS = (("input_id", "INTEGER"), ("layer", "INTEGER"), ("value", "DOUBLE"))


def _inputs() -> pa.Table:
    return pa.table({"input_id": pa.array([0], pa.int32()), "source": ["prompt"], "text": ["hello"], "meta": ["{}"]})


def _tokens() -> pa.Table:
    return pa.table({"input_id": [0, 0], "pos": [0, 1], "token_id": [1, 2], "token": ["<s>", "hi"]})


def _values(n: int = 3) -> pa.Table:
    return pa.table({"input_id": [0] * n, "layer": list(range(n)), "value": [0.5] * n})


def _count(store: Store, sql: str) -> int:
    return store.query(sql).rows[0][0]


def test_schema_version_recorded_and_reopen_is_idempotent(db_path):
    Store(db_path)
    store = Store(db_path)
    assert _count(store, "SELECT max(version) FROM schema_version") == SCHEMA_VERSION
    assert _count(store, "SELECT count(*) FROM schema_version") == SCHEMA_VERSION


def test_run_written_with_all_rows(store):
    run_id = store.begin_run("demo", "m", {"a": 1}, "cpu", "float32", {"seed": 3})
    store.finish_run(run_id, _inputs(), _tokens(), {"demo_values": (COLUMNS, _values())})
    row = store.run_row(run_id)
    assert row["status"] == "done" and row["finished_at"] is not None
    assert _count(store, f"SELECT count(*) FROM demo_values WHERE run_id = {run_id}") == 3
    assert _count(store, f"SELECT count(*) FROM tokens WHERE run_id = {run_id}") == 2


def test_failure_mid_write_leaves_no_rows_of_that_run(store):
    first = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    store.finish_run(first, _inputs(), _tokens(), {"demo_values": (COLUMNS, _values())})
    second = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    broken = pa.table({"input_id": [0], "layer": ["not a number"], "value": [1.0]})
    with pytest.raises(duckdb.Error) as failed:
        # The first table goes in, then the second fails: the whole write must roll back.
        store.finish_run(second, _inputs(), _tokens(), {"demo_values": (COLUMNS, _values()), "demo_other": (COLUMNS, broken)})
    # The cause is the value that does not convert (duckdb may report it as the transaction it aborted).
    assert any(isinstance(error, duckdb.ConversionException) and "not a number" in str(error) for error in (failed.value, failed.value.__context__))
    for table in ("inputs", "tokens", "demo_values"):
        assert _count(store, f"SELECT count(*) FROM {table} WHERE run_id = {second}") == 0
    assert store.run_row(second)["status"] == "running"
    # The earlier run is untouched.
    assert _count(store, f"SELECT count(*) FROM demo_values WHERE run_id = {first}") == 3


def test_run_of_a_dead_process_is_marked_interrupted_at_open(db_path):
    store = Store(db_path)
    run_id = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with store.write() as conn:
        conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", [int(dead.stdout), run_id])
    live = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    reopened = Store(db_path)
    assert reopened.run_row(run_id)["status"] == "interrupted"
    # This process is alive, so its in-flight run is left alone.
    assert reopened.run_row(live)["status"] == "running"


def test_another_process_reads_between_writes_and_waits_for_a_lock(db_path):
    store = Store(db_path)
    run_id = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    store.finish_run(run_id, _inputs(), _tokens(), {"demo_values": (COLUMNS, _values())})
    reader = textwrap.dedent(
        f"""
        import duckdb
        conn = duckdb.connect({str(db_path)!r}, read_only=True)
        print(conn.execute("SELECT count(*) FROM demo_values").fetchone()[0])
        """
    )
    out = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
    # A writer in another process holds the lock for a moment; our write retries instead of failing.
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db_path)!r}); print('held', flush=True); time.sleep(1.5); c.close()"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    second = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    holder.wait()
    assert store.run_row(second)["status"] == "running"


def test_lock_held_too_long_is_a_clear_error(db_path):
    Store(db_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db_path)!r}); print('held', flush=True); time.sleep(5)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="locked"):
            Store(db_path, lock_retry_seconds=0.3)
    finally:
        holder.kill()
        holder.wait()


def test_read_only_query_refuses_writes_and_reports_bad_sql(store):
    with pytest.raises(StoreError, match="read-only"):
        store.query("INSERT INTO runs (run_id, analysis, model, status, created_at) VALUES (99, 'x', 'y', 'done', now())")
    with pytest.raises(StoreError, match="syntax error"):
        store.query("SELEC 1")
    assert _count(store, "SELECT count(*) FROM runs") == 0


@pytest.mark.parametrize("kind", ["directory", "unwritable"])
def test_bad_db_paths_are_store_errors(tmp_path, kind):
    if kind == "directory":
        target = tmp_path
    else:
        if os.geteuid() == 0:
            target = "/proc/iwb/results.duckdb"
        else:
            locked = tmp_path / "locked"
            locked.mkdir(mode=0o500)
            target = locked / "results.duckdb"
    with pytest.raises(StoreError):
        Store(target)


def test_result_table_gains_new_columns_without_losing_rows(store):
    run_id = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    store.finish_run(run_id, _inputs(), _tokens(), {"demo_values": (COLUMNS, _values())})
    wider = COLUMNS + (("extra", "VARCHAR"),)
    second = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    table = _values().append_column("extra", pa.array(["x"] * 3))
    store.finish_run(second, _inputs(), _tokens(), {"demo_values": (wider, table)})
    assert _count(store, "SELECT count(*) FROM demo_values") == 6
    assert _count(store, "SELECT count(extra) FROM demo_values") == 3


def test_delete_run_removes_every_row(store):
    run_id = store.begin_run("demo", "m", {}, "cpu", "float32", {})
    store.finish_run(run_id, _inputs(), _tokens(), {"demo_values": (COLUMNS, _values())})
    store.delete_run(run_id, ["demo_values"])
    assert store.run_row(run_id) is None
    assert _count(store, "SELECT count(*) FROM demo_values") == 0


def test_a_failed_run_keeps_its_inputs_and_cause(store):
    run_id = store.begin_run("demo", "m", {}, "cpu", "float32", {}, inputs=_inputs())
    store.end_run(run_id, "failed", "RuntimeError: out of memory")
    row = store.run_row(run_id)
    assert row["status"] == "failed" and row["error"].startswith("RuntimeError")
    assert store.query(f"SELECT text FROM inputs WHERE run_id = {run_id}").rows == [("hello",)]
    assert _count(store, f"SELECT count(*) FROM tokens WHERE run_id = {run_id}") == 0
