"""fact-lookup on the embedded model, stored through the real store and drawn by the chart code."""
from __future__ import annotations

import json

import pytest
import torch

from analyses.core.contract import no_progress
from analyses.inputs.entities import entity_inputs, load_entities

pytestmark = pytest.mark.integration


def test_fact_lookup_stores_and_draws_on_the_embedded_model(embedded_model, store):
    from analyses import fact_lookup
    from analyses.core.registry import get_analysis
    from app import charts
    from app.run.runner import Prepared, execute

    known = load_entities(None)
    table = [e for e in known if e.value == "baseball"][:6] + [e for e in known if e.value == "football"][:6]
    params = fact_lookup.Params(folds=3, intervention_entities=4, layer_stride=10, n_neurons=2, concat_layer=4)
    run_id = execute(store, embedded_model, Prepared(get_analysis("fact-lookup"), params, tuple(entity_inputs(table))), no_progress)
    assert store.run_row(run_id)["status"] == "done"

    # The prompt was chosen before the run among every candidate, by the answer-set probability, and recorded.
    from analyses.fact_lookup.prompts import prompted

    measured = store.query("SELECT prompt, chosen, answer_set_prob, top1_in_set, n_entities FROM fact_lookup_prompts WHERE run_id = ?", [run_id]).rows
    assert sorted(row[0] for row in measured) == ["chat", "few-shot", "table"] and all(row[4] == len(table) for row in measured)
    chosen = [row for row in measured if row[1]]
    assert len(chosen) == 1 and chosen[0][2] == max(row[2] for row in measured)
    assert json.loads(store.run_row(run_id)["provenance"])["prompt"] == chosen[0][0]
    rows = store.query("SELECT entity, attribute, predicted_among_answers, correct_logprob FROM fact_lookup_entities WHERE run_id = ? ORDER BY input_id", [run_id]).rows
    first = prompted(chosen[0][0], table, embedded_model.tokenizer, False)[0]
    ids = embedded_model.tokenizer(first.prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = embedded_model.bridge(torch.tensor([ids]), use_cache=False)[0, -1].double()
    answer = embedded_model.tokenizer.encode(" " + first.value, add_special_tokens=False)[0]
    assert rows[0][3] == pytest.approx(float(logits.log_softmax(-1)[answer]), abs=1e-4)
    # The answer-set mass and the model's own top-1 over the whole vocabulary, against the plain forward.
    answers = [embedded_model.tokenizer.encode(" " + value, add_special_tokens=False)[0] for value in ("baseball", "football")]
    mass, top_id, top_p = store.query("SELECT answer_set_prob, top1_token_id, top1_prob FROM fact_lookup_entities WHERE run_id = ? ORDER BY input_id LIMIT 1", [run_id]).rows[0]
    probs = logits.softmax(-1)
    assert mass == pytest.approx(float(probs[answers].sum()), abs=1e-4)
    assert top_id == int(probs.argmax()) and top_p == pytest.approx(float(probs.max()), abs=1e-4)
    ablated = {row[0] for row in store.query("SELECT DISTINCT layer FROM fact_lookup_ablation WHERE run_id = ?", [run_id]).rows}
    assert ablated == {0, 1, 2, 3, 10, 20} & set(range(embedded_model.n_layers))

    layers = store.query("SELECT count(DISTINCT layer) FROM fact_lookup_probe WHERE run_id = ?", [run_id]).rows[0][0]
    assert layers == embedded_model.n_layers
    for chart in fact_lookup.SPEC.charts:
        data = charts.load_charts(store, chart, run_id, charts.first_input_id(store, run_id))
        assert data and charts.render_text(data[0], 100, 24, use_colour=False).strip()
