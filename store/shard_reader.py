"""What ``Analysis.finalize`` reads a run's stored shards through: Arrow tables, and DuckDB over the
shards' Parquet files for what must not be held in memory (exact quantiles, lowest-k, distinct counts).

The analyses may not import duckdb; the runner hands finalize a ``ShardReader`` (the shape of
``analyses.core.contract.Reader``; ``analyses.core.sharding.TableReader`` is its in-memory twin for
runs without a store). Every query runs on a private in-memory DuckDB connection with one thread
(so that floating-point sums are added in one order: a resumed or swept run, with the same shards,
gets the same bits), a memory limit and a spill folder inside the run's folder: memory does not
grow with the number of shards.

Quantiles are exact: numpy's default ('linear', Hyndman and Fan's 7th) on the values as float64,
bit for bit. The two order statistics each quantile interpolates between are found by refinement
over value intervals, never by holding a group's values: one pass counts each group and takes its
minimum and maximum; each further pass splits the intervals that hold a wanted rank into
``buckets`` value buckets (counts, minimum and maximum per bucket, by a monotone bucket function,
so a bucket's [min, max] holds exactly its rows) and keeps the bucket that holds the rank; once an
interval holds at most ``fetch_at_most`` values (or one distinct value), its values are read and
the rank taken. A group holding a NaN gets NaN quantiles and mean (as numpy); an infinite value is
refused. Means are DuckDB's fsum (compensated summation) over the group, divided by its count:
within about 1e-16 of numpy's pairwise mean, not bit for bit.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from store.shards import RunFolder

MEMORY_LIMIT = "256MB"
BUCKETS = 256
FETCH_AT_MOST = 256
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a column name: {name!r}")
    return f'"{name}"'


def numpy_linear_quantile(lower: float, upper: float, n: int, q: float) -> float:
    """numpy.quantile's 'linear' interpolation between the order statistics it picks for q over n
    values (``ranks``), computed as numpy computes it (the same float64 operations)."""
    virtual = (n - 1) * q
    gamma = virtual - (n - 1 if virtual >= n - 1 else math.floor(virtual))
    diff = upper - lower
    return upper - diff * (1 - gamma) if gamma >= 0.5 else lower + diff * gamma


def ranks(n: int, q: float) -> tuple[int, int]:
    """The 0-based order statistics numpy's 'linear' quantile q of n values interpolates between."""
    virtual = (n - 1) * q
    if virtual >= n - 1:
        return n - 1, n - 1
    lower = max(0, math.floor(virtual))
    return lower, lower + 1


