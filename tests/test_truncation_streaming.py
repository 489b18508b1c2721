"""Truncation's finalize reduced where its shards are stored (DuckDB over their files) equals the
in-memory finalize it replaced: the same summary rows, quantiles bit for bit, means within 1e-12
(DuckDB's compensated sum against numpy's row-by-row sum), the same lowest tokens."""
from __future__ import annotations

import pytest

from analyses.core.sharding import table_reader
from analyses.inputs import corpus
from analyses.truncation import Params
from analyses.truncation.reference import in_memory_lowest, in_memory_summary
from tests.helpers.merging import run_in_shards

MEAN_ATOL = 1e-12


def assert_summary_equal(got: list[tuple], expected: list[tuple]) -> None:
    assert len(got) == len(expected) > 0
    for new, old in zip(got, expected):
        assert new[:4] == old[:4]
        assert abs(new[4] - old[4]) <= MEAN_ATOL, (new, old)
        assert new[5:] == old[5:], (new, old)  # the quantiles, bit for bit


@pytest.fixture
def narrow_refinement(monkeypatch):
    """The runner's reader refines value intervals two buckets at a time down to two values, so a
    small run goes through the refinement that a large one needs."""
    import store.shard_reader as shard_reader

    monkeypatch.setattr(shard_reader, "BUCKETS", 2)
    monkeypatch.setattr(shard_reader, "FETCH_AT_MOST", 2)


def test_stored_run_equals_the_in_memory_finalize(tiny_model, store, narrow_refinement):
    from analyses.core.contract import no_progress
    from app.run.runner import RunRequest, execute, prepare

    inputs, _ = corpus.sample_documents(None, 5, seed=3, max_tokens=20)
    raw = {"k_max": "4", "batch_tokens": "64", "n_lowest": "6"}
    prepared = prepare(RunRequest("truncation", tuple(inputs), raw))
    run_id = execute(store, tiny_model, prepared, no_progress, shard_docs=2)
    params = Params(k_max=4, batch_tokens=64, n_lowest=6)

    # The same shards computed in memory, finalized the old way.
    tables = run_in_shards(prepared.analysis, tiny_model, list(inputs), params, shard_docs=2)
    read = table_reader(tables)
    n_layers = tiny_model.n_layers
    expected_summary = in_memory_summary(read, n_layers, 4)
    expected_lowest = in_memory_lowest(read, n_layers, 4, 6)

    summary = store.query("SELECT layer, context, category, n, mean, median, q05, q25, q75, q95 FROM truncation_summary WHERE run_id = ?", [run_id]).rows
    order = {row[:3]: i for i, row in enumerate(expected_summary)}
    assert_summary_equal(sorted(summary, key=lambda row: order[row[:3]]), expected_summary)
    lowest = store.query("SELECT * EXCLUDE (run_id) FROM truncation_lowest WHERE run_id = ? ORDER BY rank", [run_id]).rows
    assert lowest == expected_lowest

    # The in-memory path (Analysis.run's reader) gives the same tables as the old finalize too.
    assert_summary_equal([tuple(row.values()) for row in tables["truncation_summary"].to_pylist()], expected_summary)
    assert [tuple(row.values()) for row in tables["truncation_lowest"].to_pylist()] == expected_lowest
    notes = store.query("SELECT provenance FROM runs WHERE run_id = ?", [run_id]).rows[0][0]
    assert '"analysed_tokens": ' + str(expected_summary[0][3]) in notes
