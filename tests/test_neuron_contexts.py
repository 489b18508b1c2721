"""neuron-contexts: a neuron's top-activating contexts over several inputs, through the session
facade on a real (tiny) model, against the bridge's own full forward; a neuron or layer the model
lacks is refused before anything is stored."""
from __future__ import annotations

import pytest

from analyses.core.contract import Input, no_progress
from analyses.core.errors import BadInput

TEXTS = ("The Eiffel Tower is located in the city of Paris.", "Michael Jordan plays the sport of basketball.",
         "def main():\n    return 0", "Once upon a time there was a small village by the sea.")


def run(store, model, **params):
    from app.run.session import Session

    session = Session(store)
    inputs = tuple(Input(i, "prompt", text) for i, text in enumerate(TEXTS))
    return session.run(model, session.prepare("neuron-contexts", inputs, {k: str(v) for k, v in params.items()}), no_progress)


def activations(model, layer: int, neuron: int) -> dict[tuple[int, int], float]:
    import torch

    found = {}
    for input_id, text in enumerate(TEXTS):
        tokens = model.to_tokens(text, prepend_bos="auto")
        with torch.inference_mode():
            _, cache = model.bridge.run_with_cache(tokens)  # the whole forward, no early stop
        for pos, value in enumerate(cache[f"blocks.{layer}.mlp.out.hook_in"][0, :, neuron].float().tolist()):
            found[(input_id, pos)] = value
    return found


def test_the_top_contexts_are_the_highest_activations_over_every_input(store, tiny_model):
    layer, neuron, top_k = 1, 7, 6
    run_id = run(store, tiny_model, layer=layer, neuron=neuron, top_k=top_k, context=3)
    expected = activations(tiny_model, layer, neuron)
    rows = store.query("SELECT rank, activation, token, context, input_id, pos FROM neuron_contexts WHERE run_id = ? ORDER BY rank", [run_id]).rows
    assert [row[0] for row in rows] == list(range(1, top_k + 1))
    stored = [row[1] for row in rows]
    assert stored == sorted(stored, reverse=True)
    assert stored == pytest.approx(sorted(expected.values(), reverse=True)[:top_k], abs=1e-5)
    for _, activation, token, context, input_id, pos in rows:
        assert activation == pytest.approx(expected[(input_id, pos)], abs=1e-5)
        stored_token = store.query("SELECT token FROM tokens WHERE run_id = ? AND input_id = ? AND pos = ?", [run_id, input_id, pos]).rows[0][0]
        assert token == stored_token and context.endswith(f"[{token}]")
    summary = dict(store.query("SELECT input_id, max_activation FROM neuron_contexts_inputs WHERE run_id = ?", [run_id]).rows)
    for input_id in range(len(TEXTS)):
        assert summary[input_id] == pytest.approx(max(v for (i, _), v in expected.items() if i == input_id), abs=1e-5)


def test_a_neuron_the_model_lacks_is_refused_before_anything_is_stored(store, tiny_model):
    d_mlp = tiny_model.bridge.cfg.d_mlp
    with pytest.raises(BadInput, match=f"'neuron' must be in 0..{d_mlp - 1}"):
        run(store, tiny_model, neuron=d_mlp)
    with pytest.raises(BadInput, match="'layer' must be in 0..2"):
        run(store, tiny_model, layer=3)
    assert store.query("SELECT count(*) FROM runs").rows == [(0,)]
