"""Bulk result insert: shards of a truncation-shaped table written as Parquet and registered in
DuckDB (the path every run takes), against the naive reference: row-by-row INSERTs
(executemany) of the same rows.

Prints rows/s of the shard write, of the registration and of both together, rows/s of the naive
loop on a sample, the ratio, and checks that the stored rows equal the generated ones (count and
sums). The target: registration at least 1M rows/s.
    python benchmarks/store_insert.py [--shards 8] [--rows-per-shard 1000000] [--naive-rows 5000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLUMNS = [["input_id", "INTEGER"], ["pos", "INTEGER"], ["token", "VARCHAR"], ["category", "VARCHAR"],
           ["layer", "SMALLINT"], ["context", "SMALLINT"], ["cos", "FLOAT"]]


def shard_table(index: int, n_rows: int, n_layers: int = 30, k_max: int = 10):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(index)
    cells = n_layers * k_max
    n_tokens = n_rows // cells
    words = pa.array([f" w{i}" for i in range(50)], type=pa.string())
    categories = pa.array(["alphabetic", "comma", "common word", "full stop", "newline", "other"], type=pa.string())
    return pa.table({
        "input_id": pa.array(np.repeat(index * 1000 + np.arange(n_tokens, dtype=np.int32) // 200, cells)),
        "pos": pa.array(np.repeat(np.arange(n_tokens, dtype=np.int32) % 200, cells)),
        "token": pa.DictionaryArray.from_arrays(pa.array(np.repeat(rng.integers(0, 50, n_tokens, dtype=np.int32), cells)), words),
        "category": pa.DictionaryArray.from_arrays(pa.array(np.repeat(rng.integers(0, 6, n_tokens, dtype=np.int32), cells)), categories),
        "layer": pa.array(np.tile(np.repeat(np.arange(n_layers, dtype=np.int16), k_max), n_tokens)),
        "context": pa.array(np.tile(np.arange(1, k_max + 1, dtype=np.int16), n_tokens * n_layers)),
        "cos": pa.array(rng.random(n_tokens * cells, dtype=np.float32)),
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rows-per-shard", type=int, default=1_000_200)
    parser.add_argument("--naive-rows", type=int, default=5_000)
    args = parser.parse_args()

    import duckdb

    from store import Store
    from store.shards import FINAL

    tables = [shard_table(i, args.rows_per_shard) for i in range(args.shards)]
    n_rows = sum(t.num_rows for t in tables)
    expected = sum(float(t["cos"].to_numpy().astype("float64").sum()) for t in tables)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "insert.duckdb")
        run_id = store.begin_run("truncation", "bench", {}, "cpu", "float32", {}, n_shards=args.shards)
        folder = store.run_folder(run_id)
        folder.create({"run_id": run_id, "n_shards": args.shards, "shards": [[i] for i in range(args.shards)], "tables": {"truncation": COLUMNS}})
        started = time.perf_counter()
        for index, table in enumerate(tables):
            folder.write_shard(index, {"truncation": table})
        written = time.perf_counter() - started
        folder.write_shard(FINAL, {})
        folder.mark_complete({"provenance": {}, "finished_at": None})
        started = time.perf_counter()
        store.register(run_id)
        registered = time.perf_counter() - started
        with store.read() as conn:
            count, total = conn.execute("SELECT count(*), sum(cos::DOUBLE) FROM truncation WHERE run_id = ?", [run_id]).fetchone()
        agree = count == n_rows and abs(total - expected) <= 1e-6 * max(1.0, abs(expected))

        sample = tables[0].slice(0, args.naive_rows)
        rows = list(zip(*[sample[name].to_pylist() for name in sample.column_names]))
        conn = duckdb.connect(str(Path(tmp) / "naive.duckdb"))
        conn.execute("CREATE TABLE truncation (run_id BIGINT, " + ", ".join(f"{c} {t}" for c, t in COLUMNS) + ")")
        started = time.perf_counter()
        conn.executemany("INSERT INTO truncation VALUES (1, ?, ?, ?, ?, ?, ?, ?)", rows)
        naive = time.perf_counter() - started
        naive_count = conn.execute("SELECT count(*) FROM truncation").fetchone()[0]
        conn.close()
    fast_rate = n_rows / registered
    both_rate = n_rows / (written + registered)
    naive_rate = naive_count / naive
    print(f"rows: {n_rows:,} in {args.shards} shards; stored rows and sum(cos) agree: {agree}")
    print(f"Parquet shard write: {n_rows / written:,.0f} rows/s ({written:.2f} s)")
    print(f"registration (Parquet -> DuckDB): {fast_rate:,.0f} rows/s ({registered:.2f} s); target >= 1,000,000")
    print(f"write + registration: {both_rate:,.0f} rows/s")
    print(f"naive row-by-row INSERT: {naive_rate:,.0f} rows/s ({naive_count:,} rows in {naive:.2f} s)")
    print(f"ratio registration / naive: {fast_rate / naive_rate:,.0f}x")
    return 0 if agree and fast_rate >= 1_000_000 else 1


if __name__ == "__main__":
    sys.exit(main())
