"""The store's reader over a run's shards (DuckDB over their Parquet files) answers as the in-memory
reader and as numpy: quantiles bit for bit (numpy.quantile, 'linear'), lowest rows and distinct
counts exactly, means within 1e-12 (compensated sum against numpy's pairwise sum)."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from analyses.core.sharding import TableReader
from store.shard_reader import ShardReader, ranks
from store.shards import FINAL, RunFolder

QUANTILES = {"q0": 0.0, "q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95, "q1": 1.0}
MEAN_ATOL = 1e-12


def shard_tables(seed: int = 0, n_shards: int = 5) -> list[pa.Table]:
    """Truncation-shaped rows (token keys, layer, category, a float32 value) with ties and a lone group."""
    rng = np.random.default_rng(seed)
    parts = []
    for shard in range(n_shards):
        n = int(rng.integers(40, 120))
        layer = rng.integers(0, 3, n).astype(np.int16)
        category = rng.choice(["comma", "alphabetic", "other"], n)
        value = rng.normal(0.5, 0.3, n).astype(np.float32)
        value[rng.random(n) < 0.3] = np.float32(0.25)  # many ties
        value[: n // 4] = np.round(value[: n // 4], 2)
        if shard == 0:
            category[0], layer[0] = "lone", 0
        parts.append(pa.table({
            "input_id": pa.array(np.full(n, shard, dtype=np.int32) * 1000 + np.arange(n, dtype=np.int32) // 3),
            "pos": pa.array(np.arange(n, dtype=np.int32) % 3),
            "layer": pa.array(layer),
            "category": pa.array(category).dictionary_encode(),
            "cos": pa.array(value),
        }))
    return parts


def stored(tmp_path, parts: list[pa.Table], **settings) -> ShardReader:
    folder = RunFolder(tmp_path / "t.duckdb", 1)
    folder.create({"run_id": 1})
    for index, part in enumerate(parts):
        folder.write_shard(index, {"t": part})
    folder.write_shard(FINAL, {"t": parts[0]})  # the final shard is never read as a computed one
    return ShardReader(folder, **settings)


def numpy_groups(table: pa.Table, by: list[str]) -> dict[tuple, np.ndarray]:
    values = table["cos"].to_numpy().astype(np.float64)
    keys = [()] * len(values) if not by else list(zip(*(table[c].cast(pa.string()).to_pylist() if pa.types.is_dictionary(table[c].type) else table[c].to_pylist() for c in by)))
    groups: dict[tuple, list] = {}
    for key, value in zip(keys, values):
        groups.setdefault(key, []).append(value)
    return {key: np.array(found) for key, found in sorted(groups.items())}


@pytest.mark.parametrize("settings", [{}, {"buckets": 2, "fetch_at_most": 1}, {"buckets": 3, "fetch_at_most": 5}])
def test_quantiles_equal_numpy_bit_for_bit(tmp_path, settings):
    parts = shard_tables()
    whole = pa.concat_tables(parts)
    reader = stored(tmp_path, parts, **settings)
    for by in (["layer"], ["category", "layer"], []):
        got = reader.quantiles("t", "cos", by, QUANTILES)
        memory = TableReader({"t": whole}).quantiles("t", "cos", by, QUANTILES)
        expected = numpy_groups(whole, by)
        assert got.num_rows == memory.num_rows == len(expected)
        assert got.column_names == [*by, "n", "mean", *QUANTILES]
        for row, (key, values) in enumerate(expected.items()):
            assert tuple(str(got[c][row].as_py()) for c in by) == tuple(str(k) for k in key)
            assert got["n"][row].as_py() == memory["n"][row].as_py() == len(values)
            assert abs(got["mean"][row].as_py() - values.mean()) <= MEAN_ATOL
            for name, q in QUANTILES.items():
                assert got[name][row].as_py() == memory[name][row].as_py() == float(np.quantile(values, q)), (key, name)
    if settings.get("fetch_at_most") == 1:
        assert reader.passes > 3  # the refinement over value intervals ran, not one read of every value


def test_where_filters_and_nan_and_infinity(tmp_path):
    parts = shard_tables(seed=1, n_shards=3)
    cos = parts[1]["cos"].to_numpy().copy()
    cos[5] = np.nan
    category = parts[1]["category"].to_pylist()
    category[5] = "comma"
    parts[1] = parts[1].set_column(4, "cos", pa.array(cos)).set_column(3, "category", pa.array(category).dictionary_encode())
    layer_of_nan = parts[1]["layer"][5].as_py()
    reader = stored(tmp_path, parts, buckets=2, fetch_at_most=2)
    got = reader.quantiles("t", "cos", ["layer"], {"median": 0.5}, where={"category": ["comma", "other"]})
    memory = TableReader({"t": pa.concat_tables(parts)}).quantiles("t", "cos", ["layer"], {"median": 0.5}, where={"category": ["comma", "other"]})
    for row in range(got.num_rows):
        a, b = got["median"][row].as_py(), memory["median"][row].as_py()
        assert (math.isnan(a) and math.isnan(b)) or a == b
    nan_row = got["layer"].to_pylist().index(layer_of_nan)
    assert math.isnan(got["median"][nan_row].as_py()) and math.isnan(got["mean"][nan_row].as_py())
    assert reader.quantiles("t", "cos", ["layer"], {"median": 0.5}, where={"layer": 99}).num_rows == 0
    cos[5] = np.inf
    parts[1] = parts[1].set_column(4, "cos", pa.array(cos))
    with pytest.raises(ValueError, match="infinite"):
        stored(tmp_path / "inf", parts).quantiles("t", "cos", ["layer"], {"median": 0.5})


def test_lowest_distinct_and_counts_equal_memory_and_brute_force(tmp_path):
    parts = shard_tables(seed=2)
    whole = pa.concat_tables(parts)
    reader, memory = stored(tmp_path, parts), TableReader({"t": whole})
    columns = ("input_id", "pos", "layer", "cos")
    # Brute force: each (input_id, pos) at its lowest value, first stored on ties; then ascending, stored order on ties.
    best: dict[tuple, tuple] = {}
    for row, (input_id, pos, layer, value) in enumerate(zip(*(whole[c].to_pylist() for c in columns))):
        key = (input_id, pos)
        if key not in best or value < best[key][1][3]:
            best[key] = (row, (input_id, pos, layer, value))
    expected = [found for _, found in sorted(best.values(), key=lambda item: (item[1][3], item[0]))][:7]
    rows_per_key = max(sum(1 for k in zip(whole["input_id"].to_pylist(), whole["pos"].to_pylist()) if k == key) for key in best)
    for source in (reader, memory):
        got = source.lowest("t", "cos", 7, columns, distinct=("input_id", "pos"), rows_per_key=rows_per_key)
        assert list(zip(*(got[c].to_pylist() for c in columns))) == expected
        plain = source.lowest("t", "cos", 5, ("input_id", "cos"), where={"layer": 1})
        order = sorted(range(whole.num_rows), key=lambda r: (whole["cos"][r].as_py(), r))
        assert plain["input_id"].to_pylist() == [whole["input_id"][r].as_py() for r in order if whole["layer"][r].as_py() == 1][:5]
        assert source.count_distinct("t", ["input_id"]) == len(set(whole["input_id"].to_pylist()))
        assert source.count_distinct("t", ["input_id", "pos"], {"layer": 0}) == len(
            {(i, p) for i, p, layer in zip(whole["input_id"].to_pylist(), whole["pos"].to_pylist(), whole["layer"].to_pylist()) if layer == 0})
    assert reader.lowest("missing", "cos", 3, ("cos",)) is None and reader.quantiles("missing", "cos", [], {"m": 0.5}) is None


def test_ranks_are_numpys_order_statistics():
    values = np.arange(11, dtype=np.float64) ** 2
    for n in (1, 2, 3, 10, 11):
        for q in QUANTILES.values():
            lower, upper = ranks(n, q)
            assert lower <= upper < n
            assert values[lower] <= np.quantile(values[:n], q) <= values[upper]
