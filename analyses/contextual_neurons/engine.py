"""Extended embeddings through the contextual heads and their composition with layer-0 MLP neurons.

A contextual head h is modelled as attn_h(d, s) = pi_h(d, s) exp(c_h(t_s) - mean c_h) / N_h: its
positional pattern, a content weight per key token (for the destination token fixed as in
first-layer-heads) and its median normaliser. Its output at d is then sum_s attn_h(d, s) times the
value of (t_s, s); the token part of that value, weighted, is the token's extended embedding
through h. ln1, ln2 (and Gemma's post-attention norm) are linear at their mean corpus scales.
A neuron's input direction is its W_gate column for gated MLPs (what the nonlinearity sees),
else its W_in column.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import CancelEvent, Progress, check_cancel

MAX_EXPONENT = 60.0


@dataclass(frozen=True)
class HeadModel:
    """Per used head: weight w [V] (exp(content - mean) / N), value [V, h] of each token,
    position values [T, h] (learned positions only, else None), W_O [h, d] and the content [V]."""

    head: int
    weight: Any
    value: Any
    position_value: Any
    W_O: Any
    content: Any


def _content_query(weights, anatomy, head: int, dest_token: int, scale: float, first_pos: int):
    """The fixed destination token's query for head, averaged over where the head looks."""
    import torch

    from analyses.first_layer_heads import engine
    from analyses.model.weights import apply_norm, apply_norm_at_scale, rotate

    layer = weights.layers[0]
    if anatomy.method == "additive":
        return anatomy.query[head, first_pos:].double().mean(0)
    x = apply_norm_at_scale(layer.ln1, weights.W_E[dest_token], scale).double()
    query = x @ layer.W_Q[head].double() + (layer.b_Q[head].double() if layer.b_Q is not None else 0)
    if layer.q_norm is not None:
        query = apply_norm(layer.q_norm, query).double()
    rows = [engine.by_offset(anatomy.pattern, dest)[head] for dest in anatomy.dests]
    reach = min(row.shape[0] for row in rows)
    offset_weights = torch.stack([row[:reach] for row in rows]).mean(0)
    offset_weights = offset_weights / offset_weights.sum()
    rotated = rotate(query[None].expand(reach, -1), torch.arange(reach), layer.rotary)
    return (offset_weights[:, None] * rotated).sum(0)


def head_models(weights, anatomy, heads: tuple[int, ...], dest_token: int, corpus_ids, first_pos: int) -> list[HeadModel]:
    import torch

    from analyses.first_layer_heads.engine import expand_kv, linear_embeddings
    from analyses.model.weights import apply_norm, apply_norm_at_scale

    layer, scale = weights.layers[0], anatomy.scale_mean
    tokens = apply_norm_at_scale(layer.ln1, weights.W_E, scale)
    keys = expand_kv(torch.einsum("vd,kdh->kvh", tokens, layer.W_K), layer)
    values = expand_kv(torch.einsum("vd,kdh->kvh", tokens, layer.W_V), layer)
    if layer.b_K is not None:
        keys, values = keys + expand_kv(layer.b_K, layer)[:, None], values + expand_kv(layer.b_V, layer)[:, None]
    if layer.k_norm is not None:
        keys = apply_norm(layer.k_norm, keys)
    position_values = None
    if weights.W_pos is not None:
        _, positions, _ = linear_embeddings(weights, 0, scale)
        position_values = expand_kv(torch.einsum("td,kdh->kth", positions[: anatomy.pattern.shape[-1]], layer.W_V), layer)
    models = []
    for head in heads:
        query = _content_query(weights, anatomy, head, dest_token, scale, first_pos)
        content = (keys[head].double() @ query) * layer.attn_scale
        centred = content - content[corpus_ids].mean()
        weight = torch.exp(centred.clamp(max=MAX_EXPONENT)) / anatomy.heads[head].normaliser_median
        models.append(HeadModel(head, weight.float(), values[head], None if position_values is None else position_values[head],
                                layer.W_O[head], content.float()))
    return models


