"""Running a three-step (prepare_run / run_shard / finalize) analysis in memory, as one shard.

The runner (app/run/runner.py) stores each shard on disk and hands finalize a reader over the stored
shards; ``run_whole`` gives the same tables without a store, for ``run()`` and the tests.
"""
from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from analyses.core.contract import CancelEvent, Input, Progress, Result

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel


def table_reader(tables: dict[str, Any]) -> Callable[..., Any]:
    """read(table, columns=None, where=None) over in-memory Arrow tables, as the store's reader:
    ``where`` keeps rows whose column equals a value or is in a list of values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def read(name: str, columns: Any = None, where: dict | None = None) -> Any:
        table = tables.get(name)
        if table is None:
            return None
        for column, value in (where or {}).items():
            if isinstance(value, (list, tuple, set)):
                mask = pc.is_in(table[column], value_set=pa.array(list(value), type=table.schema.field(column).type))
            else:
                mask = pc.equal(table[column], pa.scalar(value, type=table.schema.field(column).type))
            table = table.filter(mask)
        return table.select(list(columns)) if columns else table

    return read


def run_whole(module: types.ModuleType, model: LoadedModel, inputs: list[Input], params: Any, progress: Progress, cancel: CancelEvent) -> Result:
    """prepare_run, one run_shard over every input, finalize: the run's tables in one Result."""
    state = module.prepare_run(model, inputs, params, progress, cancel)
    shard = module.run_shard(model, inputs, params, state, progress, cancel)
    stored = dict(shard.tables)
    stored["tokens"] = shard.tokens
    final = module.finalize(params, state, table_reader(stored), progress, cancel)
    return Result(tables={**shard.tables, **final.tables}, tokens=shard.tokens, notes={**shard.notes, **final.notes})
