"""Arrow tables of the truncation analysis: per token, summary per (layer, k, category), lowest tokens."""
from __future__ import annotations

from typing import Any, Callable

from analyses.core.tables import tokens_table_of

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Tokens shown before the truncation boundary in truncation_lowest.text.
DROPPED_SHOWN = 6


def summary_rows(cos, categories, n_layers: int, k_max: int) -> dict[str, list]:
    """n, mean and quantiles of cos [n_tokens, n_layers, k_max] per (layer, k, category), 'all' included."""
    import numpy as np

    out: dict[str, list] = {name: [] for name in ("layer", "context", "category", "n", "mean", "median", "q05", "q25", "q75", "q95")}
    groups = [("all", np.ones(len(categories), dtype=bool))]
    groups += [(name, categories == name) for name in sorted(set(categories.tolist()))]
    for name, selected in groups:
        values = cos[selected].astype(np.float64)  # [n, n_layers, k_max]
        if values.shape[0] == 0:
            continue
        quantiles = np.quantile(values, QUANTILES, axis=0)  # [5, n_layers, k_max]
        means = values.mean(axis=0)
        for layer in range(n_layers):
            for k in range(k_max):
                out["layer"].append(layer)
                out["context"].append(k + 1)
                out["category"].append(name)
                out["n"].append(int(values.shape[0]))
                out["mean"].append(float(means[layer, k]))
                q05, q25, median, q75, q95 = (float(q) for q in quantiles[:, layer, k])
                out["median"].append(median)
                out["q05"].append(q05)
                out["q25"].append(q25)
                out["q75"].append(q75)
                out["q95"].append(q95)
    return out


def context_text(strings: list[str], pos: int, k: int) -> str:
    """'…dropped tokens | kept tokens [token]' around the truncation boundary of context k."""
    start = pos - k + 1
    dropped = "".join(strings[max(0, start - DROPPED_SHOWN) : start])
    kept = "".join(strings[start:pos])
    return f"…{dropped} | {kept}[{strings[pos]}]"


def build_tables(model, docs: list, cosines: dict[int, Any], params: Any, categorize: Callable[[str], str]) -> tuple[dict, Any]:
    import numpy as np
    import pyarrow as pa

    n_layers, k_max = model.n_layers, params.k_max
    token_rows: list = []
    per_token: dict[str, list] = {"input_id": [], "pos": [], "token": [], "category": []}
    strings_of: dict[int, list[str]] = {}
    blocks = []
    for doc in docs:
        strings = model.token_strings(list(doc.ids))
        strings_of[doc.input_id] = strings
        token_rows.append((doc.input_id, doc.ids, strings))
        if not doc.positions:
            continue
        blocks.append(cosines[doc.input_id])
        for pos in doc.positions:
            per_token["input_id"].append(doc.input_id)
            per_token["pos"].append(pos)
            per_token["token"].append(strings[pos])
            per_token["category"].append(categorize(strings[pos]))
    cos = np.concatenate(blocks) if blocks else np.zeros((0, n_layers, k_max), dtype=np.float32)
    n_tokens = cos.shape[0]
    cells = n_layers * k_max
    categories = np.array(per_token["category"], dtype=object)
    detail = pa.table({
        "input_id": pa.array(np.repeat(np.array(per_token["input_id"], dtype=np.int32), cells)),
        "pos": pa.array(np.repeat(np.array(per_token["pos"], dtype=np.int32), cells)),
        "token": pa.array(np.repeat(np.array(per_token["token"], dtype=object), cells), type=pa.string()),
        "category": pa.array(np.repeat(categories, cells), type=pa.string()),
        "layer": pa.array(np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), k_max), n_tokens)),
        "context": pa.array(np.tile(np.arange(1, k_max + 1, dtype=np.int32), n_tokens * n_layers)),
        "cos": pa.array(cos.reshape(-1).astype(np.float64)),
    })
    summary = pa.table(summary_rows(cos, categories, n_layers, k_max)).cast(
        pa.schema([("layer", pa.int32()), ("context", pa.int32()), ("category", pa.string()), ("n", pa.int32())]
                  + [(name, pa.float64()) for name in ("mean", "median", "q05", "q25", "q75", "q95")])
    )
    lowest: dict[str, list] = {name: [] for name in ("rank", "input_id", "pos", "token", "category", "layer", "context", "cos", "text")}
    if n_tokens:
        at_longest = cos[:, :, k_max - 1]
        worst_layer = at_longest.argmin(axis=1)
        worst = at_longest[np.arange(n_tokens), worst_layer]
        for rank, row in enumerate(np.argsort(worst, kind="stable")[: params.n_lowest], start=1):
            input_id, pos = per_token["input_id"][row], per_token["pos"][row]
            lowest["rank"].append(rank)
            lowest["input_id"].append(input_id)
            lowest["pos"].append(pos)
            lowest["token"].append(per_token["token"][row])
            lowest["category"].append(per_token["category"][row])
            lowest["layer"].append(int(worst_layer[row]))
            lowest["context"].append(k_max)
            lowest["cos"].append(float(worst[row]))
            lowest["text"].append(context_text(strings_of[input_id], pos, k_max))
    lowest_schema = pa.schema([("rank", pa.int32()), ("input_id", pa.int32()), ("pos", pa.int32()), ("token", pa.string()),
                               ("category", pa.string()), ("layer", pa.int32()), ("context", pa.int32()),
                               ("cos", pa.float64()), ("text", pa.string())])
    tables = {"truncation": detail, "truncation_summary": summary, "truncation_lowest": pa.table(lowest, schema=lowest_schema)}
    return tables, tokens_table_of(token_rows)
