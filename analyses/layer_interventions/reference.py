"""The naive reference for layer interventions: a full bridge forward per intervention, with
hooks that zero the deleted outputs, and swaps by reordering the model's own block list for one
forward (the model layer's ``blocks_in_order``).

Used by the tests and benchmarks/layer_interventions.py to check the fast path; never by a run.
"""
from __future__ import annotations

from analyses.layer_interventions import Intervention, TokenBatch, clean_reference, metric_sums


def _zero(activation, hook):
    import torch

    return torch.zeros_like(activation)


def zero_hooks(item: Intervention) -> list[tuple[str, object]]:
    parts = {"block": ("attn", "mlp"), "attn": ("attn",), "mlp": ("mlp",), "swap": ()}[item.kind]
    return [(f"blocks.{item.layer}.hook_{part}_out", _zero) for part in parts]


def intervened_logits(model, tokens, item: Intervention):
    """Model logits [B, T, V] with one intervention, by a full forward."""
    from analyses.model.adapters import adapter_for

    bridge = model.bridge
    if item.kind == "swap":
        order = list(range(model.n_layers))
        order[item.layer], order[item.layer + 1] = order[item.layer + 1], order[item.layer]
        with adapter_for(model).blocks_in_order(order):
            return bridge(tokens, use_cache=False)
    return bridge.run_with_hooks(tokens, fwd_hooks=zero_hooks(item), use_cache=False)


def naive_batch_sums(model, batch: TokenBatch, interventions: list[Intervention]):
    """[len(interventions), N_SUMS] sums, from one clean and one full intervened forward each."""
    import torch

    ref = clean_reference(model.bridge(batch.tokens, use_cache=False), batch)
    return torch.stack([metric_sums(ref, intervened_logits(model, batch.tokens, item)) for item in interventions])
