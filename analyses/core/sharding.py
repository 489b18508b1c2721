"""A reader over in-memory tables, shaped like the store's reader over a run's stored shards.

The runner (app/run/runner.py) stores each shard on disk and hands ``Analysis.finalize`` a reader over
them; ``Analysis.run`` (the whole run in memory, without a store) hands it ``table_reader`` instead.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
