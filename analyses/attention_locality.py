"""Attention locality: how much attention every layer puts on the previous few tokens.

Per layer, averaged over heads, documents and query positions: the mean attention weight at
each offset 0..window (offset 0 = the token itself), the summed fraction on offsets 1..window,
and the weight on the first position (BOS). The BOS query (position 0) is excluded: it can
only attend to itself. A key at offset k exists only for queries at positions >= k.
Sharded: every shard stores its sums and counts (attention_locality_sums); finalize merges them
(analyses.core.aggregates, math.fsum) into both tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Heatmap, Input, Line, Progress, Result, ResultTable, param
from analyses.core.errors import BadInput
from analyses.model.tokens import bos_param


@dataclass(frozen=True)
class Params:
    window: int = param(5, "previous tokens counted as local (offsets 1..window)")
    prepend_bos: str = bos_param()

    def check(self) -> None:
        if self.window < 1:
            raise BadInput(f"window must be at least 1, not {self.window}")


SPEC = AnalysisSpec(
    name="attention-locality",
    title="Attention locality (previous tokens)",
    description=(
        "Per layer, averaged over heads and query positions (BOS query excluded): the mean "
        "attention weight at each offset back from the query, the summed fraction of attention "
        "on the previous `window` tokens, on the token itself and on the first position."
    ),
    input_kinds=("pile", "prompt", "prompt_set"),
    tables=(
        ResultTable(
            "attention_locality",
            (("layer", "INTEGER"), ("key_offset", "INTEGER"), ("mean_weight", "DOUBLE"), ("n_pairs", "BIGINT")),
            "mean weight per (query, offset) pair, averaged over heads; key_offset 0 = the query itself, k = k tokens back",
        ),
        ResultTable(
            "attention_locality_summary",
            (
                ("layer", "INTEGER"),
                ("relative_depth", "DOUBLE"),
                ("prev_fraction", "DOUBLE"),
                ("self_fraction", "DOUBLE"),
                ("bos_fraction", "DOUBLE"),
                ("n_queries", "BIGINT"),
            ),
            "per-query sums averaged over queries at positions >= 1 and heads; prev_fraction counts offsets "
            "1..window (the BOS key included when it lies inside the window)",
        ),
        ResultTable(
            "attention_locality_sums",
            (("layer", "INTEGER"), ("key_offset", "INTEGER"), ("weight_sum", "DOUBLE"), ("n_pairs", "BIGINT"),
             ("bos_sum", "DOUBLE"), ("n_queries", "BIGINT")),
            "per shard: attention weight summed over the shard's (query, head) pairs at each offset and their count; "
            "bos_sum and n_queries per layer (repeated on every offset's row); the other two tables are their merge over every shard",
        ),
    ),
    charts=(
        Line("Attention on the previous tokens (summed fraction) by layer", "attention_locality_summary", "prev_fraction", x="layer", per_input=False),
        Line("Attention on the first position (BOS) by layer", "attention_locality_summary", "bos_fraction", x="layer", per_input=False),
        Heatmap("Mean attention weight per (query, offset) pair", "attention_locality", "mean_weight", x="key_offset", y="layer", per_input=False),
    ),
)


def pattern_sums(pattern, window: int, lengths=None):
    """Sums over (batch, head, query >= 1) of one pattern [B, H, T, T]: per offset 0..window the
    weight and the pair count, the previous-window sum, and the BOS-key weight. lengths: the real
    tokens of each row under right padding (default: every row is real); pad queries are dropped
    (real queries put no weight on pad keys: they lie in the causal future)."""
    import torch

    pattern = pattern.float()
    rows, heads, width = pattern.shape[0], pattern.shape[1], pattern.shape[-1]
    sizes = [width] * rows if lengths is None else [int(size) for size in lengths]
    padded = min(sizes) < width
    limits = torch.tensor(sizes, device=pattern.device)[:, None, None]

    def real(values, first_query: int):
        """values [B, H, n] at queries first_query.. with the pad queries' entries zeroed."""
        if not padded:
            return values
        queries = torch.arange(first_query, first_query + values.shape[-1], device=values.device)
        return torch.where(queries < limits, values, torch.zeros((), dtype=values.dtype, device=values.device))

    offset_sums, offset_counts = [], []
    for offset in range(window + 1):
        # The BOS query (position 0) appears only on offset 0; entry j of a diagonal is query j + offset.
        first = 1 if offset == 0 else offset
        diagonal = pattern.diagonal(offset=-offset, dim1=-2, dim2=-1)
        diagonal = diagonal[..., 1:] if offset == 0 else diagonal
        offset_sums.append(real(diagonal, first).double().sum())
        offset_counts.append(heads * sum(max(0, size - first) for size in sizes))
    bos = real(pattern[..., 1:, 0], 1).double().sum()
    return torch.stack(offset_sums), offset_counts, bos


@dataclass
class LocalitySums:
    """Per layer: weight sums [L, window + 1] and pair counts per offset, BOS-key weight sums [L],
    and (query, head) counts [L], over the real queries at positions >= 1 of every document."""

    weights: Any
    pairs: Any
    bos: Any
    queries: Any


