"""Truncation's finalize at 10x the stored rows: peak RSS of the streamed finalize (DuckDB over the
shards' Parquet files, store.shard_reader) against the in-memory one it replaced
(analyses.truncation.reference.in_memory_finalize), each in a fresh process, and their results
compared (quantiles bit for bit, means within 1e-12, the same lowest tokens and notes).

    python benchmarks/finalize_memory.py [--shards 2] [--factor 10] [--rows-per-shard 1000200]

The shards are truncation-shaped (benchmarks/store_insert.py: 30 layers x k = 1..10 per token,
uniform random cosines, six categories) with their tokens table; the small run's shard folders are
links to the first shards of the large one. Prints peak RSS and wall seconds per finalize and size,
the ratios large/small, and exits 1 when the results differ or the streamed ratio exceeds --target.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
N_LAYERS, K_MAX, N_LOWEST = 30, 10, 30
MEAN_ATOL = 1e-12


def write_shards(db: Path, n_small: int, n_large: int, rows_per_shard: int) -> None:
    import numpy as np
    import pyarrow as pa
    from store_insert import shard_table

    from store.shards import RunFolder

    small, large = RunFolder(db, 1), RunFolder(db, 2)
    for folder in (small, large):
        folder.create({"run_id": folder.run_id})
    cells = N_LAYERS * K_MAX
    for index in range(n_large):
        table = shard_table(index, rows_per_shard, N_LAYERS, K_MAX)
        first = np.arange(0, table.num_rows, cells)
        tokens = pa.table({"input_id": table["input_id"].take(first), "pos": table["pos"].take(first),
                           "token_id": pa.array(np.zeros(len(first), dtype=np.int32)), "token": table["token"].take(first).cast(pa.string())})
        large.write_shard(index, {"truncation": table, "tokens": tokens})
        if index < n_small:
            os.symlink(large.shard_path(index), small.shard_path(index))


def child(mode: str, db: str, run_id: int, out: str) -> None:
    """One finalize over one run folder; its results as JSON in ``out``."""
    import numpy as np

    from analyses.core.contract import no_progress
    from analyses.truncation import ANALYSIS, Params
    from analyses.truncation.reference import in_memory_finalize
    from store.shard_reader import ShardReader
    from store.shards import RunFolder

    reader = ShardReader(RunFolder(db, run_id))
    started = time.monotonic()
    if mode == "old":
        summary, lowest, notes = in_memory_finalize(reader, N_LAYERS, K_MAX, N_LOWEST)
    else:
        class Never:
            def is_set(self) -> bool:
                return False

        result = ANALYSIS.finalize(Params(k_max=K_MAX, n_lowest=N_LOWEST), {"mean": np.zeros((N_LAYERS, 1))}, reader, no_progress, Never())
        summary = [tuple(row.values()) for row in result.tables["truncation_summary"].to_pylist()]
        lowest = [tuple(row.values()) for row in result.tables["truncation_lowest"].to_pylist()]
        notes = result.notes
    Path(out).write_text(json.dumps({"summary": summary, "lowest": lowest, "notes": notes, "seconds": time.monotonic() - started}))


def measure(mode: str, db: Path, run_id: int, out: Path) -> tuple[float, dict]:
    process = subprocess.Popen([sys.executable, __file__, "--child", mode, str(db), str(run_id), str(out)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} finalize of run {run_id} failed: {process.stderr.read().decode()[-600:] if process.stderr else ''}")
    return usage.ru_maxrss / 1024, json.loads(out.read_text())


def same(old: dict, new: dict) -> list[str]:
    problems = []
    if len(old["summary"]) != len(new["summary"]):
        problems.append(f"{len(old['summary'])} summary rows in memory, {len(new['summary'])} streamed")
    for a, b in zip(old["summary"], new["summary"]):
        if a[:4] != b[:4] or abs(a[4] - b[4]) > MEAN_ATOL or a[5:] != b[5:]:
            problems.append(f"summary row {a[:3]}: {a[3:]} in memory, {b[3:]} streamed")
            break
    if old["lowest"] != new["lowest"]:
        problems.append("the lowest tokens differ")
    if old["notes"] != new["notes"]:
        problems.append(f"notes {old['notes']} in memory, {new['notes']} streamed")
    return problems


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--rows-per-shard", type=int, default=1_000_200)
    parser.add_argument("--target", type=float, default=1.2)
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "finalize.duckdb"
        started = time.monotonic()
        write_shards(db, args.shards, args.shards * args.factor, args.rows_per_shard)
        print(f"wrote {args.shards * args.factor} shards of {args.rows_per_shard:,} rows in {time.monotonic() - started:.0f} s", flush=True)
        peaks: dict[tuple[str, int], float] = {}
        for run_id, shards in ((1, args.shards), (2, args.shards * args.factor)):
            found = {}
            for mode in ("new", "old"):
                peak, result = measure(mode, db, run_id, Path(tmp) / f"{mode}-{run_id}.json")
                peaks[mode, run_id], found[mode] = peak, result
                print(f"{mode:3s} finalize, {shards * args.rows_per_shard:>12,} rows: peak RSS {peak:7.1f} MiB, {result['seconds']:6.1f} s", flush=True)
            problems = same(found["old"], found["new"])
            print("results: " + ("streamed = in memory (quantiles bit for bit, means within 1e-12, lowest tokens and notes equal)" if not problems else "; ".join(problems)))
            failed |= bool(problems)
        for mode in ("new", "old"):
            ratio = peaks[mode, 2] / peaks[mode, 1]
            print(f"{'streamed' if mode == 'new' else 'in memory'}: peak RSS ratio at {args.factor}x the rows {ratio:.3f}")
        failed |= peaks["new", 2] / peaks["new", 1] > args.target
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
