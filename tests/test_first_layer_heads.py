"""first-layer-heads on a GPT-2 with heads planted by hand, on a tiny model of every family, and
on the embedded model through the real store."""
from __future__ import annotations

import math

import pytest

from analyses import first_layer_heads as flh
from analyses.core.contract import Input, no_progress
from analyses.core.errors import BadInput
from analyses.first_layer_heads.anatomy import CLASSES
from tests.helpers.planted import planted_gpt2, planted_taxonomy_gpt2, word_documents


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_gpt2(tmp_path_factory.mktemp("planted-gpt2"))


@pytest.fixture(scope="module")
def planted_more(tmp_path_factory):
    return planted_taxonomy_gpt2(tmp_path_factory.mktemp("planted-taxonomy"))


def run(model, inputs, **params):
    import threading

    chosen = flh.Params(**params)
    flh.ANALYSIS.check(model, inputs, chosen)
    return flh.ANALYSIS.run(model, inputs, chosen, no_progress, threading.Event())


def rows(result, table):
    return result.tables[table].to_pylist()


def test_planted_heads_get_their_classes(planted):
    result = run(planted, word_documents(), dest_positions="100,200")
    classes = {row["head"]: row for row in rows(result, "first_layer_heads_class")}
    assert [classes[h]["class"] for h in range(4)] == ["previous-token", "contextual", "duplicate-token", "averaging"]
    assert classes[0]["width50"] == 1 and classes[0]["local_mass"] > 0.99
    # Per-document scores on real attention: the content-blind heads score the same on every
    # document (a zero-width interval), at the values their planted patterns give.
    assert classes[0]["previous_score"] > 0.999 and classes[0]["local_score"] > 0.999
    assert classes[1]["contextual_low"] == pytest.approx(classes[1]["contextual_high"], abs=1e-9)
    expected_mid = sum(_decay_row_mid(dest) for dest in range(100, 230)) / 130
    assert classes[1]["contextual_score"] == pytest.approx(expected_mid, abs=2e-3)
    assert classes[3]["averaging_score"] == pytest.approx(1.0, abs=1e-9) and classes[3]["contextual_score"] == pytest.approx(0.0, abs=1e-9)
    assert all(classes[h]["n_docs"] == 6 for h in range(4)) and all(classes[h]["runner_up"] is None for h in range(4))
    # The duplicate head varies with the text: a real interval around its estimate.
    assert classes[2]["duplicate_low"] < classes[2]["duplicate_score"] < classes[2]["duplicate_high"]
    assert classes[2]["margin"] == pytest.approx((classes[2]["duplicate_low"] - 3) / 3)
    # Head 1 decays as exp(-0.05 offset): half the mass within ln 2 / 0.05 = 13.9 tokens.
    assert classes[1]["width50"] == pytest.approx(math.log(2) / 0.05, abs=1.5)
    assert classes[1]["width90"] == pytest.approx(math.log(10) / 0.05, abs=1.5)
    assert classes[2]["duplicate_score"] > 5 and max(classes[h]["duplicate_score"] for h in (0, 1, 3)) < 1.5
    # Content-blind heads have a constant content part, so their normaliser is exactly 1.
    for head in (0, 1, 3):
        assert classes[head]["normaliser_median"] == pytest.approx(1.0, abs=1e-5)
    assert classes[2]["normaliser_median"] > 1.5
    assert classes[0]["ln_scale_std"] == pytest.approx(0.0, abs=1e-3)


def _decay_row_mid(dest: int) -> float:
    """Head 1's row at dest (weight exp(-0.05 offset) on keys 1..dest, position 0 apart): mass on
    offsets 6..50 minus a uniform row's."""
    weights = [math.exp(-0.05 * offset) for offset in range(dest)]
    return sum(weights[6:51]) / sum(weights) - 45 / dest


