"""The weights API reproduces the model: layer 0's attention and MLP outputs and the final logits,
recomputed by hand from model_weights(), equal the bridge's hooks on a tiny model of every family."""
from __future__ import annotations

import pytest

from analyses.model.weights import activation, apply_norm, model_weights, rotate

TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps again by the river."


def attention_by_hand(layer, resid):
    """Layer attention output [T, d] from its weights and the residual [T, d] it reads."""
    import torch

    x = apply_norm(layer.ln1, resid)
    group = layer.n_heads // layer.n_kv_heads
    q = torch.einsum("td,ndh->nth", x, layer.W_Q)
    k = torch.einsum("td,kdh->kth", x, layer.W_K).repeat_interleave(group, 0)
    v = torch.einsum("td,kdh->kth", x, layer.W_V).repeat_interleave(group, 0)
    if layer.b_Q is not None:
        q, k, v = q + layer.b_Q[:, None], k + layer.b_K.repeat_interleave(group, 0)[:, None], v + layer.b_V.repeat_interleave(group, 0)[:, None]
    if layer.q_norm is not None:
        q, k = apply_norm(layer.q_norm, q), apply_norm(layer.k_norm, k)
    positions = torch.arange(resid.shape[0])
    if layer.rotary is not None:
        q, k = rotate(q, positions, layer.rotary), rotate(k, positions, layer.rotary)
    scores = torch.einsum("nqh,nkh->nqk", q, k) * layer.attn_scale
    offsets = positions[:, None] - positions[None, :]
    allowed = offsets >= 0
    if layer.sliding_window is not None:
        allowed &= offsets < layer.sliding_window
    pattern = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    out = torch.einsum("nqk,nkh,nhd->qd", pattern, v, layer.W_O)
    out = out + layer.b_O if layer.b_O is not None else out
    return apply_norm(layer.post_attn, out) if layer.post_attn is not None else out


def mlp_by_hand(layer, resid):
    x = apply_norm(layer.ln2, resid)
    hidden = x @ layer.W_in + (layer.b_in if layer.b_in is not None else 0)
    act = activation(layer.activation)
    hidden = act(x @ layer.W_gate) * hidden if layer.W_gate is not None else act(hidden)
    out = hidden @ layer.W_out + (layer.b_out if layer.b_out is not None else 0)
    return apply_norm(layer.post_mlp, out) if layer.post_mlp is not None else out


def test_weights_reproduce_layer_zero_and_the_logits(family_model):
    import torch

    weights = model_weights(family_model)
    tokens = family_model.to_tokens(TEXT, prepend_bos=False)
    with torch.inference_mode():
        logits, cache = family_model.bridge.run_with_cache(tokens)
    ids = tokens[0]
    resid = weights.W_E[ids] + (weights.W_pos[: len(ids)] if weights.W_pos is not None else 0)
    assert torch.allclose(resid, cache["blocks.0.hook_resid_pre"][0], atol=1e-5)
    layer = weights.layers[0]
    assert layer.W_Q.shape == (layer.n_heads, family_model.d_model, layer.W_Q.shape[2])
    attn_out = attention_by_hand(layer, resid)
    assert torch.allclose(attn_out, cache["blocks.0.hook_attn_out"][0], atol=1e-4, rtol=1e-4)
    mlp_in = resid if weights.parallel else resid + attn_out
    mlp_out = mlp_by_hand(layer, mlp_in)
    assert torch.allclose(mlp_out, cache["blocks.0.hook_mlp_out"][0], atol=1e-4, rtol=1e-4)
    last = cache[f"blocks.{family_model.n_layers - 1}.hook_resid_post"][0]
    by_hand = apply_norm(weights.ln_final, last) @ weights.W_U + (weights.b_U if weights.b_U is not None else 0)
    assert torch.allclose(by_hand, logits[0].float(), atol=1e-4, rtol=1e-4)
    # The whole tiny model by hand: block after block from the embeddings.
    for layer in weights.layers:
        attn_out = attention_by_hand(layer, resid)
        resid = resid + attn_out + mlp_by_hand(layer, resid) if weights.parallel else resid + attn_out
        if not weights.parallel:
            resid = resid + mlp_by_hand(layer, resid)
    assert torch.allclose(resid, last, atol=1e-4, rtol=1e-4)


def test_shapes_and_family_facts(family_model):
    weights = model_weights(family_model)
    layer = weights.layers[0]
    d_model, n_heads = family_model.d_model, layer.n_heads
    assert weights.W_E.shape == (family_model.d_vocab, d_model)
    assert weights.W_U.shape == (d_model, family_model.d_vocab)
    assert layer.W_O.shape[0] == n_heads and layer.W_O.shape[2] == d_model
    assert layer.W_K.shape == layer.W_V.shape and n_heads % layer.n_kv_heads == 0
    assert layer.W_in.shape == (d_model, layer.W_out.shape[0])
    expected = {"gpt2": (False, False), "neox": (True, True), "gptj": (True, True), "phi": (True, True), "llama": (True, False), "gemma3": (True, False)}
    has_rotary, parallel = expected[weights.family]
    assert (layer.rotary is not None) == has_rotary and weights.parallel == parallel
    assert (weights.W_pos is None) == has_rotary
    assert (layer.W_gate is not None) == (weights.family in ("llama", "gemma3"))
    if weights.family == "llama":
        theta = family_model.bridge.original_model.config.rope_parameters["rope_theta"]
        assert layer.rotary.base == pytest.approx(theta, rel=1e-4) and layer.rotary.dim == layer.W_Q.shape[2]


def test_gemma_norm_weights_are_stored_as_applied(family_model):
    import torch

    weights = model_weights(family_model)
    if weights.family != "gemma3":
        pytest.skip("Gemma's RMSNorm only")
    hf = family_model.bridge.original_model.model.layers[0].input_layernorm
    assert torch.allclose(weights.layers[0].ln1.weight, hf.weight.detach().float() + 1.0)


def test_attention_scores_give_the_models_pattern(family_model):
    import torch

    from analyses.model.weights import attention_scores

    weights = model_weights(family_model)
    tokens = family_model.to_tokens(TEXT, prepend_bos=False)
    with torch.inference_mode():
        _, cache = family_model.bridge.run_with_cache(tokens)
    for layer in range(family_model.n_layers):
        scores, allowed = attention_scores(weights.layers[layer], cache[f"blocks.{layer}.hook_resid_pre"][0])
        assert torch.allclose(scores.softmax(-1).float(), cache[f"blocks.{layer}.attn.hook_pattern"][0], atol=1e-5)
        assert bool(allowed.tril().eq(allowed).all()) and bool(allowed.diagonal().all())
