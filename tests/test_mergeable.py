"""Analyses that aggregate over their inputs, sharded: every shard stores partial aggregates and
finalize merges them. The merged multi-shard result equals the one-shard one (tolerances per table
below, and why), a run stopped part way resumes to the uninterrupted one bit for bit, and the
merge itself is exact (math.fsum of the partial sums)."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from analyses.core.aggregates import merged_sums
from analyses.core.contract import Input, no_progress
from analyses.core.registry import get_analysis
from analyses.core.sharding import table_reader
from tests.helpers.merging import run_in_shards

TEXTS = [
    "The river flows north through a wide valley before it turns east.",
    "def f(x):\n    return x * 2\n",
    "A short one.",
    "Prices rose again in March, the third month in a row, said the bank.",
    "She opened the door, looked around the empty room and sat down.",
]

# Different shards batch different documents together: a document's float32 activations can differ
# in the last bits with the batch shape (BLAS blocking), so a merged mean matches the one-shard mean
# to float32 rounding (rtol 1e-5), not bit for bit; a mean of differences of float32 entropies and
# losses (about 10 nats) to about two float32 ulps of them (atol 2e-6). Counts are exact.
CASES = {
    "component-norms": ({}, {"component_norms": ("layer", 1e-5, 0.0)}),
    "attention-locality": ({"window": 3}, {"attention_locality": (("layer", "key_offset"), 1e-5, 0.0),
                                           "attention_locality_summary": ("layer", 1e-5, 0.0)}),
    "layer-interventions": ({"interventions": "block,swap"}, {"layer_interventions": (("intervention", "layer"), 1e-5, 2e-6)}),
    # Each prompt is traced alone (noise seeded by its input id) and the buckets are math.fsum over
    # per-prompt rows: bit for bit. threshold -1 keeps every prompt of the random tiny model.
    "causal-trace": ({"kinds": "resid", "samples": 2, "window": 2, "threshold": -1},
                     {"causal_trace_buckets": (("category", "kind", "bucket", "layer"), 0.0, 0.0),
                      "causal_trace": (("input_id", "kind", "layer", "pos"), 0.0, 0.0)}),
}
PROMPT_SET = [  # (prompt, subject, category)
    ("The Eiffel Tower is located in the city of", "Eiffel Tower", "semantic"),
    ("The Colosseum is located in the city of", "Colosseum", "semantic"),
    ("1, 2, 3, 4, 5, 6,", "1, 2", "numbers"),
    ("Mount Fuji is the tallest mountain in", "Mount Fuji", "semantic"),
    ("a, b, c, d, e,", "a, b", "letters"),
    ("The Danube flows through the city of", "Danube", "semantic"),
]


def _inputs(name: str = "") -> list[Input]:
    if name == "causal-trace":
        return [Input(index, "prompt_set", text, {"subject": subject, "category": category})
                for index, (text, subject, category) in enumerate(PROMPT_SET)]
    return [Input(index, "prompt", text, {}) for index, text in enumerate(TEXTS)]


def assert_tables_close(got: pa.Table, want: pa.Table, key, rtol: float, atol: float) -> None:
    keys = [key] if isinstance(key, str) else list(key)
    got, want = got.sort_by([(k, "ascending") for k in keys]), want.sort_by([(k, "ascending") for k in keys])
    assert got.schema == want.schema and got.num_rows == want.num_rows > 0
    for name in want.column_names:
        a, b = got[name].to_numpy(), want[name].to_numpy()
        if np.issubdtype(b.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
        else:
            assert np.array_equal(a, b), name


@pytest.mark.parametrize("name", list(CASES))
def test_merged_shards_equal_the_one_shard_run(tiny_model, name):
    analysis = get_analysis(name)
    raw, tolerances = CASES[name]
    params = analysis.Params(**raw)
    assert analysis.sharded
    whole = analysis.run(tiny_model, _inputs(name), params).tables
    for shard_docs in (1, 2) if name != "causal-trace" else (2,):  # a trace is slow: one split
        merged = run_in_shards(analysis, tiny_model, _inputs(name), params, shard_docs)
        for table, (key, rtol, atol) in tolerances.items():
            assert_tables_close(merged[table], whole[table], key, rtol, atol)


def test_merged_sums_are_the_exactly_rounded_sum_of_the_partials():
    # 1e16 + 1 + -1e16 in any order: a running float sum loses the 1, math.fsum does not.
    partial = pa.table({"layer": pa.array([1, 0, 1, 0, 1], pa.int32()), "value": [1e16, 2.5, 1.0, 0.5, -1e16],
                        "n": pa.array([3, 1, 4, 1, 5], pa.int64())})
    merged = merged_sums(table_reader({"t": partial}), "t", ("layer",), ("value",), ("n",))
    assert merged["layer"].tolist() == [0, 1]
    assert merged["value"].tolist() == [3.0, 1.0] and merged["n"].tolist() == [2, 12]
    assert sum([1e16, 1.0, -1e16]) != math.fsum([1e16, 1.0, -1e16])  # the case is not vacuous
    assert merged_sums(table_reader({}), "t", ("layer",), ("value",)) is None


# -- through the store, on the embedded model -----------------------------------------------------

STORED = {  # the analysis' final tables and its per-shard partial table
    "component-norms": ("component_norms", "component_norms_sums"),
    "attention-locality": ("attention_locality", "attention_locality_summary", "attention_locality_sums"),
    "layer-interventions": ("layer_interventions", "layer_interventions_sums"),
    "causal-trace": ("causal_trace_buckets", "causal_trace", "causal_trace_inputs", "causal_trace_bucket_inputs"),
}
EMBEDDED_PARAMS = {"causal-trace": {"kinds": "resid", "samples": "2", "window": "2", "threshold": "-1"}}


@pytest.mark.integration
@pytest.mark.parametrize("name", list(STORED))
def test_a_stored_run_resumed_part_way_equals_the_uninterrupted_one(embedded_model, db_path, name):
    from app.run.runner import RunRequest, execute, prepare, resume
    from store import Store
    from tests.helpers.shards import pile_inputs, rows, same_results, stop_after_shard

    store = Store(db_path)
    inputs = tuple(_inputs(name)) if name == "causal-trace" else pile_inputs(6)
    raw = EMBEDDED_PARAMS.get(name, {key: str(value) for key, value in CASES[name][0].items()})
    prepared = prepare(RunRequest(name, inputs, raw))
    whole = execute(store, embedded_model, prepared, no_progress, shard_docs=100)
    reference = execute(store, embedded_model, prepared, no_progress, shard_docs=2)
    assert rows(db_path, f"SELECT n_shards, shards_done FROM runs WHERE run_id IN ({whole}, {reference}) ORDER BY run_id") == [(1, 1), (3, 3)]
    partial_table = STORED[name][-1]
    per_shard = 1 if name == "causal-trace" else 3  # one row set per shard; causal-trace's rows are per prompt
    assert rows(db_path, f"SELECT count(*) FROM {partial_table} WHERE run_id = {reference}") == [(per_shard * rows(db_path, f"SELECT count(*) FROM {partial_table} WHERE run_id = {whole}")[0][0],)]
    # Merged over three shards vs one: float32 forwards of other batch shapes (see CASES).
    for table, (key, rtol, atol) in CASES[name][1].items():
        got = store.arrow(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {reference}")
        want = store.arrow(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {whole}")
        assert_tables_close(got, want, key, rtol, atol)
    stopped = stop_after_shard(store, embedded_model, prepared, stored=1, n_shards=3)
    assert rows(db_path, f"SELECT status, shards_done FROM runs WHERE run_id = {stopped}") == [("cancelled", 1)]
    assert rows(db_path, f"SELECT count(*) FROM {STORED[name][0]} WHERE run_id = {stopped}") == [(0,)]  # final tables only at the end
    notes = []
    resume(store, embedded_model, stopped, lambda done, total, note="": notes.append(note))
    assert not any("shard 1/3" in note for note in notes)  # the stored shard is not computed again
    same_results(db_path, reference, stopped, (*STORED[name], "tokens"))  # the same shards: bit for bit


def test_verify_recomputes_a_merged_table_over_every_input(tiny_model, db_path):
    from app.run.runner import RunRequest, execute, prepare
    from app.run.verify import verify
    from store import Store

    store = Store(db_path)
    run_id = execute(store, tiny_model, prepare(RunRequest("component-norms", tuple(_inputs()), {})), no_progress, shard_docs=2)
    verdict = verify(store, tiny_model, run_id, sample=2)
    assert verdict.table == "component_norms" and verdict.cells > 0 and verdict.differences == []
    with store.write() as conn:
        conn.execute("UPDATE component_norms SET mlp_out_norm = mlp_out_norm * 1.01 WHERE run_id = ? AND layer = 1", [run_id])
    assert [line for line in verify(store, tiny_model, run_id, sample=2).differences if "layer=1" in line and "mlp_out_norm" in line]