def test_planted_local_sink_and_partial_sink_heads(planted_more):
    result = run(planted_more, word_documents(), dest_positions="100,200")
    classes = {row["head"]: row for row in rows(result, "first_layer_heads_class")}
    assert [classes[h]["class"] for h in range(4)] == ["local", "attention-sink", "averaging", "averaging"]
    # Local, not previous-token: the weight spreads over offsets 0..3 with 0.30 on offset 1.
    assert classes[0]["local_score"] > 0.99 and 0.25 < classes[0]["previous_score"] < 0.35
    assert classes[1]["sink_score"] > 0.98 and classes[1]["runner_up"] == "averaging"
    # Head 2 gives 30-50% to position 0 and is uniform elsewhere: the sink is measured on its own,
    # and the distance masses, renormalised without it, are those of the uniform head 3.
    assert 0.3 < classes[2]["sink_score"] < 0.5 and 0.3 < classes[2]["sink_mass"] < 0.5 and classes[3]["sink_mass"] < 0.01
    for column in ("far_mass", "mid_mass", "local_mass", "averaging_score", "contextual_score"):
        assert classes[2][column] == pytest.approx(classes[3][column], abs=2e-3), column
    masses = {(r["head"], r["dest_pos"], r["bucket"]): r["mass"] for r in rows(result, "first_layer_heads_mass")}
    assert masses[(2, 100, "sink")] == pytest.approx(math.exp(4.7) / (math.exp(4.7) + 100), abs=1e-3)
    assert sum(masses[(2, 100, bucket)] for bucket in ("self", "prev_1_5", "prev_6_50", "beyond_50")) == pytest.approx(1.0)


def test_a_borderline_head_is_uncertain_and_one_clearly_below_is_other(planted):
    """The duplicate head's score varies over documents: with the threshold at its estimate the
    interval straddles it (no other score is near its own threshold), so no class is claimed."""
    first = rows(run(planted, word_documents(), dest_positions="100"), "first_layer_heads_class")[2]
    borderline = run(planted, word_documents(), dest_positions="100", duplicate_threshold=first["duplicate_score"])
    head = rows(borderline, "first_layer_heads_class")[2]
    assert head["duplicate_low"] < head["duplicate_score"] < head["duplicate_high"]
    assert head["class"] == "uncertain" and head["margin"] != head["margin"] and head["runner_up"] is None
    below = run(planted, word_documents(), dest_positions="100", duplicate_threshold=2 * first["duplicate_high"])
    assert rows(below, "first_layer_heads_class")[2]["class"] == "other"


def test_the_interval_is_reproducible_with_the_seed(planted):
    def interval(seed):
        head = rows(run(planted, word_documents(8), dest_positions="100", seed=seed), "first_layer_heads_class")[2]
        return head["duplicate_low"], head["duplicate_high"], head["local_low"], head["local_high"]

    assert interval(7) == interval(7)
    assert interval(7) != interval(8)


def test_bootstrap_interval_of_a_pooled_ratio():
    import torch

    from analyses.first_layer_heads import engine

    # Three documents with one score and one head: ratios 1, 2, 3 of equal weight.
    numerators = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)[:, None, None]
    denominators = torch.ones(3, 1, 1, dtype=torch.float64)
    estimate, low, high, n_docs = engine.bootstrap(numerators, denominators, 4000, 0)
    assert n_docs == 3 and float(estimate) == pytest.approx(2.0)
    # Resampled means of three draws from {1, 2, 3}: 2.5% and 97.5% quantiles are 1 and 3 at most.
    assert 1.0 <= float(low) < 1.7 and 2.3 < float(high) <= 3.0
    # A document without rows does not count; one document has no interval.
    estimate, low, high, n_docs = engine.bootstrap(numerators[:2], torch.tensor([[[1.0]], [[0.0]]], dtype=torch.float64), 100, 0)
    assert n_docs == 1 and float(estimate) == 1.0 and low.isnan().all() and high.isnan().all()