def locality_sums(model, token_rows: list, window: int, progress: Progress, cancel: CancelEvent, runner=None) -> LocalitySums:
    """The sums over every document's hook_pattern, from length-batched forwards (runner: default
    run_hooked_batches at the model's budget; run_hooked_documents is the one-by-one reference)."""
    import functools

    import numpy as np
    import torch

    from analyses.model.hooks import run_hooked_batches

    n_layers = model.n_layers
    weight_sums = torch.zeros(n_layers, window + 1, dtype=torch.float64)
    pair_counts = np.zeros((n_layers, window + 1), dtype=np.int64)
    bos_sums = torch.zeros(n_layers, dtype=torch.float64)
    query_counts = np.zeros(n_layers, dtype=np.int64)

    def record(pattern, batch, layer: int) -> None:
        sums, counts, bos = pattern_sums(pattern, window, batch.lengths)
        weight_sums[layer] += sums.cpu()
        pair_counts[layer] += counts
        bos_sums[layer] += bos.cpu()
        query_counts[layer] += pattern.shape[1] * sum(size - 1 for size in batch.lengths)

    hooks = [(f"blocks.{layer}.attn.hook_pattern", functools.partial(record, layer=layer)) for layer in range(n_layers)]
    (runner or run_hooked_batches)(model, token_rows, hooks, progress, cancel)
    return LocalitySums(weight_sums.numpy(), pair_counts, bos_sums.numpy(), query_counts)


def locality_tables(sums: LocalitySums) -> dict:
    import numpy as np
    import pyarrow as pa

    weights, pair_counts, query_counts = sums.weights, sums.pairs, sums.queries
    n_layers, offsets = weights.shape
    mean_weight = np.divide(weights, pair_counts, out=np.full_like(weights, np.nan), where=pair_counts > 0)
    queries = np.maximum(query_counts, 1)
    layers = np.arange(n_layers, dtype=np.int32)
    detail = pa.table(
        {
            "layer": np.repeat(layers, offsets),
            "key_offset": np.tile(np.arange(offsets, dtype=np.int32), n_layers),
            "mean_weight": pa.array(mean_weight.ravel(), from_pandas=True),
            "n_pairs": pair_counts.ravel(),
        }
    )
    summary = pa.table(
        {
            "layer": layers,
            "relative_depth": layers / max(1, n_layers - 1),
            "prev_fraction": weights[:, 1:].sum(1) / queries,
            "self_fraction": weights[:, 0] / queries,
            "bos_fraction": sums.bos / queries,
            "n_queries": query_counts,
        }
    )
    return {"attention_locality": detail, "attention_locality_summary": summary}


def sums_table(sums: LocalitySums) -> Any:
    """One shard's partial aggregate, one row per (layer, offset)."""
    import numpy as np
    import pyarrow as pa

    n_layers, offsets = sums.weights.shape
    return pa.table({
        "layer": np.repeat(np.arange(n_layers, dtype=np.int32), offsets),
        "key_offset": np.tile(np.arange(offsets, dtype=np.int32), n_layers),
        "weight_sum": np.asarray(sums.weights, dtype=np.float64).ravel(),
        "n_pairs": np.asarray(sums.pairs, dtype=np.int64).ravel(),
        "bos_sum": np.repeat(np.asarray(sums.bos, dtype=np.float64), offsets),
        "n_queries": np.repeat(np.asarray(sums.queries, dtype=np.int64), offsets),
    })


def merged_locality_sums(read: Any) -> LocalitySums | None:
    """Every stored shard's sums merged (math.fsum), as one LocalitySums."""
    from analyses.core.aggregates import merged_sums

    merged = merged_sums(read, "attention_locality_sums", ("layer", "key_offset"), ("weight_sum",), ("n_pairs",))
    # bos_sum and n_queries repeat on every offset's row: merge them over the offset-0 rows only.
    bos = merged_sums(lambda name, columns: _offset_zero(read(name, [*columns, "key_offset"]), columns),
                      "attention_locality_sums", ("layer",), ("bos_sum",), ("n_queries",))
    if merged is None or bos is None:
        return None
    n_layers = len(bos["layer"])
    offsets = len(merged["layer"]) // n_layers
    return LocalitySums(merged["weight_sum"].reshape(n_layers, offsets), merged["n_pairs"].reshape(n_layers, offsets),
                        bos["bos_sum"], bos["n_queries"])


def _offset_zero(table: Any, columns: list) -> Any:
    import pyarrow.compute as pc

    return None if table is None else table.filter(pc.equal(table["key_offset"], 0)).select(list(columns))


class AttentionLocality(Analysis):
    Params = Params
    spec = SPEC
    sharded = True  # per-shard sums, merged by finalize

    def check(self, model, inputs: list[Input], params: Params) -> None:
        """An offset past the longest input has no pairs: refuse such a window before anything is stored."""
        from analyses.model.hooks import document_tokens

        longest = max((tokens.shape[-1] for tokens in document_tokens(model, inputs, params.prepend_bos)), default=0)
        if params.window > longest - 1:
            raise BadInput(f"window {params.window} is longer than the inputs: the longest has {longest} tokens, so at most window={max(1, longest - 1)}")

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.core.tables import tokens_table
        from analyses.model.hooks import document_tokens

        token_rows = document_tokens(model, inputs, params.prepend_bos)
        sums = locality_sums(model, token_rows, params.window, progress, cancel)
        notes = {
            **model.bos(params.prepend_bos).record(),
            "bos_handling": "queries at position 0 excluded; keys at position 0 counted in their offset and reported as bos_fraction",
            "heads": "averaged over query heads (grouped KV heads expanded by the pattern hook)",
        }
        return Result(tables={"attention_locality_sums": sums_table(sums)}, tokens=tokens_table(model, inputs, token_rows), notes=notes)

    def finalize(self, params: Params, state: Any, read, progress: Progress, cancel: CancelEvent) -> Result:
        """Both tables from every shard's sums (math.fsum: exact merge of the partial sums)."""
        sums = merged_locality_sums(read)
        return Result(locality_tables(sums) if sums is not None else {}, None, {})


ANALYSIS = AttentionLocality()