class ShardReader:
    """A run's stored shards (the computed ones, in shard order; the final and a partial one left out)."""

    def __init__(self, folder: RunFolder, memory_limit: str | None = None, buckets: int | None = None,
                 fetch_at_most: int | None = None) -> None:
        # The module's settings are read here, not bound as defaults: a test narrows them for the runner's reader.
        self.folder, self.memory_limit = folder, memory_limit or MEMORY_LIMIT
        self.buckets, self.fetch_at_most = buckets or BUCKETS, fetch_at_most or FETCH_AT_MOST
        if self.buckets < 2 or self.fetch_at_most < 1:
            raise ValueError("buckets must be at least 2 and fetch_at_most at least 1")
        self.passes = 0  # passes over the stored rows the last quantiles() made (tests and benchmarks)

    def __call__(self, table: str, columns: Sequence[str] | None = None, where: dict | None = None) -> Any:
        """One table over every computed shard as one Arrow table (RunFolder.read); None when none stored it."""
        return self.folder.read(table, columns, where)

    # --- DuckDB over the Parquet files ---

    def files(self, table: str) -> list[str]:
        """The table's Parquet file in every computed shard, in shard order."""
        paths = []
        for index in self.folder.shards_on_disk():
            path = self.folder.shard_path(index) / f"{table}.parquet"
            if index >= 0 and path.is_file():
                paths.append(str(path))
        return paths

    def _connect(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        spill = self.folder.path / ".duckdb-spill"
        return duckdb.connect(":memory:", config={
            "threads": 1, "memory_limit": self.memory_limit, "temp_directory": str(spill),
            "preserve_insertion_order": False,
        })

    def _source(self, files: list[str], where: dict | None, row_order: bool = False) -> tuple[str, list]:
        """FROM ... WHERE ... over the files, with its parameters."""
        params: list = [files]
        clauses = []
        for column, value in (where or {}).items():
            if isinstance(value, (list, tuple, set)):
                values = list(value)
                if not values:
                    clauses.append("false")
                    continue
                clauses.append(f"{_ident(column)} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
            else:
                clauses.append(f"{_ident(column)} = ?")
                params.append(value)
        options = ", filename = true, file_row_number = true" if row_order else ""
        sql = f"read_parquet(?{options})" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        return sql, params

    def count_distinct(self, table: str, columns: Sequence[str], where: dict | None = None) -> int:
        """How many distinct values (tuples) of ``columns`` the stored rows hold."""
        files = self.files(table)
        if not files:
            return 0
        source, params = self._source(files, where)
        names = ", ".join(_ident(c) for c in columns)
        conn = self._connect()
        try:
            return int(conn.execute(f"SELECT count(*) FROM (SELECT DISTINCT {names} FROM {source})", params).fetchone()[0])  # type: ignore[index]
        finally:
            conn.close()

    def lowest(self, table: str, value: str, n: int, columns: Sequence[str], distinct: Sequence[str] = (),
               rows_per_key: int = 1, where: dict | None = None) -> Any:
        """The ``n`` stored rows with the lowest ``value`` (ascending; ties in stored order: shard, then
        row), as Arrow with ``columns``. With ``distinct``, only the first such row of each distinct key
        counts (its lowest value; ties: the first stored), ``rows_per_key`` being the most rows a key
        has: the answer is within the first n * rows_per_key rows of that order (a top-n, not a sort).
        None when no shard stored the table."""
        import pyarrow as pa

        files = self.files(table)
        if not files:
            return None
        source, params = self._source(files, where, row_order=True)
        wanted = list(dict.fromkeys([*columns, *distinct]))
        select = ", ".join(_ident(c) for c in wanted)
        limit = max(0, n) * (max(1, rows_per_key) if distinct else 1)
        conn = self._connect()
        try:
            rows = conn.sql(f"SELECT {select} FROM {source} ORDER BY {_ident(value)}, filename, file_row_number LIMIT {limit}", params=params).to_arrow_table()
        finally:
            conn.close()
        if distinct:
            keys = list(zip(*(rows[c].to_pylist() for c in distinct)))
            first: dict[tuple, int] = {}
            for row, key in enumerate(keys):
                if key not in first:
                    first[key] = row
                    if len(first) == n:
                        break
            rows = rows.take(pa.array(list(first.values()), type=pa.int64()))
        return rows.select(list(columns)).slice(0, max(0, n))

    def quantiles(self, table: str, value: str, by: Sequence[str], quantiles: Mapping[str, float],
                  where: dict | None = None) -> Any:
        """Per distinct ``by`` (ascending): n (int64), mean and each named quantile (float64) of
        ``value`` as float64, exact (see the module doc). None when no shard stored the table."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        files = self.files(table)
        if not files:
            return None
        for q in quantiles.values():
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"a quantile is between 0 and 1, not {q}")
        source, params = self._source(files, where)
        keys = [_ident(c) for c in by]
        key_list = ", ".join(keys)
        rows = f"(SELECT {(key_list + ', ') if keys else ''}CAST({_ident(value)} AS DOUBLE) AS v FROM {source})"
        conn = self._connect()
        self.passes = 0
        try:
            groups = conn.sql(
                f"SELECT {(key_list + ', ') if keys else ''}count(*) AS n, count(*) FILTER (WHERE isnan(v)) AS nans, "
                "count(*) FILTER (WHERE isinf(v)) AS infs, fsum(v) AS total, min(v) FILTER (WHERE NOT isnan(v)) AS lo, "
                f"max(v) FILTER (WHERE NOT isnan(v)) AS hi FROM {rows} {('GROUP BY ' + key_list + ' ORDER BY ' + key_list) if keys else ''}",
                params=params).to_arrow_table()
            self.passes += 1
            if keys:
                groups = groups.filter(pc.greater(groups["n"], 0))
            elif groups["n"][0].as_py() == 0:
                groups = groups.slice(0, 0)
            if pc.sum(groups["infs"]).as_py():
                raise ValueError(f"{table}.{value} holds an infinite value; its quantiles are not computed")
            n = groups["n"].to_numpy().astype(np.int64)
            nans = groups["nans"].to_numpy()
            lo = groups["lo"].to_numpy(zero_copy_only=False)
            hi = groups["hi"].to_numpy(zero_copy_only=False)
            wanted = {(g, rank) for g in range(len(n)) if nans[g] == 0
                      for q in quantiles.values() for rank in ranks(int(n[g]), q)}
            found = self._order_statistics(conn, rows, params, groups.select(list(by)), wanted, n, lo, hi)
        finally:
            conn.close()
        total = groups["total"].to_numpy(zero_copy_only=False)
        out: dict[str, Any] = {name: groups[name] for name in by}
        out["n"] = pa.array(n, type=pa.int64())
        out["mean"] = pa.array(total / np.maximum(n, 1), type=pa.float64())
        for name, q in quantiles.items():
            column = []
            for g in range(len(n)):
                if nans[g]:
                    column.append(math.nan)
                    continue
                lower, upper = ranks(int(n[g]), q)
                column.append(numpy_linear_quantile(found[(g, lower)], found[(g, upper)], int(n[g]), q))
            out[name] = pa.array(column, type=pa.float64())
        return pa.table(out)

    def _order_statistics(self, conn: duckdb.DuckDBPyConnection, rows: str, params: list, keys: Any,
                          wanted: set[tuple[int, int]], n: Any, lo: Any, hi: Any) -> dict[tuple[int, int], float]:
        """{(group, rank): the value at that 0-based rank of the group's sorted values}, by refinement."""
        import numpy as np
        import pyarrow as pa

        by = keys.column_names
        # Each wanted rank sits in an interval [low, high] of its group's values: (group, low, high) ->
        # [count in it, {rank within it: (group, rank)}].
        intervals: dict[tuple[int, float, float], tuple[int, dict[int, tuple[int, int]]]] = {}
        for group, rank in wanted:
            key = (group, float(lo[group]), float(hi[group]))
            intervals.setdefault(key, (int(n[group]), {}))[1][rank] = (group, rank)
        found: dict[tuple[int, int], float] = {}

        def table_of(chosen: list[tuple[int, float, float]], with_scale: bool) -> Any:
            columns = {name: keys[name].take(pa.array([g for g, _, _ in chosen], type=pa.int64())) for name in by}
            columns["iid"] = pa.array(range(len(chosen)), type=pa.int64())
            columns["lo"] = pa.array([low for _, low, _ in chosen], type=pa.float64())
            columns["hi"] = pa.array([high for _, _, high in chosen], type=pa.float64())
            if with_scale:
                columns["scale"] = pa.array([self.buckets / (high * 0.5 - low * 0.5) for _, low, high in chosen], type=pa.float64())
            return pa.table(columns)

        join = " AND ".join([f"r.{_ident(c)} IS NOT DISTINCT FROM i.{_ident(c)}" for c in by] + ["r.v BETWEEN i.lo AND i.hi"])
        while True:
            refine, fetch = [], []
            for key, (count, _) in intervals.items():
                _, low, high = key
                if low == high:
                    for target in intervals[key][1].values():
                        found[target] = low
                elif count > self.fetch_at_most and math.isfinite(self.buckets / (high * 0.5 - low * 0.5)):
                    refine.append(key)
                else:
                    fetch.append(key)
            intervals = {key: intervals[key] for key in refine + fetch}
            if not refine:
                break
            conn.register("i", table_of(refine, True))
            buckets = conn.sql(
                f"SELECT i.iid, least(greatest(floor((r.v * 0.5 - i.lo * 0.5) * i.scale), 0), {self.buckets - 1})::BIGINT AS b, "
                f"count(*) AS n, min(r.v) AS mn, max(r.v) AS mx FROM {rows} r JOIN i ON {join} GROUP BY ALL ORDER BY i.iid, b",
                params=params).to_arrow_table()
            conn.unregister("i")
            self.passes += 1
            iids, counts = buckets["iid"].to_numpy(), buckets["n"].to_numpy()
            mins, maxs = buckets["mn"].to_numpy(), buckets["mx"].to_numpy()
            starts = np.searchsorted(iids, np.arange(len(refine)))
            ends = np.searchsorted(iids, np.arange(len(refine)), side="right")
            narrowed: dict[tuple[int, float, float], tuple[int, dict[int, tuple[int, int]]]] = {key: intervals[key] for key in fetch}
            for iid, key in enumerate(refine):
                first, last = int(starts[iid]), int(ends[iid])
                before = np.concatenate([[0], np.cumsum(counts[first:last])])
                for rank, target in intervals[key][1].items():
                    bucket = int(np.searchsorted(before, rank, side="right")) - 1
                    inner = (key[0], float(mins[first + bucket]), float(maxs[first + bucket]))
                    narrowed.setdefault(inner, (int(counts[first + bucket]), {}))[1][rank - int(before[bucket])] = target
            intervals = narrowed
        if intervals:
            chosen = list(intervals)
            conn.register("i", table_of(chosen, False))
            values = conn.sql(f"SELECT i.iid, r.v FROM {rows} r JOIN i ON {join} ORDER BY i.iid, r.v", params=params).to_arrow_table()
            conn.unregister("i")
            self.passes += 1
            iids, vs = values["iid"].to_numpy(), values["v"].to_numpy()
            starts = np.searchsorted(iids, np.arange(len(chosen)))
            for iid, key in enumerate(chosen):
                for rank, target in intervals[key][1].items():
                    found[target] = float(vs[int(starts[iid]) + rank])
        return found
