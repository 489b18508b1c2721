"""`iwb verify RUN_ID`: recompute a stored run's main table on a sample of its inputs, through the
same analysis and the run's own model, parameters and inputs, and compare it cell by cell with
what is stored. A value changed by hand, a changed model or a changed code path shows up as a
differing cell; a model whose revision or fingerprint differs is refused before anything runs."""
from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import no_progress
from analyses.core.errors import BadInput
from analyses.inputs.corpus import DocumentReader, with_texts
from app.run.runner import check_same_model, stored_request
from store import Store

RTOL, ATOL = 1e-4, 1e-6
MAX_LISTED = 20


@dataclass(frozen=True)
class Verdict:
    run_id: int
    table: str
    inputs: list[int]
    cells: int
    differences: list[str]


def _key(row: dict, columns: list[str]) -> tuple:
    return tuple(str(row[c]) for c in columns)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    return bool(a == b)


def verify(store: Store, model: Any, run_id: int, sample: int, seed: int = 0) -> Verdict:
    row = store.run_row(run_id)
    if row is None:
        raise BadInput(f"run {run_id} does not exist in {store.path}")
    if row["status"] != "done":
        raise BadInput(f"run {run_id} is {row['status']}; only a done run can be verified (`iwb resume {run_id}` first)")
    check_same_model(model, row)
    prepared = stored_request(store, row)
    analysis, params = prepared.analysis, prepared.params
    table = analysis.spec.tables[0]
    per_input = "input_id" in {name for name, _ in table.columns}
    inputs = list(prepared.inputs)
    if per_input and analysis.sharded and len(inputs) > sample:
        inputs = sorted(random.Random(seed).sample(inputs, sample), key=lambda item: item.input_id)
    cancel = threading.Event()
    # A run-level state (truncation's mean) is over every input, as in the run itself.
    # A corpus run stored by reference reads its documents' texts back from the corpus (hash-checked).
    state = analysis.prepare(model, with_texts(prepared.inputs), params, no_progress, cancel)
    result = analysis.compute(model, DocumentReader().fill(inputs), params, state, no_progress, cancel)
    computed = result.tables.get(table.name)
    if computed is None and not per_input:
        # A table merged from every shard's partial aggregates: finalize over the recomputed inputs as one shard.
        from analyses.core.sharding import table_reader

        shard = {**result.tables, "tokens": result.tokens}
        computed = analysis.finalize(params, state, table_reader(shard), no_progress, cancel).tables.get(table.name)
    if computed is None:
        raise BadInput(f"run {run_id}: {table.name} is written by the run's final step; verify compares per-input tables only")
    ids = [item.input_id for item in inputs]
    where = f" AND input_id IN ({', '.join(str(int(i)) for i in ids)})" if per_input and ids else ""
    stored = store.query(f"SELECT * EXCLUDE (run_id) FROM {table.name} WHERE run_id = ?{where}", [run_id])
    stored_rows = [dict(zip(stored.columns, values)) for values in stored.rows]
    fresh_rows = computed.to_pylist()
    columns = [name for name, _ in table.columns]
    keys = [name for name, kind in table.columns if kind not in ("DOUBLE", "FLOAT")]
    differences: list[str] = []
    if len(stored_rows) != len(fresh_rows):
        differences.append(f"{table.name}: {len(stored_rows)} rows stored, {len(fresh_rows)} recomputed")
    fresh_by_key = {_key(r, keys): r for r in fresh_rows}
    cells = 0
    for old in stored_rows:
        new = fresh_by_key.get(_key(old, keys))
        if new is None:
            where_row = ", ".join(f"{k}={old[k]}" for k in keys)
            differences.append(f"{table.name}: stored row [{where_row}] was not recomputed")
            continue
        for column in columns:
            cells += 1
            if not _same(old.get(column), new.get(column)):
                where_cell = ", ".join(f"{k}={old[k]}" for k in keys)
                differences.append(f"{table.name} [{where_cell}] {column}: stored {old.get(column)!r}, recomputed {new.get(column)!r}")
    return Verdict(run_id, table.name, ids, cells, differences)


def done_runs(store: Store) -> list[int]:
    return [row[0] for row in store.list_runs(limit=1_000_000).rows if row[4] == "done"]
