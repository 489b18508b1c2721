"""Mergeable aggregates: what a sharded analysis that aggregates over its inputs stores per shard,
and how ``finalize`` merges it.

A shard of such an analysis writes a partial table (sums, sums of squares, counts, per key such as
a layer) over its own inputs; ``finalize`` reads every stored shard's rows (``read``) and merges
them here. Sums are merged with ``math.fsum``: the correctly rounded sum of the shards' partial
sums, whatever the order or the number of shards that hold them, so one partial (a one-shard run)
merges to itself bit for bit and a resumed or swept run, with the same shards, to the same bits.
Counts are merged as integers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def merged_sums(read: Callable[..., Any], table: str, keys: Sequence[str], sums: Sequence[str] = (),
                counts: Sequence[str] = ()) -> dict[str, Any] | None:
    """Per distinct key (sorted ascending): each ``sums`` column merged with math.fsum over every
    stored shard's rows (float64) and each ``counts`` column as an int64 total. None when no shard
    stored the table. Returns {column: numpy array} for the keys, the sums and the counts, and
    n_rows: how many stored rows each key has."""
    import math

    import numpy as np

    stored = read(table, [*keys, *sums, *counts])
    if stored is None or stored.num_rows == 0:
        return None
    key_columns = [stored[name].to_numpy() for name in keys]
    # Group ids over the key tuples, sorted by key (lexsort: the last key is the primary one).
    order = np.lexsort(tuple(reversed(key_columns))) if key_columns else np.arange(stored.num_rows)
    sorted_keys = [column[order] for column in key_columns]
    if sorted_keys:
        starts = np.flatnonzero(np.concatenate([[True], np.any([k[1:] != k[:-1] for k in sorted_keys], axis=0)]))
    else:
        starts = np.array([0])
    bounds = list(zip(starts.tolist(), [*starts[1:].tolist(), stored.num_rows]))
    out: dict[str, Any] = {name: column[starts] for name, column in zip(keys, sorted_keys)}
    out["n_rows"] = np.diff(np.append(starts, stored.num_rows)).astype(np.int64)
    for name in sums:
        values = stored[name].to_numpy(zero_copy_only=False).astype(np.float64)[order]
        out[name] = np.array([math.fsum(values[start:end].tolist()) for start, end in bounds], dtype=np.float64)
    for name in counts:
        values = stored[name].to_numpy(zero_copy_only=False).astype(np.int64)[order]
        out[name] = np.add.reduceat(values, starts).astype(np.int64)
    return out

