"""Arrow tables of the truncation analysis: per token, summary per (layer, k, category), lowest tokens."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analyses.core.tables import tokens_table_of

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Tokens shown before the truncation boundary in truncation_lowest.text.
DROPPED_SHOWN = 6


def context_text(strings: list[str], pos: int, k: int) -> str:
    """'…dropped tokens | kept tokens [token]' around the truncation boundary of context k."""
    start = pos - k + 1
    dropped = "".join(strings[max(0, start - DROPPED_SHOWN) : start])
    kept = "".join(strings[start:pos])
    return f"…{dropped} | {kept}[{strings[pos]}]"


def detail_table(model, docs: list, cosines: dict[int, Any], params: Any, categorize: Callable[[str], str]) -> tuple[Any, Any]:
    """The per-token table of these documents (one row per token, layer and k) and their tokens table.

    Token and category strings are dictionary-encoded (each distinct string once per shard)."""
    import numpy as np
    import pyarrow as pa

    n_layers, k_max = model.n_layers, params.k_max
    token_rows: list = []
    input_ids: list[int] = []
    positions: list[int] = []
    strings_at: list[str] = []
    blocks = []
    for doc in docs:
        strings = model.token_strings(list(doc.ids))
        token_rows.append((doc.input_id, doc.ids, strings))
        if not doc.positions:
            continue
        blocks.append(cosines[doc.input_id])
        input_ids.extend([doc.input_id] * len(doc.positions))
        positions.extend(doc.positions)
        strings_at.extend(strings[pos] for pos in doc.positions)
    cos = np.concatenate(blocks) if blocks else np.zeros((0, n_layers, k_max), dtype=np.float32)
    n_tokens, cells = cos.shape[0], n_layers * k_max

    def repeated_strings(values: list[str]) -> Any:
        unique, inverse = np.unique(np.array(values, dtype=object), return_inverse=True) if values else (np.array([], dtype=object), np.array([], dtype=np.int64))
        indices = np.repeat(inverse.astype(np.int32), cells)
        return pa.DictionaryArray.from_arrays(pa.array(indices, type=pa.int32()), pa.array(unique.tolist(), type=pa.string()))

    detail = pa.table({
        "input_id": pa.array(np.repeat(np.array(input_ids, dtype=np.int32), cells)),
        "pos": pa.array(np.repeat(np.array(positions, dtype=np.int32), cells)),
        "token": repeated_strings(strings_at),
        "category": repeated_strings([categorize(text) for text in strings_at]),
        "layer": pa.array(np.tile(np.repeat(np.arange(n_layers, dtype=np.int16), k_max), n_tokens)),
        "context": pa.array(np.tile(np.arange(1, k_max + 1, dtype=np.int16), n_tokens * n_layers)),
        "cos": pa.array(cos.reshape(-1).astype(np.float32)),
    })
    return detail, tokens_table_of(token_rows)


def _strings(column: Any) -> Any:
    import pyarrow as pa

    return column.cast(pa.string()).to_numpy(zero_copy_only=False)


SUMMARY_COLUMNS = ("layer", "context", "category", "n", "mean", "median", "q05", "q25", "q75", "q95")


def summary_table(read: Callable[..., Any], n_layers: int, k_max: int, cancel: Any = None) -> tuple[Any, int]:
    """n, mean and quantiles per (layer, k, category), 'all' included, over every stored token;
    read one layer at a time, so memory holds one layer's cosines. Returns (table, tokens)."""
    import numpy as np
    import pyarrow as pa

    from analyses.core.contract import check_cancel

    per_group: dict[str, list[tuple]] = {}
    n_tokens = 0
    for layer in range(n_layers):
        check_cancel(cancel)
        part = read("truncation", ["category", "context", "cos"], {"layer": layer})
        if part is None or part.num_rows == 0:
            continue
        cos = part["cos"].to_numpy().astype(np.float64).reshape(-1, k_max)
        categories = _strings(part["category"])[::k_max]
        n_tokens = cos.shape[0]
        groups = [("all", np.ones(len(categories), dtype=bool))] + [(name, categories == name) for name in sorted(set(categories.tolist()))]
        for name, selected in groups:
            values = cos[selected]
            quantiles = np.quantile(values, QUANTILES, axis=0)  # [5, k_max]
            means = values.mean(axis=0)
            for k in range(k_max):
                q05, q25, median, q75, q95 = (float(q) for q in quantiles[:, k])
                per_group.setdefault(name, []).append((layer, k + 1, name, int(values.shape[0]), float(means[k]), median, q05, q25, q75, q95))
    rows = [row for name in ["all"] + sorted(set(per_group) - {"all"}) for row in per_group.get(name, [])]
    columns = list(zip(*rows)) if rows else [[] for _ in SUMMARY_COLUMNS]
    schema = pa.schema([("layer", pa.int32()), ("context", pa.int32()), ("category", pa.string()), ("n", pa.int32())]
                       + [(name, pa.float64()) for name in ("mean", "median", "q05", "q25", "q75", "q95")])
    return pa.table({name: list(values) for name, values in zip(SUMMARY_COLUMNS, columns)}, schema=schema), n_tokens


def lowest_table(read: Callable[..., Any], n_layers: int, k_max: int, n_lowest: int) -> Any:
    """The tokens with the lowest cosine over layers at k = k_max, with their context text."""
    import numpy as np
    import pyarrow as pa

    names = ("rank", "input_id", "pos", "token", "category", "layer", "context", "cos", "text")
    lowest: dict[str, list] = {name: [] for name in names}
    part = read("truncation", ["input_id", "pos", "token", "category", "cos"], {"context": k_max})
    if part is not None and part.num_rows and n_lowest > 0:
        at_longest = part["cos"].to_numpy().reshape(-1, n_layers)
        first_rows = np.arange(0, part.num_rows, n_layers)
        worst_layer = at_longest.argmin(axis=1)
        worst = at_longest[np.arange(at_longest.shape[0]), worst_layer]
        chosen = np.argsort(worst, kind="stable")[:n_lowest]
        input_ids = part["input_id"].to_numpy()[first_rows]
        positions = part["pos"].to_numpy()[first_rows]
        tokens, categories = _strings(part["token"])[first_rows], _strings(part["category"])[first_rows]
        wanted = sorted({int(input_ids[row]) for row in chosen})
        stored = read("tokens", ["input_id", "pos", "token"], {"input_id": wanted})
        strings_of: dict[int, dict[int, str]] = {}
        for input_id, pos, text in zip(stored["input_id"].to_pylist(), stored["pos"].to_pylist(), stored["token"].to_pylist()):
            strings_of.setdefault(input_id, {})[pos] = text
        for rank, row in enumerate(chosen, start=1):
            input_id, pos = int(input_ids[row]), int(positions[row])
            strings = [strings_of[input_id][p] for p in range(max(strings_of[input_id]) + 1)]
            lowest["rank"].append(rank)
            lowest["input_id"].append(input_id)
            lowest["pos"].append(pos)
            lowest["token"].append(str(tokens[row]))
            lowest["category"].append(str(categories[row]))
            lowest["layer"].append(int(worst_layer[row]))
            lowest["context"].append(k_max)
            lowest["cos"].append(float(worst[row]))
            lowest["text"].append(context_text(strings, pos, k_max))
    schema = pa.schema([("rank", pa.int32()), ("input_id", pa.int32()), ("pos", pa.int32()), ("token", pa.string()),
                        ("category", pa.string()), ("layer", pa.int32()), ("context", pa.int32()),
                        ("cos", pa.float64()), ("text", pa.string())])
    return pa.table(lowest, schema=schema)
