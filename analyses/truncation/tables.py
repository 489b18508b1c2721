"""Arrow tables of the truncation analysis: per token, summary per (layer, k, category), lowest tokens."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analyses.core.tables import tokens_table_of

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
QUANTILE_NAMES = {"q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}


def summary_table(read: Any, cancel: Any = None) -> tuple[Any, int]:
    """n, mean and quantiles per (layer, k, category), 'all' included, over every stored token.

    Reduced where the rows are stored (``read.quantiles``: DuckDB over the run's shards, exact
    quantiles in memory that does not grow with the corpus); rows 'all' first, then the categories
    in name order, each by layer and k. Returns (table, analysed tokens)."""
    import pyarrow as pa

    from analyses.core.contract import check_cancel

    check_cancel(cancel)
    every = read.quantiles("truncation", "cos", ("layer", "context"), QUANTILE_NAMES)
    check_cancel(cancel)
    per_category = read.quantiles("truncation", "cos", ("category", "layer", "context"), QUANTILE_NAMES)
    schema = pa.schema([("layer", pa.int32()), ("context", pa.int32()), ("category", pa.string()), ("n", pa.int32())]
                       + [(name, pa.float64()) for name in ("mean", "median", "q05", "q25", "q75", "q95")])
    if every is None or every.num_rows == 0:
        return schema.empty_table(), 0
    parts = []
    for part, category in ((every, pa.array(["all"] * every.num_rows, type=pa.string())), (per_category, None)):
        if part is None:
            continue
        parts.append(pa.table({
            "layer": part["layer"].cast(pa.int32()), "context": part["context"].cast(pa.int32()),
            "category": category if category is not None else part["category"].cast(pa.string()),
            "n": part["n"].cast(pa.int32()),
            **{name: part[name] for name in ("mean", "median", "q05", "q25", "q75", "q95")},
        }, schema=schema))
    # Every token has a row at every (layer, k): any group of 'all' counts them.
    return pa.concat_tables(parts), int(every["n"][0].as_py())


def lowest_table(read: Any, n_layers: int, k_max: int, n_lowest: int) -> Any:
    """The tokens with the lowest cosine over layers at k = k_max, with their context text.

    ``read.lowest`` takes the n_lowest distinct tokens (input_id, pos) in ascending cosine order
    (a top-n over the stored rows, at most n_layers rows per token): each token at its lowest layer
    (ties: the first layer), tokens of equal cosine in stored order."""
    import pyarrow as pa

    names = ("rank", "input_id", "pos", "token", "category", "layer", "context", "cos", "text")
    lowest: dict[str, list] = {name: [] for name in names}
    chosen = read.lowest("truncation", "cos", n_lowest, ("input_id", "pos", "token", "category", "layer", "cos"),
                         distinct=("input_id", "pos"), rows_per_key=n_layers, where={"context": k_max}) if n_lowest > 0 else None
    if chosen is not None and chosen.num_rows:
        wanted = sorted(set(chosen["input_id"].to_pylist()))
        stored = read("tokens", ["input_id", "pos", "token"], {"input_id": wanted})
        strings_of: dict[int, dict[int, str]] = {}
        for input_id, pos, text in zip(stored["input_id"].to_pylist(), stored["pos"].to_pylist(), stored["token"].to_pylist()):
            strings_of.setdefault(input_id, {})[pos] = text
        tokens, categories = _strings(chosen["token"]), _strings(chosen["category"])
        for rank, (input_id, pos, layer, cos) in enumerate(zip(chosen["input_id"].to_pylist(), chosen["pos"].to_pylist(),
                                                                chosen["layer"].to_pylist(), chosen["cos"].to_pylist()), start=1):
            strings = [strings_of[input_id][p] for p in range(max(strings_of[input_id]) + 1)]
            lowest["rank"].append(rank)
            lowest["input_id"].append(int(input_id))
            lowest["pos"].append(int(pos))
            lowest["token"].append(str(tokens[rank - 1]))
            lowest["category"].append(str(categories[rank - 1]))
            lowest["layer"].append(int(layer))
            lowest["context"].append(k_max)
            lowest["cos"].append(float(cos))
            lowest["text"].append(context_text(strings, int(pos), k_max))
    schema = pa.schema([("rank", pa.int32()), ("input_id", pa.int32()), ("pos", pa.int32()), ("token", pa.string()),
                        ("category", pa.string()), ("layer", pa.int32()), ("context", pa.int32()),
                        ("cos", pa.float64()), ("text", pa.string())])
    return pa.table(lowest, schema=schema)
