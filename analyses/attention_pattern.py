"""Attention pattern: one layer's attention weights over the prompt, per head.

For each input, the softmaxed attention of layer ``layer`` (``blocks.L.attn.hook_pattern``) from
every query position to every key position, for one head or every head of the layer; drawn as a
heatmap over the prompt's tokens (query position x key token), one per head. Each query row sums
to 1 over the keys it may attend to (the causal mask leaves later keys at 0), which the run checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import (
    Analysis,
    AnalysisSpec,
    CancelEvent,
    Heatmap,
    Input,
    Invariant,
    Progress,
    Result,
    ResultTable,
    param,
)
from analyses.core.errors import BadInput
from analyses.model.tokens import bos_param

ROW_SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Params:
    layer: int = param(0, "the layer whose attention is read (0 = the first block)")
    head: int | None = param(None, "one head of that layer; default: every head (one chart each)")
    prepend_bos: str = bos_param()

    def check(self) -> None:
        if self.layer < 0:
            raise BadInput(f"parameter 'layer' must not be negative, not {self.layer}")
        if self.head is not None and self.head < 0:
            raise BadInput(f"parameter 'head' must not be negative, not {self.head}")


SPEC = AnalysisSpec(
    name="attention-pattern",
    title="Attention pattern (one layer, per head)",
    description=(
        "The attention weights of one layer over the prompt: for every head (or the one chosen), from every query "
        "position to every key token, as the model's softmax gives them (hook_pattern)."
    ),
    input_kinds=("prompt", "prompt_set"),
    tables=(
        ResultTable(
            "attention_pattern",
            (("input_id", "INTEGER"), ("layer", "INTEGER"), ("head", "INTEGER"), ("query_pos", "INTEGER"), ("pos", "INTEGER"), ("weight", "DOUBLE")),
            "weight = attention from query_pos to key position pos (keys after the query are masked: 0)",
        ),
    ),
    charts=(
        Heatmap("Attention pattern (query position x key token)", "attention_pattern", "weight", x="pos", y="query_pos", facet="head", vmin=0.0, vmax=1.0),
    ),
)


class AttentionPattern(Analysis):
    Params = Params
    spec = SPEC
    invariant_checks = (Invariant("invariant_rows_sum_to_one", ROW_SUM_TOLERANCE, "every query row of every head sums to 1 over the keys"),)
    sharded = True  # each input's rows depend on that input alone

    def check(self, model: Any, inputs: list[Input], params: Params) -> None:
        if not params.layer < model.n_layers:
            raise BadInput(f"parameter 'layer' must be in 0..{model.n_layers - 1}, not {params.layer}")
        heads = model.bridge.cfg.n_heads
        if params.head is not None and not params.head < heads:
            raise BadInput(f"parameter 'head' must be in 0..{heads - 1}, not {params.head}")

    def invariants(self, params: Params, read: Any, notes: dict) -> list[tuple]:
        table = read("attention_pattern", ["input_id", "head", "query_pos", "weight"])
        if table is None or table.num_rows == 0:
            return [("invariant_rows_sum_to_one", None, ROW_SUM_TOLERANCE, None, "skipped: no rows")]
        sums: dict[tuple, float] = {}
        for key, weight in zip(zip(*(table.column(name).to_pylist() for name in ("input_id", "head", "query_pos"))), table.column("weight").to_pylist()):
            sums[key] = sums.get(key, 0.0) + weight
        worst = max(abs(total - 1.0) for total in sums.values())
        return [("invariant_rows_sum_to_one", worst, ROW_SUM_TOLERANCE, worst <= ROW_SUM_TOLERANCE, f"max |row sum - 1| over {len(sums)} query rows")]

    def compute(self, model: Any, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        import numpy as np
        import pyarrow as pa

        from analyses.core.tables import tokens_table
        from analyses.model.hooks import hook_upto_layer

        name = f"blocks.{params.layer}.attn.hook_pattern"
        columns: dict[str, list] = {column: [] for column, _ in SPEC.tables[0].columns}
        token_rows = []
        # Only the blocks up to the layer read are run (stop_at_layer), with a cancel check before each.
        for _, item, tokens, activation in hook_upto_layer(model, inputs, name, params.layer, params.prepend_bos, progress, cancel):
            token_rows.append(tokens)
            pattern = activation[0].float().cpu().numpy()  # [head, query, key]
            heads = [params.head] if params.head is not None else list(range(pattern.shape[0]))
            positions = pattern.shape[-1]
            for head in heads:
                query, key = np.meshgrid(np.arange(positions), np.arange(positions), indexing="ij")
                columns["input_id"].append(np.full(positions * positions, item.input_id, dtype=np.int32))
                columns["layer"].append(np.full(positions * positions, params.layer, dtype=np.int32))
                columns["head"].append(np.full(positions * positions, head, dtype=np.int32))
                columns["query_pos"].append(query.ravel().astype(np.int32))
                columns["pos"].append(key.ravel().astype(np.int32))
                columns["weight"].append(pattern[head].ravel().astype(np.float64))
        progress(len(inputs), len(inputs), "done")
        table = pa.table({column: pa.array(np.concatenate(parts)) for column, parts in columns.items()})
        notes = {**model.bos(params.prepend_bos).record(), "hook": name}
        return Result(tables={"attention_pattern": table}, tokens=tokens_table(model, inputs, token_rows), notes=notes)


ANALYSIS = AttentionPattern()
