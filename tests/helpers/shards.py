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


def same_results(db: Path, run_a: int, run_b: int, tables=("truncation", "truncation_summary", "truncation_lowest", "tokens")) -> None:
    for table in tables:
        a = rows(db, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {run_a} ORDER BY ALL")
        b = rows(db, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {run_b} ORDER BY ALL")
        assert a and a == b, table


def pile_inputs(n: int) -> tuple[Input, ...]:
    """The first n documents of the shipped Pile sample, 16 tokens each."""
    from analyses.inputs.corpus import InputChoice, build_inputs

    inputs, _ = build_inputs(InputChoice("pile", None, None, n, 16, 0, None), ("pile",))
    return inputs
