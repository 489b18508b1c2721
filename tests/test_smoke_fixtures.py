from __future__ import annotations


def test_tiny_model_boots_with_three_layers(tiny_model):
    assert tiny_model.n_layers == 3
    assert tiny_model.source == "local"
    assert tiny_model.to_tokens("hello world").shape[0] == 1
