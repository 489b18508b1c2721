"""The naive reference for truncated-context similarity: one unbatched forward per document and
one per (token, k). Used by the tests and benchmarks/truncation.py; never by a run."""
from __future__ import annotations

from typing import Any

from analyses.truncation.engine import DocTokens


def naive_cosines(model, docs: list[DocTokens], k_max: int, bos_id: int | None) -> tuple[dict[int, Any], Any]:
    """Reference: one unbatched forward per document and one per (token, k) with the truncated
    context, cached with run_with_cache; returns the same layout as truncated_cosines and the mean."""
    import torch

    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.n_layers)]

    def stack(ids: list[int]):
        tokens = torch.tensor([ids], dtype=torch.long, device=model.device)
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in names)
        return torch.stack([cache[name][0] for name in names]).float()  # [n_layers, T, d]

    full = {doc.input_id: stack(list(doc.ids))[:, list(doc.positions), :] for doc in docs}
    mean = torch.cat([full[d.input_id] for d in docs], dim=1).double().mean(1).float()
    results = {}
    for doc in docs:
        cos = torch.zeros((len(doc.positions), model.n_layers, k_max))
        for i, p in enumerate(doc.positions):
            a = full[doc.input_id][:, i, :] - mean
            for k in range(1, k_max + 1):
                context = ([bos_id] if bos_id is not None else []) + list(doc.ids[p - k + 1 : p + 1])
                b = stack(context)[:, -1, :] - mean
                cos[i, :, k - 1] = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        results[doc.input_id] = cos.numpy()
    return results, mean
