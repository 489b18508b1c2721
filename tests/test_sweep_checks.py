"""A sweep checks its request before the run row exists: on the model's config and tokenizer in the
driver (no weights, no actor), then on the first actor's loaded model for the checks that need the
weights; a bad parameter leaves no run at all (app.run.sweep)."""
from __future__ import annotations

import pytest

from analyses.core.errors import BadInput
from analyses.inputs import corpus
from app.run.session import Session

pytestmark = pytest.mark.integration


def _prepared(analysis: str, params: dict, n_docs: int = 2):
    inputs, _ = corpus.build_inputs(corpus.InputChoice("pile", n_docs=n_docs, max_tokens=12), ("pile",))
    return Session.prepare(analysis, inputs, params)


def test_the_config_model_has_the_loaded_models_shape(embedded_model):
    from analyses.model.config_only import config_model

    shape = config_model(embedded_model.name)
    assert shape is not None and shape.bridge is None
    assert (shape.n_layers, shape.d_model, shape.n_ctx, shape.d_vocab) == (
        embedded_model.n_layers, embedded_model.d_model, embedded_model.n_ctx, embedded_model.d_vocab)
    assert config_model("/nonexistent/model/folder") is None


def test_a_layer_out_of_range_is_refused_on_the_config_before_any_actor_or_row(store, monkeypatch):
    from app.run import sweep as sweep_module
    from app.run.ray_pool import PoolOptions

    def no_actor(*args, **kwargs):
        raise AssertionError("an actor pool was started for a request the config refuses")

    monkeypatch.setattr(sweep_module, "ActorPool", no_actor)
    prepared = _prepared("first-layer-heads", {"layers": "40"})
    with pytest.raises(BadInput, match="layers must be below 30"):
        Session(store).sweep(prepared, PoolOptions(address="local", actors=1), "smollm2-135m", "cpu", "float32", None, lambda *a: None)
    assert store.query("SELECT count(*) FROM runs").rows[0][0] == 0
    # A good request passes every check the config can answer, or says it needs the weights.
    assert sweep_module.check_on_config("smollm2-135m", _prepared("first-layer-heads", {"layers": "0"})) is False
    assert sweep_module.check_on_config("smollm2-135m", _prepared("logit-lens", {})) is True


def test_a_check_that_needs_the_weights_runs_on_an_actor_before_the_row(store, tiny_model):
    pytest.importorskip("ray")
    from app.run.ray_pool import PoolOptions
    from app.run.sweep import check_on_config

    # additive needs learned position embeddings: only the weights say the tiny Llama has none.
    prepared = _prepared("first-layer-heads", {"method": "additive", "layers": "0"})
    assert check_on_config(tiny_model.location, prepared) is False
    events: list[str] = []
    options = PoolOptions(address="local", actors=1, local_cpus=1, local_gpus=0)
    with pytest.raises(BadInput, match="method additive needs learned position embeddings"):
        Session(store).sweep(prepared, options, tiny_model.location, "cpu", "float32", None, lambda *a: None, on_event=events.append)
    assert any("actor 0 started" in event for event in events)  # it was refused on an actor, not here
    assert store.query("SELECT count(*) FROM runs").rows[0][0] == 0
