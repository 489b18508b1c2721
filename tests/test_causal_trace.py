from __future__ import annotations

import json

import numpy as np
import pytest

from analyses import causal_trace
from analyses.causal_trace import engine as causal_engine
from analyses.causal_trace import reference as causal_reference
from analyses.core.contract import Input, no_progress
from analyses.core.errors import BadInput
from analyses.core.params import parse_params
from app import charts
from app.run.runner import RunRequest, execute, prepare

PROMPT = "The Eiffel Tower is located in the city of"


def _setup(model, text: str, subject: str, samples: int = 3, rome: bool = False, seed: int = 0):
    import torch

    params = parse_params(causal_trace.Params, {"subject": subject})
    where = causal_trace.locate(model, Input(0, "prompt", text), params)
    tokens = torch.tensor([where.ids])
    with torch.inference_mode():
        answer_id = int(model.bridge(tokens)[0, -1].argmax())
    begin, end = where.subject_range
    draws = causal_engine.noise_draws(samples, end - begin, model.d_model, rome, seed, 0)
    return causal_engine.TraceSetup(tokens, where.subject_range, answer_id, torch.from_numpy(draws) * 0.5)


def test_subject_located_by_character_offsets(tiny_model):
    params = causal_trace.Params(subject="Eiffel Tower")
    where = causal_trace.locate(tiny_model, Input(0, "prompt", PROMPT), params)
    pieces = tiny_model.token_strings(list(where.ids))
    begin, end = where.subject_range
    assert "".join(pieces[begin:end]).strip() == "Eiffel Tower"
    # BOS follows the model's own tokenizer, which adds none here.
    assert pieces[0] == "The" and begin == 1


@pytest.mark.parametrize("kinds", [("resid", "mlp", "attn")])
def test_fast_path_equals_naive_reference(family_model, kinds):
    setup = _setup(family_model, PROMPT, "Eiffel Tower", samples=3)
    # window 2 on 3 layers gives clipped and unclipped windows; a small batch cap forces chunking.
    fast = causal_engine.trace_fast(family_model, setup, kinds, window=2, batch_tokens=64)
    naive = causal_reference.trace_naive(family_model, setup, kinds, window=2)
    # A random model's probabilities are near 1/vocab: compare relatively.
    assert fast.high == pytest.approx(naive.high, rel=1e-5)
    assert fast.low == pytest.approx(naive.low, rel=1e-5)
    for kind in kinds:
        np.testing.assert_allclose(fast.probs[kind], naive.probs[kind], rtol=1e-5, atol=0, err_msg=kind)
        # The comparison means something only if restoring changes the probabilities.
        assert np.ptp(naive.probs[kind]) > 200 * 1e-5 * naive.low, kind


def _clean_prob(model, setup) -> float:
    """p(answer) at the last position from a plain Hugging Face forward: independent of both paths."""
    import torch

    from analyses.model.families import hf_model

    with torch.no_grad():
        logits = hf_model(model)(setup.tokens, use_cache=False).logits
    return float(torch.softmax(logits[0, -1].double(), dim=-1)[setup.answer_id])


def test_exact_invariants(family_model):
    setup = _setup(family_model, PROMPT, "Eiffel Tower", samples=4)
    begin, _ = setup.subject_range
    fast = causal_engine.trace_fast(family_model, setup, ("resid",), window=2)
    naive = causal_reference.trace_naive(family_model, setup, ("resid",), window=2)
    clean = _clean_prob(family_model, setup)
    # Restoring the whole clean residual after the last block at the last token is the clean run.
    assert fast.high == pytest.approx(clean, rel=1e-5)
    assert fast.probs["resid"][-1, -1] == pytest.approx(clean, rel=1e-5)
    assert naive.probs["resid"][-1, -1] == pytest.approx(clean, rel=1e-5)
    # Before the subject the corrupted run equals the clean one, so restoring there changes nothing:
    # the naive path computes those rows, the fast path skips them.
    np.testing.assert_allclose(naive.probs["resid"][:begin], naive.low, rtol=1e-5)
    np.testing.assert_allclose(fast.probs["resid"][:begin], naive.probs["resid"][:begin], rtol=1e-5)


def test_restoration_is_one_at_high_and_zero_at_low(tiny_model, store):
    import torch

    prepared = prepare(RunRequest("causal-trace", (Input(0, "prompt", PROMPT),), {"subject": "Eiffel Tower", "samples": "2", "kinds": "resid", "threshold": "-1"}))
    run_id = execute(store, tiny_model, prepared, no_progress)
    token_ids = [row[0] for row in store.query("SELECT token_id FROM tokens WHERE run_id = ? ORDER BY pos", [run_id]).rows]
    last = len(token_ids) - 1
    answer_id, high, low, subject_start = store.query(
        "SELECT answer_token_id, high_prob, low_prob, subject_start FROM causal_trace_inputs WHERE run_id = ?", [run_id]).rows[0]
    setup = causal_engine.TraceSetup(torch.tensor([token_ids]), (subject_start, subject_start), answer_id, None)
    assert high == pytest.approx(_clean_prob(tiny_model, setup), rel=1e-5)
    assert low != pytest.approx(high, rel=1e-3)
    cell = store.query("SELECT restoration FROM causal_trace WHERE run_id = ? AND pos = ? AND layer = 2", [run_id, last]).rows[0][0]
    assert cell == pytest.approx(1.0, abs=1e-4)
    before = store.query("SELECT max(abs(restoration)) FROM causal_trace t JOIN causal_trace_inputs c USING (run_id, input_id) WHERE run_id = ? AND pos < c.subject_start", [run_id]).rows
    assert before[0][0] == pytest.approx(0.0, abs=1e-9)
    counts = {name: store.query(f"SELECT count(*) FROM {name} WHERE run_id = ?", [run_id]).rows[0][0] for name in ("causal_trace", "trace_attention", "trace_hidden", "causal_trace_buckets")}
    assert counts == {"causal_trace": 3 * (last + 1), "trace_attention": 9, "trace_hidden": 3 * (last + 1), "causal_trace_buckets": 6 * 3}