@dataclass(frozen=True)
class Directions:
    """Neuron input directions [d, N] for the residual (direct) and for attention outputs, and
    the constant [N]: pre(y, a) = y . direct + a . attention + constant."""

    direct: Any
    attention: Any
    constant: Any


def neuron_directions(weights, ln2_scale: float, post_attn_scale: float | None) -> Directions:
    layer = weights.layers[0]
    reading = layer.W_gate if layer.W_gate is not None else layer.W_in
    bias = layer.b_in if layer.W_gate is None and layer.b_in is not None else 0
    direct = (layer.ln2.weight[:, None] * reading) / ln2_scale
    if layer.ln2.kind == "layernorm":
        direct = direct - direct.mean(0, keepdim=True)
    constant = (layer.ln2.bias @ reading if layer.ln2.bias is not None else 0) + bias
    attention = direct if layer.post_attn is None else layer.post_attn.weight[:, None] * direct / post_attn_scale
    if weights.parallel:
        attention = attention * 0
    return Directions(direct, attention, constant + reading.new_zeros(reading.shape[1]))


@dataclass(frozen=True)
class Document:
    ids: Any
    resid_pre: Any
    mlp_input: Any
    attn_raw: Any


def layer_zero_pass(model, weights, token_rows: list, progress: Progress, cancel: CancelEvent) -> list[Document]:
    """Layer 0's residual, MLP input and raw attention output per document (one block run)."""
    import torch

    captured: dict[str, Any] = {}

    def keep(tensor, hook, name: str) -> None:
        captured[name] = tensor[0].detach().float().clone()

    names = ("blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.attn.hook_out")
    hooks = [(name, functools.partial(keep, name=name)) for name in names]
    documents = []
    with torch.inference_mode():
        for index, tokens in enumerate(token_rows):
            check_cancel(cancel)
            progress(index, len(token_rows), f"layer 0, document {index + 1}/{len(token_rows)}")
            model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=1, use_cache=False)
            mlp_input = captured[names[0]] if weights.parallel else captured[names[0]] + captured[names[1]]
            documents.append(Document(tokens[0].cpu(), captured[names[0]], mlp_input, captured[names[2]]))
    return documents


def contextual_term(models: list[HeadModel], pattern, ids, attention_direction) -> Any:
    """sum_h sum_s attn_h(d, s) (value_h(t_s, s) W_O,h) . attention_direction: [T, N]."""
    import torch

    size = ids.shape[0]
    total = torch.zeros(size, attention_direction.shape[1])
    for model in models:
        per_key = model.value[ids]
        if model.position_value is not None:
            per_key = per_key + model.position_value[:size]
        attn = pattern[model.head, :size, :size].float() * model.weight[ids][None, :]
        total += attn @ (per_key @ (model.W_O @ attention_direction))
    return total


def fit_statistics(real, predicted, direct) -> dict[str, Any]:
    """Per neuron over tokens: corr(predicted, real), corr(direct, real), and the R^2 of real on
    [direct, contextual] and on direct alone (their difference: what the contextual heads explain)."""
    real, predicted, direct = real.double(), predicted.double(), direct.double()
    contextual = predicted - direct

    def corr(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        return (a * b).sum(0) / ((a.pow(2).sum(0) * b.pow(2).sum(0)).sqrt()).clamp(min=1e-30)

    r_pred, r_direct, r_ctx, r_between = corr(predicted, real), corr(direct, real), corr(contextual, real), corr(direct, contextual)
    denominator = (1 - r_between.pow(2)).clamp(min=1e-12)
    r2_full = ((r_direct.pow(2) + r_ctx.pow(2) - 2 * r_direct * r_ctx * r_between) / denominator).clamp(0, 1)
    return {"corr": r_pred, "corr_direct": r_direct, "r2_full": r2_full, "r2_direct": r_direct.pow(2),
            "ctx_explained": r2_full - r_direct.pow(2), "real_std": real.std(0), "pred_std": predicted.std(0)}
