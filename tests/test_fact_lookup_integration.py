"""fact-lookup on the embedded model, stored through the real store and drawn by the chart code."""
from __future__ import annotations

import pytest
import torch

from analyses.core.contract import no_progress
from analyses.inputs.entities import entity_inputs, load_entities

pytestmark = pytest.mark.integration


def test_fact_lookup_stores_and_draws_on_the_embedded_model(embedded_model, store):
    from analyses import fact_lookup
    from app import charts
    from app.run.runner import Prepared, execute

    known = load_entities(None)
    table = [e for e in known if e.value == "baseball"][:6] + [e for e in known if e.value == "football"][:6]
    params = fact_lookup.Params(folds=3, intervention_entities=4, layer_stride=10, n_neurons=2, concat_layer=4)
    run_id = execute(store, embedded_model, Prepared(fact_lookup, params, tuple(entity_inputs(table))), no_progress)
    assert store.run_row(run_id)["status"] == "done"

    rows = store.query("SELECT entity, attribute, predicted, correct_logprob FROM fact_lookup_entities WHERE run_id = ? ORDER BY input_id", [run_id]).rows
    assert all(attribute == predicted for _, attribute, predicted, _ in rows)  # the shipped table holds what the model knows
    first = table[0]
    ids = embedded_model.tokenizer(first.prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = embedded_model.bridge(torch.tensor([ids]), use_cache=False)[0, -1].double()
    answer = embedded_model.tokenizer.encode(" " + first.value, add_special_tokens=False)[0]
    assert rows[0][3] == pytest.approx(float(logits.log_softmax(-1)[answer]), abs=1e-4)

    layers = store.query("SELECT count(DISTINCT layer) FROM fact_lookup_probe WHERE run_id = ?", [run_id]).rows[0][0]
    assert layers == embedded_model.n_layers
    for chart in fact_lookup.SPEC.charts:
        data = charts.load_charts(store, chart, run_id, charts.first_input_id(store, run_id))
        assert data and charts.render_text(data[0], 100, 24, use_colour=False).strip()
