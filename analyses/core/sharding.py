"""A reader over in-memory tables, shaped like the store's reader over a run's stored shards.

The runner (app/run/runner.py) stores each shard on disk and hands ``Analysis.finalize`` a reader over
them (store.shard_reader.ShardReader: DuckDB over the shards' Parquet files); ``Analysis.run`` (the
whole run in memory, without a store) hands it ``table_reader`` instead. Both answer the same
questions with the same numbers: quantiles bit for bit (numpy's 'linear'), lowest rows and distinct
counts exactly, means within about 1e-16 (numpy's pairwise sum here, DuckDB's compensated sum there).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class TableReader:
    """``analyses.core.contract.Reader`` over in-memory Arrow tables (each the concatenation of every
    shard's table, in shard order)."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables

    def __call__(self, table: str, columns: Sequence[str] | None = None, where: dict | None = None) -> Any:
        """The table's rows (``where``: a column equals a value or is in a list of values); None when absent."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = self.tables.get(table)
        if rows is None:
            return None
        for column, value in (where or {}).items():
            kind = rows.schema.field(column).type
            values = rows[column].cast(kind.value_type) if pa.types.is_dictionary(kind) else rows[column]
            if isinstance(value, (list, tuple, set)):
                mask = pc.is_in(values, value_set=pa.array(list(value), type=values.type))
            else:
                mask = pc.equal(values, pa.scalar(value, type=values.type))
            rows = rows.filter(mask)
        return rows.select(list(columns)) if columns else rows

    def count_distinct(self, table: str, columns: Sequence[str], where: dict | None = None) -> int:
        rows = self(table, list(columns), where)
        if rows is None or rows.num_rows == 0:
            return 0
        return len(set(zip(*(rows[c].to_pylist() for c in columns))))

    def lowest(self, table: str, value: str, n: int, columns: Sequence[str], distinct: Sequence[str] = (),
               rows_per_key: int = 1, where: dict | None = None) -> Any:
        """The n rows with the lowest value, ties in stored order; with ``distinct``, each key's first
        such row only (store.shard_reader.ShardReader.lowest)."""
        import numpy as np
        import pyarrow as pa

        rows = self(table, list(dict.fromkeys([*columns, *distinct, value])), where)
        if rows is None:
            return None
        order = np.argsort(rows[value].to_numpy(zero_copy_only=False), kind="stable")
        if distinct:
            keys = list(zip(*(rows[c].to_pylist() for c in distinct)))
            first: dict[tuple, int] = {}
            for row in order.tolist():
                if keys[row] not in first:
                    first[keys[row]] = row
                    if len(first) >= n:
                        break
            chosen = list(first.values())
        else:
            chosen = order[: max(0, n)].tolist()
        return rows.take(pa.array(chosen[: max(0, n)], type=pa.int64())).select(list(columns))

    def quantiles(self, table: str, value: str, by: Sequence[str], quantiles: Mapping[str, float],
                  where: dict | None = None) -> Any:
        """Per distinct ``by`` (ascending): n, mean (numpy) and numpy.quantile ('linear') of value as float64."""
        import numpy as np
        import pyarrow as pa

        rows = self(table, list(dict.fromkeys([*by, value])), where)
        if rows is None:
            return None
        values = rows[value].to_numpy(zero_copy_only=False).astype(np.float64)
        keys = [rows[c].cast(rows[c].type.value_type) if pa.types.is_dictionary(rows[c].type) else rows[c] for c in by]
        as_numpy = [np.asarray(k.to_numpy(zero_copy_only=False)) for k in keys]
        order = np.lexsort(tuple(reversed(as_numpy))) if as_numpy else np.arange(len(values))
        sorted_keys = [k[order] for k in as_numpy]
        if len(values) == 0:
            starts = np.array([], dtype=np.int64)
        elif sorted_keys:
            starts = np.flatnonzero(np.concatenate([[True], np.any([k[1:] != k[:-1] for k in sorted_keys], axis=0)]))
        else:
            starts = np.array([0])
        bounds = list(zip(starts.tolist(), [*starts[1:].tolist(), len(values)]))
        out: dict[str, Any] = {name: pa.array(k[starts], type=key.type) for name, k, key in zip(by, sorted_keys, keys)}
        groups = [values[order][start:end] for start, end in bounds]
        out["n"] = pa.array([len(g) for g in groups], type=pa.int64())
        out["mean"] = pa.array([float(g.mean()) for g in groups], type=pa.float64())
        for name, q in quantiles.items():
            out[name] = pa.array([float(np.quantile(g, q)) for g in groups], type=pa.float64())
        return pa.table(out)


def table_reader(tables: dict[str, Any]) -> TableReader:
    """read(table, columns=None, where=None) over in-memory Arrow tables, as the store's reader:
    ``where`` keeps rows whose column equals a value or is in a list of values."""
    return TableReader(tables)