def test_positional_pattern_equals_attention_on_a_repeated_token(planted):
    import torch

    result = run(planted, word_documents(2), dest_positions="100,200")
    pattern = {(r["head"], r["dest_pos"], r["key_offset"]): r["weight"] for r in rows(result, "first_layer_heads_pattern")}
    tokens = planted.to_tokens(" the" * 230, prepend_bos=False)
    assert tokens.shape[-1] == 230 and len(set(tokens[0].tolist())) == 1
    with torch.inference_mode():
        _, cache = planted.bridge.run_with_cache(tokens)
    real = cache["blocks.0.attn.hook_pattern"][0]
    for head in range(4):
        for dest in (100, 200):
            expected = real[head, dest, : dest + 1].flip(-1).double()
            got = torch.tensor([pattern[(head, dest, offset)] for offset in range(dest + 1)], dtype=torch.float64)
            assert torch.allclose(got, expected, atol=1e-5), (head, dest)


def test_measured_and_additive_paths_agree_where_content_is_nil(planted):
    additive = run(planted, word_documents(4), dest_positions="50,150", method="additive")
    measured = run(planted, word_documents(4), dest_positions="50,150", method="measured")
    by_key = {(r["head"], r["dest_pos"], r["key_offset"]): r["weight"] for r in rows(measured, "first_layer_heads_pattern")}
    compared = 0
    for row in rows(additive, "first_layer_heads_pattern"):
        if row["head"] != 2:
            assert by_key[(row["head"], row["dest_pos"], row["key_offset"])] == pytest.approx(row["weight"], abs=1e-6)
            compared += 1
    assert compared == 3 * (51 + 151)
    # The duplicate-token head is all content: averaging over it is not its positional pattern.
    assert rows(measured, "first_layer_heads_class")[2]["local_mass"] > rows(additive, "first_layer_heads_class")[2]["local_mass"] + 0.1


def test_additive_terms_name_what_shapes_each_head(planted):
    result = run(planted, word_documents(2), dest_positions="100")
    spreads = {(r["head"], r["term"]): r["spread"] for r in rows(result, "first_layer_heads_terms")}
    assert spreads[(0, "position_position")] > 10 * spreads[(0, "token_position")]
    assert spreads[(1, "query_bias_position")] > 1 and spreads[(1, "position_position")] < 1e-6
    assert max(spreads[(2, term)] for term in ("token_position", "position_position", "query_bias_position")) < 1e-6


@pytest.mark.parametrize("raw, message", [
    ({"layers": "x"}, "layers"), ({"method": "fourier"}, "method"), ({"local_threshold": "2"}, "local_threshold"),
    ({"dest_positions": ""}, "dest_positions"), ({"normaliser_bin": "0"}, "normaliser_bin"),
    ({"averaging_threshold": "1.5"}, "averaging_threshold"), ({"bootstrap": "10"}, "bootstrap"), ({"score_from": "1"}, "score_from"),
])
def test_bad_params_are_one_line_errors(raw, message):
    from analyses.core.params import parse_params

    with pytest.raises(BadInput, match=message) as caught:
        parse_params(flh.Params, raw)
    assert "\n" not in str(caught.value)


def test_validate_refuses_what_the_model_cannot_do(planted, tiny_model, monkeypatch):
    inputs = word_documents(1, 50)
    with pytest.raises(BadInput, match="layers must be below"):
        flh.ANALYSIS.check(planted, inputs, flh.Params(layers="3"))
    with pytest.raises(BadInput, match="one token"):
        flh.ANALYSIS.check(planted, inputs, flh.Params(dest_token=" the cat"))
    with pytest.raises(BadInput, match="additive"):
        flh.ANALYSIS.check(tiny_model, inputs, flh.Params(method="additive"))
    with pytest.raises(BadInput, match="fits"):
        flh.ANALYSIS.check(tiny_model, inputs, flh.Params(dest_positions="100,250"))
    monkeypatch.setattr(flh, "MAX_DOCUMENT_TOKENS", 100)
    with pytest.raises(BadInput, match="at most 100"):
        flh.ANALYSIS.check(planted, word_documents(1, 150), flh.Params())


