"""attention-pattern: one layer's attention per head over a prompt, run through the session facade
on a real (tiny) model, against the bridge's own full forward; bad layer or head refused before
anything is stored; the chart is a heatmap per head over the prompt's tokens."""
from __future__ import annotations

import pytest

from analyses.core.contract import Input, no_progress
from analyses.core.errors import BadInput

PROMPT = "The Eiffel Tower is located in the city of"


def run(store, model, **params):
    from app.run.session import Session

    session = Session(store)
    return session.run(model, session.prepare("attention-pattern", (Input(0, "prompt", PROMPT),), {k: str(v) for k, v in params.items()}), no_progress)


def stored(store, run_id: int) -> dict:
    rows = store.query("SELECT head, query_pos, pos, weight FROM attention_pattern WHERE run_id = ?", [run_id]).rows
    return {(head, query, key): weight for head, query, key, weight in rows}


def test_every_heads_pattern_is_the_models_own(store, tiny_model):
    import torch

    layer = 1
    run_id = run(store, tiny_model, layer=layer)
    found = stored(store, run_id)
    tokens = tiny_model.to_tokens(PROMPT, prepend_bos="auto")
    with torch.inference_mode():
        _, cache = tiny_model.bridge.run_with_cache(tokens)  # the whole forward, no early stop
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0].float()
    heads, positions = pattern.shape[0], pattern.shape[-1]
    assert len(found) == heads * positions * positions
    for (head, query, key), weight in found.items():
        assert weight == pytest.approx(float(pattern[head, query, key]), abs=1e-6)
        if key > query:
            assert weight == 0.0  # the causal mask
    sums = {}
    for (head, query, _), weight in found.items():
        sums[(head, query)] = sums.get((head, query), 0.0) + weight
    assert all(total == pytest.approx(1.0, abs=1e-5) for total in sums.values())
    checks = store.query("SELECT ok FROM run_checks WHERE run_id = ? AND \"check\" = 'invariant_rows_sum_to_one'", [run_id]).rows
    assert checks == [(True,)]


def test_one_head_and_its_chart_over_the_prompts_tokens(store, tiny_model):
    from analyses.attention_pattern import SPEC
    from app import charts

    run_id = run(store, tiny_model, layer=0, head=2)
    assert {head for head, _, _ in stored(store, run_id)} == {2}
    loaded = charts.load_charts(store, SPEC.charts[0], run_id)
    assert len(loaded) == 1 and loaded[0].facet_value == 2
    data = loaded[0]
    tokens = [token for (token,) in store.query("SELECT token FROM tokens WHERE run_id = ? ORDER BY pos", [run_id]).rows]
    assert data.x_labels == tokens and data.y_values == list(range(len(tokens)))
    assert charts.render_text(data, 100, 24, use_colour=False).splitlines()[0].strip().startswith("Attention pattern")


@pytest.mark.parametrize("params, message", [({"layer": 3}, "'layer' must be in 0..2"), ({"head": 4}, "'head' must be in 0..3"),
                                             ({"layer": -1}, "must not be negative")])
def test_a_layer_or_head_the_model_lacks_is_refused_before_anything_is_stored(store, tiny_model, params, message):
    with pytest.raises(BadInput, match=message):
        run(store, tiny_model, **params)
    assert store.query("SELECT count(*) FROM runs").rows == [(0,)]
