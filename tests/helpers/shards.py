"""Stored runs compared row for row (a resumed or swept run must equal the uninterrupted one), and
Pile documents as run inputs."""
from __future__ import annotations

from pathlib import Path

import duckdb

from analyses.core.contract import Input


def rows(db: Path, sql: str) -> list[tuple]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def same_results(db: Path, run_a: int, run_b: int, tables=("truncation", "truncation_summary", "truncation_lowest", "tokens"),
                 may_be_empty: tuple[str, ...] = ()) -> None:
    """The tables' rows of both runs equal bit for bit (NaN where NaN); each holds rows unless named in may_be_empty."""

    def same_nan(values: list[tuple]) -> list[tuple]:  # NaN != NaN: compare it as a marker
        return [tuple("NaN" if isinstance(value, float) and value != value else value for value in row) for row in values]

    for table in tables:
        a = rows(db, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {run_a} ORDER BY ALL")
        b = rows(db, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {run_b} ORDER BY ALL")
        assert (a or table in may_be_empty) and same_nan(a) == same_nan(b), table


def pile_inputs(n: int) -> tuple[Input, ...]:
    """The first n documents of the shipped Pile sample, 16 tokens each."""
    from analyses.inputs.corpus import InputChoice, build_inputs

    inputs, _ = build_inputs(InputChoice("pile", None, None, n, 16, 0, None), ("pile",))
    return inputs


def stop_after_shard(store, model, prepared, stored: int, n_shards: int, shard_docs: int = 2) -> int:
    """Run prepared, stopped by the user (the cancel event) once shard ``stored`` of ``n_shards``
    is stored; the stopped run's id."""
    import threading

    import pytest

    from analyses.core.errors import Cancelled
    from app.run.runner import execute

    cancel = threading.Event()

    def progress(done, total, note=""):
        if f"shard {stored}/{n_shards} stored" in note:
            cancel.set()

    with pytest.raises(Cancelled):
        execute(store, model, prepared, progress, cancel, shard_docs=shard_docs)
    return int(rows(store.path, "SELECT max(run_id) FROM runs")[0][0])