def test_rome_compatible_draws_are_reproducible():
    first = causal_engine.noise_draws(10, 3, 8, True, seed=5, input_id=2)
    again = causal_engine.noise_draws(10, 3, 8, True, seed=9, input_id=0)
    assert first.dtype == np.float64 and first.shape == (10, 3, 8)
    assert np.array_equal(first, again)
    assert np.array_equal(first, np.random.RandomState(1).randn(10, 3, 8))
    seeded = causal_engine.noise_draws(10, 3, 8, False, seed=5, input_id=2)
    assert np.array_equal(seeded, causal_engine.noise_draws(10, 3, 8, False, seed=5, input_id=2))
    assert not np.array_equal(seeded, causal_engine.noise_draws(10, 3, 8, False, seed=6, input_id=2))


def test_rome_mode_traces_are_identical_across_runs(tiny_model):
    one = causal_engine.trace_fast(tiny_model, _setup(tiny_model, PROMPT, "Eiffel", rome=True, seed=1), ("resid",), 2)
    two = causal_engine.trace_fast(tiny_model, _setup(tiny_model, PROMPT, "Eiffel", rome=True, seed=7), ("resid",), 2)
    assert np.array_equal(one.probs["resid"], two.probs["resid"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"subject": "Louvre"}, "is not in"),
        ({"subject": "city of"}, "covers the last token"),
        ({}, "has no subject"),
    ],
)
def test_bad_subjects_are_refused_before_storing(tiny_model, store, raw, message):
    prepared = prepare(RunRequest("causal-trace", (Input(0, "prompt", PROMPT),), raw))
    with pytest.raises(BadInput, match=message):
        execute(store, tiny_model, prepared, no_progress)
    assert store.query("SELECT count(*) FROM runs").rows[0][0] == 0


def test_bad_params_are_refused():
    with pytest.raises(BadInput, match="kinds"):
        parse_params(causal_trace.Params, {"kinds": "resid,mlps"})
    with pytest.raises(BadInput, match="samples"):
        parse_params(causal_trace.Params, {"samples": "0"})


def test_prompt_set_buckets_and_faceted_charts(tiny_model, store, tmp_path):
    rows = [
        {"prompt": PROMPT, "subject": "Eiffel Tower", "category": "semantic"},
        {"prompt": "The Colosseum is located in the city of", "subject": "Colosseum", "category": "semantic"},
        {"prompt": "1, 2, 3, 4, 5, 6,", "subject": "1, 2", "category": "numbers"},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("# test set\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    from analyses.inputs.corpus import load_prompt_set

    prepared = prepare(RunRequest("causal-trace", tuple(load_prompt_set(str(path))), {"samples": "2", "threshold": "-1"}))
    run_id = execute(store, tiny_model, prepared, no_progress)
    counts = dict(store.query("SELECT category, max(n_prompts) FROM causal_trace_buckets WHERE run_id = ? GROUP BY 1", [run_id]).rows)
    assert counts == {"semantic": 2, "numbers": 1}
    spec = causal_trace.SPEC
    bucket_chart = next(c for c in spec.charts if c.table == "causal_trace_buckets")
    faceted = charts.load_charts(store, bucket_chart, run_id)
    assert [d.subtitle.split("category ")[-1] for d in faceted] == ["numbers", "semantic"]
    heat = charts.load_charts(store, spec.charts[0], run_id)[0]
    assert [label for label in heat.x_labels if label.startswith("*")] == ["* E", "*iffel", "* Tower"]


@pytest.mark.integration
def test_embedded_model_eiffel_trace(embedded_model, store):
    prepared = prepare(RunRequest("causal-trace", (Input(0, "prompt", PROMPT),), {"subject": "The Eiffel Tower", "samples": "2", "answer": " Paris"}))
    run_id = execute(store, embedded_model, prepared, no_progress)
    answer, correct, high, low = store.query("SELECT answer_token, correct, high_prob, low_prob FROM causal_trace_inputs WHERE run_id = ?", [run_id]).rows[0]
    assert (answer, correct) == (" Paris", True)
    assert high > low
    n_layers = embedded_model.n_layers
    assert store.query("SELECT count(DISTINCT kind), max(layer) FROM causal_trace WHERE run_id = ?", [run_id]).rows[0] == (3, n_layers - 1)
    for chart in causal_trace.SPEC.charts:
        assert charts.load_charts(store, chart, run_id), chart.title
