"""contextual-neurons sharded: prepare fits the heads' model once per run (on the fit_docs longest
documents), each shard stores per-neuron double-double sums and finalize merges them in shard
order. Split into shards, the final tables equal the one-shard run's bit for bit (the sums round to
the same float64 unless one lies within about n * 2^-104 of its size from a rounding boundary: not
on these fixtures, which are deterministic); the fit agrees with a direct computation over every
token's inputs to 1e-12; a run stopped after a shard resumes to the uninterrupted one bit for bit."""
from __future__ import annotations

import threading

import pyarrow as pa

from analyses import contextual_neurons as cn
from analyses.core.contract import Input, no_progress
from tests.helpers.merging import run_in_shards
from tests.helpers.planted import word_documents

FINAL = ("contextual_neurons_fit", "contextual_neurons_curve", "contextual_neurons_heads", "contextual_neurons_tokens")
# Head 0 given by hand (random tiny models have no contextual head to find); min_count counts every input.
PARAMS = {"heads": "0", "dest_positions": "10,30", "top_k": "3", "n_curves": "3", "curve_bins": "4", "min_count": "2", "fit_docs": "3"}


def _inputs() -> list[Input]:
    """Five documents of different lengths: the three longest (fit_docs) are not the first three."""
    return [Input(item.input_id, item.source, " ".join(item.text.split()[:n_words]), item.meta)
            for item, n_words in zip(word_documents(5, 60), (25, 60, 40, 55, 50))]


def _sorted(table: pa.Table) -> pa.Table:
    keys = [name for name in table.column_names if not pa.types.is_floating(table.schema.field(name).type)]
    return table.sort_by([(key, "ascending") for key in keys])


def test_merged_shards_equal_the_one_shard_run_bit_for_bit(tiny_model):
    from analyses.core.params import parse_params

    analysis, params, inputs = cn.ANALYSIS, parse_params(cn.Params, PARAMS), _inputs()
    assert analysis.sharded
    analysis.check(tiny_model, inputs, params)
    whole = analysis.run(tiny_model, inputs, params, no_progress, threading.Event())
    merged = run_in_shards(analysis, tiny_model, inputs, params, shard_docs=2)
    assert merged["contextual_neurons_sums"].num_rows == 3 * whole.tables["contextual_neurons_sums"].num_rows
    for name in (*FINAL, "tokens"):
        want = whole.tables[name] if name != "tokens" else whole.tokens
        assert merged[name].num_rows == want.num_rows > 0, name
        assert _sorted(merged[name]).equals(_sorted(want)), name
    fit = merged["contextual_neurons_fit"].to_pylist()
    n_tokens = sum(int(tiny_model.to_tokens(item.text, prepend_bos=tiny_model.bos("auto").prepend).shape[-1]) for item in inputs)
    first_pos = 1 if tiny_model.bos("auto").prepend else 0
    assert {row["n_tokens"] for row in fit} == {n_tokens - first_pos * len(inputs)}
    assert sorted(row["rank"] for row in fit) == list(range(1, len(fit) + 1))


def test_the_merged_fit_equals_a_direct_computation_over_every_token(tiny_model):
    """The fit statistics from the shifted sums against engine.fit_statistics over every token's
    real, predicted and direct inputs (the computation before sharding), to 1e-12 relative: the
    same numbers summed in another order."""
    import numpy as np
    import torch

    from analyses import first_layer_heads
    from analyses.contextual_neurons import engine, sharded
    from analyses.core.params import parse_params
    from analyses.model.weights import model_weights

    params, inputs = parse_params(cn.Params, PARAMS), _inputs()
    state = sharded.prepare(tiny_model, inputs, params, no_progress, threading.Event())
    merged = run_in_shards(cn.ANALYSIS, tiny_model, inputs, params, shard_docs=2)
    weights, first_pos = model_weights(tiny_model), 1 if tiny_model.bos("auto").prepend else 0
    models, pattern = sharded._state_models(state)
    directions = engine.Directions(*(torch.from_numpy(state[name]) for name in ("direct", "attention", "constant")))
    rows = first_layer_heads.analysed_token_rows(tiny_model, inputs, params.heads_params())
    parts = [sharded.neuron_inputs(weights, directions, models, pattern, doc, first_pos)
             for doc in engine.layer_zero_pass(tiny_model, weights, rows, no_progress, threading.Event())]
    real, direct, ctx = (torch.cat([part[index] for part in parts]) for index in range(3))
    # predicted as direct + contextual in float64 (the shards sum them apart; a float32 sum of the
    # two, as the unsharded analysis took, moves the correlations by about 1e-9).
    want = engine.fit_statistics(real, direct.double() + ctx.double(), direct)
    fit = merged["contextual_neurons_fit"].sort_by("neuron")
    for name, values in want.items():
        np.testing.assert_allclose(fit[name].to_numpy(), values.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)
    # The curve of the best-explained neuron: mean predicted and real per bin over the tokens in it.
    best = int(fit["neuron"].to_numpy()[np.argmin(fit["rank"].to_numpy())])
    bins = torch.searchsorted(torch.from_numpy(state["edges"][best]).contiguous(), (direct + ctx)[:, best].contiguous(), right=True)
    curve = [row for row in merged["contextual_neurons_curve"].to_pylist() if row["rank"] == 1]
    for row in curve:
        series = (direct + ctx) if row["series"] == "predicted" else real
        assert abs(row["value"] - float(series[bins == row["bin"], best].double().mean())) < 1e-9
    assert {row["bin"] for row in curve} == set(bins.unique().tolist())


def test_a_stored_run_stopped_after_a_shard_resumes_to_the_uninterrupted_one_bit_for_bit(tiny_model, db_path):
    from app.run.runner import RunRequest, execute, prepare, resume
    from store import Store
    from tests.helpers.shards import rows, same_results, stop_after_shard

    store = Store(db_path)
    prepared = prepare(RunRequest("contextual-neurons", tuple(_inputs()), PARAMS))
    reference = execute(store, tiny_model, prepared, lambda *a: None, shard_docs=2)
    assert rows(db_path, f"SELECT n_shards, shards_done, status FROM runs WHERE run_id = {reference}") == [(3, 3, "done")]
    stopped = stop_after_shard(store, tiny_model, prepared, stored=1, n_shards=3, shard_docs=2)
    assert rows(db_path, f"SELECT status, shards_done FROM runs WHERE run_id = {stopped}") == [("cancelled", 1)]
    assert rows(db_path, f"SELECT count(*) FROM contextual_neurons_fit WHERE run_id = {stopped}") == [(0,)]  # final tables only at the end
    notes: list[str] = []
    resume(store, tiny_model, stopped, lambda done, total, note="": notes.append(note))
    assert not any("shard 1/3" in note for note in notes)  # the stored shard is not computed again
    same_results(db_path, reference, stopped, (*FINAL, "contextual_neurons_sums", "contextual_neurons_bins", "contextual_neurons_content", "tokens"))
