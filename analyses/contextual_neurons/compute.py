"""Token contributions of contextual-neurons: each neuron's top and bottom tokens over the vocabulary
(the run itself: analyses/contextual_neurons/sharded.py)."""
from __future__ import annotations

from typing import Any

from analyses.core.contract import CancelEvent, Progress, check_cancel, no_progress


def token_contributions(models, directions, top_k: int, chunk: int, cancel: CancelEvent, eligible=None,
                        progress: Progress = no_progress) -> tuple[Any, Any, Any, Any]:
    """Top and bottom (values, token ids) [N, k] of each neuron's contribution over the
    vocabulary, or over the tokens where eligible [V] is true."""
    import torch

    n_neurons = directions.attention.shape[1]
    tops, top_ids, bottoms, bottom_ids = [], [], [], []
    for start in range(0, n_neurons, chunk):
        check_cancel(cancel)
        progress(start, n_neurons, f"token contributions: neurons {start + 1}-{min(n_neurons, start + chunk)}/{n_neurons}")
        columns = directions.attention[:, start:start + chunk]
        total = torch.zeros(models[0].value.shape[0], columns.shape[1])
        for model in models:
            total += model.weight[:, None] * (model.value @ (model.W_O @ columns))
        k = min(top_k, total.shape[0] if eligible is None else int(eligible.sum()))
        if eligible is None:
            high, low = total.topk(k, dim=0), total.topk(k, dim=0, largest=False)
        else:
            high = total.masked_fill(~eligible[:, None], float("-inf")).topk(k, dim=0)
            low = total.masked_fill(~eligible[:, None], float("inf")).topk(k, dim=0, largest=False)
        tops.append(high.values.T), top_ids.append(high.indices.T), bottoms.append(low.values.T), bottom_ids.append(low.indices.T)
    return torch.cat(tops), torch.cat(top_ids), torch.cat(bottoms), torch.cat(bottom_ids)
