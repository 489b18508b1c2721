"""first-layer-heads sharded: every shard stores per-document rows and its summed attention, and
finalize rebuilds the corpus sums from them. The merged multi-shard result equals the one-shard
one (tolerances below, and why), and a stored run stopped part way resumes to the uninterrupted
one bit for bit."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from analyses.core.contract import Input, no_progress
from analyses.core.registry import get_analysis
from tests.helpers.merging import run_in_shards
from tests.test_mergeable import TEXTS

FINAL = {  # table -> key columns
    "first_layer_heads_pattern": ("layer", "head", "dest_pos", "key_offset"),
    "first_layer_heads_mass": ("layer", "head", "dest_pos", "bucket"),
    "first_layer_heads_width": ("layer", "head", "dest_pos"),
    "first_layer_heads_normaliser": ("layer", "head", "set_name", "pos"),
    "first_layer_heads_class": ("layer", "head"),
    "first_layer_heads_intervals": ("layer", "head", "score", "curve"),
    "first_layer_heads_terms": ("layer", "head", "dest_pos", "term"),
}
PARTIAL = {
    "first_layer_heads_docs": ("layer", "input_id"),
    "first_layer_heads_logz": ("layer", "input_id", "head", "pos"),
    "first_layer_heads_doc_scores": ("layer", "input_id", "head", "score"),
    "first_layer_heads_duplicates": ("layer", "input_id", "head", "dest_pos", "key_pos"),
    "first_layer_heads_attn_sums": ("layer", "first_input", "head", "dest_pos", "key_pos"),
}
SMALL = {"dest_positions": "3,8", "score_from": 2, "bootstrap": 100}


def _inputs() -> list[Input]:
    return [Input(index, "prompt", text, {}) for index, text in enumerate(TEXTS)]


def _sorted(table: pa.Table, keys) -> pa.Table:
    return table.sort_by([(key, "ascending") for key in keys])


def assert_close(got: pa.Table, want: pa.Table, keys, tolerance_of=lambda layer: (0.0, 0.0)) -> None:
    """tolerance_of(layer) -> (rtol, atol) of that layer's float columns ((0, 0): bit for bit, NaN
    where NaN); every other column exactly equal."""
    got, want = _sorted(got, keys), _sorted(want, keys)
    assert got.schema == want.schema and got.num_rows == want.num_rows
    layers = want["layer"].to_numpy() if "layer" in want.column_names else np.zeros(want.num_rows, dtype=np.int64)
    for name in want.column_names:
        a, b = got[name].to_numpy(zero_copy_only=False), want[name].to_numpy(zero_copy_only=False)
        if not np.issubdtype(b.dtype, np.floating):
            assert np.array_equal(a, b), name
            continue
        for layer in np.unique(layers):
            rows = layers == layer
            rtol, atol = tolerance_of(int(layer))
            if rtol == atol == 0:
                assert np.array_equal(a[rows], b[rows], equal_nan=True), (name, layer)
            else:
                np.testing.assert_allclose(a[rows], b[rows], rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{name} layer {layer}")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from analyses.model.loading import load_model
    from analyses.model.tiny import build_tiny

    return load_model(str(build_tiny("gpt2", tmp_path_factory.mktemp("tiny-gpt2-heads"))), device="cpu", dtype="float32")


def test_learned_positions_layer_zero_merges_to_the_one_shard_run(tiny_gpt2):
    # Layer 0 of a learned-position model, additive split: the per-document rows are the same bits
    # however the documents are split (the residual is the embedding, the scores come from the
    # weights per document) and the pattern comes from the weights at the merged ln1 scale (math.fsum
    # of per-document sums): bit for bit. Only the duplicate-token baseline reads the per-shard
    # attention sums, whose float64 additions round with the split: rtol 1e-12 on the class scores.
    analysis = get_analysis("first-layer-heads")
    assert analysis.sharded
    params = analysis.Params(layers="0", **SMALL)
    whole = analysis.run(tiny_gpt2, _inputs(), params).tables
    assert whole["first_layer_heads_pattern"]["method"][0].as_py() == "additive"
    for shard_docs in (1, 2):
        merged = run_in_shards(analysis, tiny_gpt2, _inputs(), params, shard_docs)
        for table, keys in FINAL.items():
            bitwise = table in ("first_layer_heads_pattern", "first_layer_heads_mass", "first_layer_heads_width",
                                "first_layer_heads_normaliser", "first_layer_heads_terms")
            assert_close(merged[table], whole[table], keys, lambda layer, exact=bitwise: (0.0, 0.0) if exact else (1e-12, 0.0))
        assert merged["first_layer_heads_terms"].num_rows > 0


def test_measured_layers_merge_to_the_one_shard_run(tiny_model):
    # Rotary model, measured pattern: layer 0 differs from one shard only by the float64 rounding of
    # the per-shard attention sums (rtol 1e-12, atol 1e-14: the normaliser's IQR over its median is
    # a difference of near-equal quantiles, about 1e-3, whose last bits that rounding moves); layer 1 reads float32 activations that round with
    # the batch shape each shard gives its documents (as the other merged analyses, rtol 1e-5).
    analysis = get_analysis("first-layer-heads")
    params = analysis.Params(layers="0,1", **SMALL)
    whole = analysis.run(tiny_model, _inputs(), params).tables
    assert set(whole["first_layer_heads_pattern"]["method"].to_pylist()) == {"measured"}
    merged = run_in_shards(analysis, tiny_model, _inputs(), params, 2)
    for table, keys in FINAL.items():
        if whole[table].num_rows:
            assert_close(merged[table], whole[table], keys, lambda layer: (1e-12, 1e-14) if layer == 0 else (1e-5, 1e-7))
    # The partial rows of layer 0 do not depend on the split at all.
    for table in ("first_layer_heads_docs", "first_layer_heads_logz", "first_layer_heads_doc_scores", "first_layer_heads_duplicates"):
        zero = [pa.compute.equal(t["layer"], 0) for t in (merged[table], whole[table])]
        assert_close(merged[table].filter(zero[0]), whole[table].filter(zero[1]), PARTIAL[table])
    assert merged["first_layer_heads_duplicates"].num_rows > 0


def test_a_shard_stores_its_partials_and_nothing_final(tiny_model):
    analysis = get_analysis("first-layer-heads")
    params = analysis.Params(layers="0", **SMALL)
    state = analysis.prepare(tiny_model, _inputs()[:2], params, no_progress, None)
    shard = analysis.compute(tiny_model, _inputs()[:2], params, state, no_progress, None)
    assert set(shard.tables) == set(PARTIAL)
    docs = shard.tables["first_layer_heads_docs"].to_pylist()
    assert [row["input_id"] for row in docs] == [0, 1] and all(row["n_scaled"] == row["n_tokens"] - int(state["first_pos"]) for row in docs)
    sums = shard.tables["first_layer_heads_attn_sums"]
    assert set(sums["first_input"].to_pylist()) == {0}
    # Every destination row of the summed attention holds one unit per document that reaches it.
    total = sums.group_by(["head", "dest_pos"]).aggregate([("attn_sum", "sum")]).to_pylist()
    lengths = [row["n_tokens"] for row in docs]
    for row in total:
        assert row["attn_sum_sum"] == pytest.approx(sum(size > row["dest_pos"] for size in lengths), abs=1e-12)


# -- through the store, on the embedded model -----------------------------------------------------

EMBEDDED = {"dest_positions": "8,15", "score_from": "2", "bootstrap": "100"}


def _stored(store, table: str, run_id: int) -> pa.Table:
    return store.arrow(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {run_id}")


@pytest.mark.integration
def test_a_stored_run_resumed_part_way_equals_the_uninterrupted_one(embedded_model, db_path):
    from app.run.runner import RunRequest, execute, prepare, resume
    from store import Store
    from tests.helpers.shards import pile_inputs, rows, stop_after_shard

    store = Store(db_path)
    prepared = prepare(RunRequest("first-layer-heads", pile_inputs(6), EMBEDDED))
    whole = execute(store, embedded_model, prepared, no_progress, shard_docs=100)
    reference = execute(store, embedded_model, prepared, no_progress, shard_docs=2)
    assert rows(db_path, f"SELECT n_shards, shards_done FROM runs WHERE run_id IN ({whole}, {reference}) ORDER BY run_id") == [(1, 1), (3, 3)]
    assert rows(db_path, f"SELECT count(DISTINCT first_input) FROM first_layer_heads_attn_sums WHERE run_id = {reference}") == [(3,)]
    # Layer 0 of SmolLM2 (rotary, measured): three shards against one differ by the float64
    # rounding of the summed attention only (as test_measured_layers_merge_to_the_one_shard_run).
    for table, keys in FINAL.items():
        want = _stored(store, table, whole)
        if want.num_rows:
            assert_close(_stored(store, table, reference), want, keys, lambda layer: (1e-12, 1e-14))
    stopped = stop_after_shard(store, embedded_model, prepared, stored=1, n_shards=3)
    assert rows(db_path, f"SELECT status, shards_done FROM runs WHERE run_id = {stopped}") == [("cancelled", 1)]
    assert rows(db_path, f"SELECT count(*) FROM first_layer_heads_class WHERE run_id = {stopped}") == [(0,)]
    notes = []
    resume(store, embedded_model, stopped, lambda done, total, note="": notes.append(note))
    assert not any("shard 1/3" in note for note in notes)  # the stored shard is not computed again
    for table, keys in {**FINAL, **PARTIAL, "tokens": ("input_id", "pos")}.items():  # the same shards: bit for bit
        want = _stored(store, table, reference)
        assert want.num_rows or table == "first_layer_heads_terms", table
        assert_close(_stored(store, table, stopped), want, keys)


def test_the_bootstrap_in_blocks_of_resamplings_gives_the_same_bits(monkeypatch):
    # finalize's bootstrap gathers a block of resamplings at a time (memory bounded in the documents'
    # square); the intervals are the bits of the one-block gather.
    import torch

    from analyses.first_layer_heads import engine

    generator = torch.Generator().manual_seed(3)
    numerators = torch.rand(300, len(engine.SCORES), 9, generator=generator, dtype=torch.float64)
    denominators = torch.rand(300, len(engine.SCORES), 9, generator=generator, dtype=torch.float64) + 0.1
    monkeypatch.setattr(engine, "BOOTSTRAP_BLOCK", 1 << 40)
    whole = engine.bootstrap(numerators, denominators, 500, 0)
    monkeypatch.setattr(engine, "BOOTSTRAP_BLOCK", 7 * 300 * len(engine.SCORES) * 9)  # blocks of 7 resamplings
    blocks = engine.bootstrap(numerators, denominators, 500, 0)
    assert all(torch.equal(a, b) for a, b in zip(whole[:3], blocks[:3])) and whole[3] == blocks[3] == 300
    assert not torch.isnan(whole[1]).any()


def test_verify_recomputes_the_merged_pattern_over_every_input(tiny_model, db_path):
    from app.run.runner import RunRequest, execute, prepare
    from app.run.verify import verify
    from store import Store

    store = Store(db_path)
    raw = {name: str(value) for name, value in SMALL.items()}
    run_id = execute(store, tiny_model, prepare(RunRequest("first-layer-heads", tuple(_inputs()), raw)), no_progress, shard_docs=2)
    verdict = verify(store, tiny_model, run_id, sample=2)
    assert verdict.table == "first_layer_heads_pattern" and verdict.cells > 0 and verdict.differences == []
    with store.write() as conn:
        conn.execute("UPDATE first_layer_heads_pattern SET weight = weight * 1.01 WHERE run_id = ? AND head = 1 AND key_offset = 0", [run_id])
    assert [line for line in verify(store, tiny_model, run_id, sample=2).differences if "head=1" in line and "weight" in line]


def test_the_additive_split_resumes_from_the_saved_state(tiny_gpt2, db_path):
    # Finalize has no model: the weights of layer 0's additive split travel in the run's saved
    # state (npz), which a resumed run reads back; the same tables bit for bit.
    from app.run.runner import RunRequest, execute, prepare, resume
    from store import Store
    from tests.helpers.shards import rows, same_results, stop_after_shard

    store = Store(db_path)
    inputs = tuple(_inputs() + [Input(5, "prompt", TEXTS[0], {})])
    prepared = prepare(RunRequest("first-layer-heads", inputs, {name: str(value) for name, value in SMALL.items()}))
    reference = execute(store, tiny_gpt2, prepared, no_progress, shard_docs=2)
    stopped = stop_after_shard(store, tiny_gpt2, prepared, stored=1, n_shards=3)
    resume(store, tiny_gpt2, stopped, no_progress)
    assert rows(db_path, f"SELECT DISTINCT method FROM first_layer_heads_pattern WHERE run_id = {stopped}") == [("additive",)]
    same_results(db_path, reference, stopped, (*FINAL, *PARTIAL, "tokens"))
