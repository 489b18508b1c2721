"""The references for truncated-context similarity, used by the tests and benchmarks, never by a run:
the naive forward (one unbatched forward per document and one per (token, k); benchmarks/truncation.py)
and the in-memory finalize that the streamed one replaced (benchmarks/finalize_memory.py)."""
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


def in_memory_summary(read, n_layers: int, k_max: int) -> list[tuple]:
    """The finalize that the streamed one replaced (issue 23), kept as its reference: every stored
    cosine of a layer in memory at once, numpy quantiles and means per (layer, k, category); the
    summary rows in the order the streamed finalize writes them."""
    import numpy as np
    import pyarrow as pa

    per_group: dict[str, list[tuple]] = {}
    for layer in range(n_layers):
        part = read("truncation", ["category", "context", "cos"], {"layer": layer})
        cos = part["cos"].to_numpy().astype(np.float64).reshape(-1, k_max)
        categories = part["category"].cast(pa.string()).to_numpy(zero_copy_only=False)[::k_max]
        groups = [("all", np.ones(len(categories), dtype=bool))] + [(name, categories == name) for name in sorted(set(categories.tolist()))]
        for name, selected in groups:
            values = cos[selected]
            quantiles = np.quantile(values, (0.05, 0.25, 0.5, 0.75, 0.95), axis=0)
            means = values.mean(axis=0)
            for k in range(k_max):
                q05, q25, median, q75, q95 = (float(q) for q in quantiles[:, k])
                per_group.setdefault(name, []).append((layer, k + 1, name, int(values.shape[0]), float(means[k]), median, q05, q25, q75, q95))
    return [row for name in ["all"] + sorted(set(per_group) - {"all"}) for row in per_group.get(name, [])]


def in_memory_lowest(read, n_layers: int, k_max: int, n_lowest: int) -> list[tuple]:
    """The lowest tokens the old way: every stored row at k = k_max in memory, argmin over layers,
    a stable argsort over tokens; truncation_lowest's rows."""
    import numpy as np
    import pyarrow as pa

    from analyses.truncation.tables import context_text

    part = read("truncation", ["input_id", "pos", "token", "category", "cos"], {"context": k_max})
    at_longest = part["cos"].to_numpy().reshape(-1, n_layers)
    first_rows = np.arange(0, part.num_rows, n_layers)
    worst_layer = at_longest.argmin(axis=1)
    worst = at_longest[np.arange(at_longest.shape[0]), worst_layer]
    chosen = np.argsort(worst, kind="stable")[:n_lowest]
    input_ids, positions = part["input_id"].to_numpy()[first_rows], part["pos"].to_numpy()[first_rows]
    tokens = part["token"].cast(pa.string()).to_numpy(zero_copy_only=False)[first_rows]
    categories = part["category"].cast(pa.string()).to_numpy(zero_copy_only=False)[first_rows]
    stored = read("tokens", ["input_id", "pos", "token"], {"input_id": sorted({int(input_ids[row]) for row in chosen})})
    strings_of: dict[int, dict[int, str]] = {}
    for input_id, pos, text in zip(stored["input_id"].to_pylist(), stored["pos"].to_pylist(), stored["token"].to_pylist()):
        strings_of.setdefault(input_id, {})[pos] = text
    rows = []
    for rank, row in enumerate(chosen, start=1):
        input_id, pos = int(input_ids[row]), int(positions[row])
        strings = [strings_of[input_id][p] for p in range(max(strings_of[input_id]) + 1)]
        rows.append((rank, input_id, pos, str(tokens[row]), str(categories[row]), int(worst_layer[row]), k_max,
                     float(worst[row]), context_text(strings, pos, k_max)))
    return rows


def in_memory_finalize(read, n_layers: int, k_max: int, n_lowest: int) -> tuple[list[tuple], list[tuple], dict]:
    """The whole old finalize: summary rows, lowest rows and its notes (documents counted from every
    stored row's input_id)."""
    summary, lowest = in_memory_summary(read, n_layers, k_max), in_memory_lowest(read, n_layers, k_max, n_lowest)
    n_docs = len(set(read("tokens", ["input_id"])["input_id"].to_pylist()))
    n_analysed = len(set(read("truncation", ["input_id"])["input_id"].to_pylist()))
    n_tokens = summary[0][3] if summary else 0  # the first row: category all
    return summary, lowest, {"analysed_tokens": n_tokens, "documents_without_analysed_tokens": n_docs - n_analysed}