def test_cancel_stops_between_documents(planted):
    import threading

    from analyses.core.errors import Cancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        flh.ANALYSIS.run(planted, word_documents(2), flh.Params(dest_positions="100"), no_progress, cancel)


def test_runs_and_stores_on_every_family(family_model, store):
    from app.run.runner import RunRequest, execute, prepare

    inputs = tuple(word_documents(3, 60))
    prepared = prepare(RunRequest("first-layer-heads", inputs, {"dest_positions": "10,40", "layers": "0,1"}))
    run_id = execute(store, family_model, prepared, no_progress)
    classes = store.query("SELECT layer, head, class FROM first_layer_heads_class WHERE run_id = ? ORDER BY 1, 2", [run_id]).rows
    n_heads = family_model.bridge.cfg.n_heads
    assert len(classes) == 2 * n_heads
    sums = store.query("SELECT layer, head, dest_pos, sum(weight) FROM first_layer_heads_pattern WHERE run_id = ? GROUP BY ALL", [run_id]).rows
    assert sums and all(abs(total - 1) < 1e-6 for *_, total in sums)


@pytest.mark.integration
def test_embedded_model_through_the_real_store(embedded_model, store):
    from analyses.inputs.corpus import sample_documents
    from app.run.runner import RunRequest, execute, prepare

    inputs, _ = sample_documents(None, 3, seed=0, max_tokens=128)
    inputs = tuple(inputs)
    prepared = prepare(RunRequest("first-layer-heads", inputs, {"dest_positions": "60,120"}))
    run_id = execute(store, embedded_model, prepared, no_progress)
    classes = store.query("SELECT head, class, width50 FROM first_layer_heads_class WHERE run_id = ? ORDER BY head", [run_id]).rows
    assert len(classes) == 9 and all(row[1] in CLASSES for row in classes)
    status = store.query("SELECT status FROM runs WHERE run_id = ?", [run_id]).rows
    assert status == [("done",)]


def test_paths_agree_where_the_positional_part_is_nil(tmp_path):
    import torch
    from transformers import GPT2LMHeadModel

    from analyses.model.loading import load_model
    from analyses.model.tiny import build_tiny

    folder = build_tiny("gpt2", tmp_path / "no-positions", seed=2, n_layers=1)
    hf = GPT2LMHeadModel.from_pretrained(folder)
    with torch.no_grad():
        hf.transformer.wpe.weight.zero_()
        hf.transformer.h[0].attn.c_attn.weight.mul_(0.8)  # content that matters yet averages out over 48 documents
    hf.save_pretrained(folder)
    model = load_model(str(folder), device="cpu", dtype="float32")
    # A leading space: the first word is a token like every other, so word order is exchangeable.
    inputs = [Input(item.input_id, item.source, " " + item.text, item.meta) for item in word_documents(48, 110, seed=5)]
    additive = run(model, inputs, dest_positions="100", method="additive")
    measured = run(model, inputs, dest_positions="100", method="measured")
    # No positional part: the additive pattern is uniform over the 101 visible keys, and real
    # attention averaged over shuffled content is uniform in expectation.
    assert all(abs(row["weight"] - 1 / 101) < 1e-9 for row in rows(additive, "first_layer_heads_pattern"))
    exact = {(r["head"], r["bucket"]): r["mass"] for r in rows(additive, "first_layer_heads_mass")}
    for row in rows(measured, "first_layer_heads_mass"):
        assert row["mass"] == pytest.approx(exact[(row["head"], row["bucket"])], abs=0.01), row
    weights = [row["weight"] for row in rows(measured, "first_layer_heads_pattern")]
    assert max(abs(101 * weight - 1) for weight in weights) > 0.05  # single offsets do see the content
