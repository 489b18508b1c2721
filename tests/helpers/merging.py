"""A sharded analysis run in memory shard by shard, as the runner stores it: compute on each shard's
inputs, every shard's tables concatenated in shard order, then finalize over them."""
from __future__ import annotations

import threading
from typing import Any

from analyses.core.contract import Analysis, Input, no_progress
from analyses.core.sharding import table_reader


def run_in_shards(analysis: Analysis, model: Any, inputs: list[Input], params: Any, shard_docs: int) -> dict[str, Any]:
    """Every table (the shards' concatenated, then the final ones) of a run split into shards of shard_docs inputs."""
    import pyarrow as pa

    cancel = threading.Event()
    state = analysis.prepare(model, inputs, params, no_progress, cancel)
    by_id = {item.input_id: item for item in inputs}
    plan = analysis.shards(inputs, shard_docs)
    assert len(plan) > 1, "the analysis must split these inputs into shards"
    parts: dict[str, list] = {}
    for ids in plan:
        result = analysis.compute(model, [by_id[i] for i in ids], params, state, no_progress, cancel)
        for name, table in {**result.tables, "tokens": result.tokens}.items():
            parts.setdefault(name, []).append(table)
    stored = {name: pa.concat_tables(tables) for name, tables in parts.items()}
    final = analysis.finalize(params, state, table_reader(stored), no_progress, cancel)
    return {**stored, **final.tables}
