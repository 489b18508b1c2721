"""contextual-neurons on the planted GPT-2 (where the extended-embedding model is exact), on a
tiny model of every family, and on the embedded model through the real store."""
from __future__ import annotations

import threading

import pytest

from analyses import contextual_neurons as cn
from analyses import first_layer_heads as flh
from analyses.core.contract import no_progress
from analyses.core.errors import BadInput
from tests.helpers.planted import planted_gpt2, word_documents


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_gpt2(tmp_path_factory.mktemp("planted-gpt2-neurons"))


def run(model, inputs, **params):
    chosen = cn.Params(**params)
    cn.ANALYSIS.check(model, inputs, chosen)
    return cn.ANALYSIS.run(model, inputs, chosen, no_progress, threading.Event())


def test_planted_neurons_are_predicted_exactly(planted):
    # Head 1 is content-blind (normaliser 1) and the norms are linear: every neuron's input is
    # exactly linear in the extended embeddings, so the prediction must match the real one.
    result = run(planted, word_documents(4), dest_positions="100,200")
    heads = result.tables["contextual_neurons_heads"].to_pylist()
    assert [row["head"] for row in heads if row["used"]] == [1]
    fit = result.tables["contextual_neurons_fit"].to_pylist()
    assert len(fit) == 256 and min(row["corr"] for row in fit) > 0.99999
    assert max(row["ctx_explained"] for row in fit) > 0.3
    assert sorted(row["rank"] for row in fit) == list(range(1, 257))
    best = min(fit, key=lambda row: row["rank"])
    assert best["ctx_explained"] == max(row["ctx_explained"] for row in fit)


def test_token_contribution_is_the_change_from_swapping_one_key_token(planted):
    import torch

    from analyses.model.weights import apply_norm, model_weights

    inputs = word_documents(4)
    result = run(planted, inputs, dest_positions="100,200", top_k=3)
    tokens = {(row["neuron"], row["side"], row["rank"]): row for row in result.tables["contextual_neurons_tokens"].to_pylist()}
    pattern = {(r["dest_pos"], r["key_offset"]): r["weight"] for r in flh.ANALYSIS.run(
        planted, inputs, flh.Params(dest_positions="100"), no_progress, threading.Event()).tables["first_layer_heads_pattern"].to_pylist() if r["head"] == 1}
    layer = model_weights(planted).layers[0]
    neuron, dest, key = 7, 100, 93
    high, low = tokens[(neuron, "top", 1)], tokens[(neuron, "bottom", 1)]
    filler = planted.tokenizer.encode(" the", add_special_tokens=False)[0]

    def pre_activation(key_token: int) -> float:
        ids = torch.full((1, dest + 1), filler)
        ids[0, key] = key_token
        with torch.inference_mode():
            _, cache = planted.bridge.run_with_cache(ids)
        mid = cache["blocks.0.hook_resid_mid"][0, dest]
        return float(apply_norm(layer.ln2, mid) @ layer.W_in[:, neuron] + layer.b_in[neuron])

    change = pre_activation(high["token_id"]) - pre_activation(low["token_id"])
    expected = pattern[(dest, dest - key)] * (high["contribution"] - low["contribution"])
    assert change == pytest.approx(expected, rel=1e-3)
    assert abs(change) > 1e-4


@pytest.mark.parametrize("raw, message", [({"top_k": "0"}, "top_k"), ({"heads": "a,b"}, "heads"), ({"curve_bins": "1"}, "curve_bins")])
def test_bad_params_are_one_line_errors(raw, message):
    from analyses.core.params import parse_params

    with pytest.raises(BadInput, match=message) as caught:
        parse_params(cn.Params, raw)
    assert "\n" not in str(caught.value)


def test_validate_refuses_heads_the_model_lacks(planted):
    with pytest.raises(BadInput, match="heads must be below 4"):
        cn.ANALYSIS.check(planted, word_documents(1, 120), cn.Params(heads="4", dest_positions="100"))


def test_runs_and_stores_on_every_family(family_model, store):
    from app.run.runner import RunRequest, execute, prepare

    inputs = tuple(word_documents(3, 60))
    # Head 0 given by hand: random tiny models have no contextual heads to find.
    prepared = prepare(RunRequest("contextual-neurons", inputs, {"dest_positions": "10,40", "heads": "0", "top_k": "3"}))
    run_id = execute(store, family_model, prepared, no_progress)
    fit = store.query("SELECT count(*), min(corr), max(corr) FROM contextual_neurons_fit WHERE run_id = ?", [run_id]).rows[0]
    d_mlp = family_model.bridge.original_model.config.to_dict().get("intermediate_size") or 4 * family_model.d_model
    assert fit[0] == d_mlp and -1 <= fit[1] <= fit[2] <= 1
    assert store.query("SELECT count(*) FROM contextual_neurons_tokens WHERE run_id = ?", [run_id]).rows[0][0] == 2 * 3 * d_mlp


@pytest.mark.integration
def test_embedded_model_through_the_real_store(embedded_model, store):
    from analyses.inputs.corpus import sample_documents
    from app.run.runner import RunRequest, execute, prepare

    inputs, _ = sample_documents(None, 3, seed=0, max_tokens=128)
    prepared = prepare(RunRequest("contextual-neurons", tuple(inputs), {"dest_positions": "60,120", "top_k": "5", "n_curves": "2"}))
    run_id = execute(store, embedded_model, prepared, no_progress)
    assert store.query("SELECT status FROM runs WHERE run_id = ?", [run_id]).rows == [("done",)]
    n_fit = store.query("SELECT count(*) FROM contextual_neurons_fit WHERE run_id = ?", [run_id]).rows[0][0]
    assert n_fit == 1536


def test_min_count_limits_the_token_lists_to_tokens_of_the_text(planted):
    import torch

    inputs = word_documents(2)
    result = run(planted, inputs, dest_positions="100,200", top_k=4, min_count=3)
    seen = torch.cat([planted.to_tokens(item.text, prepend_bos=False)[0] for item in inputs])
    counts = torch.bincount(seen, minlength=planted.d_vocab)
    rows = result.tables["contextual_neurons_tokens"].to_pylist()
    assert rows and all(counts[row["token_id"]] >= 3 for row in rows)


def test_cancel_stops_the_run(planted):
    from analyses.core.errors import Cancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        cn.ANALYSIS.run(planted, word_documents(2), cn.Params(dest_positions="100"), no_progress, cancel)
