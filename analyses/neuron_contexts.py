"""Neuron contexts: the corpus contexts where one MLP neuron fires most.

For a neuron (``layer``, ``neuron``; e.g. one that contextual-neurons or fact-lookup found), its
activation (the input of the MLP's output projection, ``blocks.L.mlp.out.hook_in``) at every token
of every input; the ``top_k`` highest, each with the ``context`` tokens before it and the token
itself, best first. The forward of each input stops after that layer.
Sharded: every shard stores its inputs' rows (neuron_contexts_inputs) and its own top_k contexts
(neuron_contexts_candidates, rendered from its tokens); finalize takes the top_k of those (DuckDB over
the stored shards, a top-n, not a sort) into neuron_contexts. The global top_k lies within the union
of the shards' top_k, and ties (equal activations) go to the earlier input, then the earlier position,
in shards and in the merge alike: the merged table equals the one-shard run's bit for bit.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import (
    Analysis,
    AnalysisSpec,
    CancelEvent,
    Input,
    Order,
    Progress,
    Reader,
    Result,
    ResultTable,
    Table,
    param,
)
from analyses.core.errors import BadInput
from analyses.model.tokens import bos_param

NEURON_HOOK = "blocks.{layer}.mlp.out.hook_in"
MAX_TOP = 1000


@dataclass(frozen=True)
class Params:
    layer: int = param(0, "the neuron's layer")
    neuron: int = param(0, "the neuron's index in that layer's MLP (0..d_mlp-1)")
    top_k: int = param(20, "contexts kept: the highest activations over every token of every input")
    context: int = param(12, "tokens shown before the activating token")
    prepend_bos: str = bos_param()

    def check(self) -> None:
        if self.layer < 0 or self.neuron < 0:
            raise BadInput("parameters 'layer' and 'neuron' must not be negative")
        if not 1 <= self.top_k <= MAX_TOP:
            raise BadInput(f"parameter 'top_k' must be in 1..{MAX_TOP}, not {self.top_k}")
        if self.context < 0:
            raise BadInput(f"parameter 'context' must not be negative, not {self.context}")


SPEC = AnalysisSpec(
    name="neuron-contexts",
    title="Top-activating contexts of one neuron",
    description=(
        "For one MLP neuron (layer, index; e.g. one found by contextual-neurons or fact-lookup), its activation at every "
        "token of every input, and the top_k contexts where it is highest: the token, the tokens before it and the activation."
    ),
    input_kinds=("pile", "prompt_set", "prompt"),
    tables=(
        ResultTable(
            "neuron_contexts",
            (("rank", "INTEGER"), ("activation", "DOUBLE"), ("token", "VARCHAR"), ("context", "VARCHAR"), ("input_id", "INTEGER"), ("pos", "INTEGER")),
            "rank 1 = the highest activation; context = the `context` tokens before the activating token, then the token in [brackets]",
        ),
        ResultTable(
            "neuron_contexts_inputs",
            (("input_id", "INTEGER"), ("max_activation", "DOUBLE"), ("mean_activation", "DOUBLE"), ("n_tokens", "INTEGER")),
            "per input: the neuron's highest and mean activation over its tokens",
        ),
        ResultTable(
            "neuron_contexts_candidates",
            (("sort_key", "DOUBLE"), ("activation", "DOUBLE"), ("token", "VARCHAR"), ("context", "VARCHAR"), ("input_id", "INTEGER"), ("pos", "INTEGER")),
            "per shard: its own top_k contexts, best first (sort_key = 0 - activation, the merge's ascending key); "
            "neuron_contexts is the top_k of these over every shard",
        ),
    ),
    charts=(
        Table("Top-activating contexts (best first)", "neuron_contexts", "activation", per_input=False, order=(Order("rank"),), limit=MAX_TOP),
    ),
)


CONTEXT_COLUMNS = ("activation", "token", "context", "input_id", "pos")


class NeuronContexts(Analysis):
    Params = Params
    spec = SPEC
    sharded = True  # per-input rows and each shard's top_k, merged by finalize

    def check(self, model: Any, inputs: list[Input], params: Params) -> None:
        if not params.layer < model.n_layers:
            raise BadInput(f"parameter 'layer' must be in 0..{model.n_layers - 1}, not {params.layer}")
        d_mlp = model.bridge.cfg.d_mlp
        if not params.neuron < d_mlp:
            raise BadInput(f"parameter 'neuron' must be in 0..{d_mlp - 1}, not {params.neuron}")

    def compute(self, model: Any, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        import pyarrow as pa

        from analyses.core.tables import tokens_table
        from analyses.model.hooks import hook_upto_layer

        hook = NEURON_HOOK.format(layer=params.layer)
        best: list[tuple[float, int, int, int]] = []  # a min-heap of (activation, -input order, -pos, index)
        token_rows, per_input = [], []
        for index, item, tokens, activation in hook_upto_layer(model, inputs, hook, params.layer, params.prepend_bos, progress, cancel):
            token_rows.append(tokens)
            acts = activation[0, :, params.neuron].float().cpu().tolist()
            per_input.append((item.input_id, max(acts), sum(acts) / len(acts), len(acts)))
            for pos, act in enumerate(acts):
                entry = (act, -index, -pos, index)
                if len(best) < params.top_k:
                    heapq.heappush(best, entry)
                elif entry > best[0]:
                    heapq.heapreplace(best, entry)
        progress(len(inputs), len(inputs), "done")
        # The shard's top_k, best first (activation descending; ties: earlier input, then earlier position).
        rows: dict[str, list] = {name: [] for name, _ in SPEC.table("neuron_contexts_candidates").columns}
        for act, _, neg_pos, index in sorted(best, reverse=True):
            ids = token_rows[index][0].tolist()
            pos = -neg_pos
            before = model.token_strings(ids[max(0, pos - params.context):pos])
            token = model.token_strings([ids[pos]])[0]
            rows["sort_key"].append(0.0 - act)  # 0.0 - x: both zeros give +0.0, so they tie as in the heap
            rows["activation"].append(act)
            rows["token"].append(token)
            rows["context"].append("".join(before) + f"[{token}]")
            rows["input_id"].append(inputs[index].input_id)
            rows["pos"].append(pos)
        types = _types()
        candidates = pa.table({name: pa.array(values, type=types[name]) for name, values in rows.items()})
        summary = pa.table({
            "input_id": pa.array([row[0] for row in per_input], pa.int32()),
            "max_activation": [row[1] for row in per_input],
            "mean_activation": [row[2] for row in per_input],
            "n_tokens": pa.array([row[3] for row in per_input], pa.int32()),
        })
        notes = {**model.bos(params.prepend_bos).record(), "hook": hook}
        return Result(tables={"neuron_contexts_candidates": candidates, "neuron_contexts_inputs": summary},
                      tokens=tokens_table(model, inputs, token_rows), notes=notes)

    def finalize(self, params: Params, state: Any, read: Reader, progress: Progress, cancel: CancelEvent) -> Result:
        """neuron_contexts: the top_k of every shard's top_k, by sort_key ascending with ties in stored
        order (shard, then row: input order, then position), read.lowest over the stored shards."""
        import pyarrow as pa

        chosen = read.lowest("neuron_contexts_candidates", "sort_key", params.top_k, CONTEXT_COLUMNS)
        if chosen is None:
            return Result({}, None, {})
        types = _types()
        columns = {"rank": pa.array(range(1, chosen.num_rows + 1), type=pa.int32())}
        columns.update({name: chosen[name].combine_chunks().cast(types[name]) for name in CONTEXT_COLUMNS})
        return Result(tables={"neuron_contexts": pa.table(columns)}, tokens=None, notes={})


def _types() -> dict[str, Any]:
    """The Arrow types of the candidates' columns (pyarrow imported on use, not when listing analyses)."""
    import pyarrow as pa

    return {"sort_key": pa.float64(), "activation": pa.float64(), "token": pa.string(), "context": pa.string(),
            "input_id": pa.int32(), "pos": pa.int32()}


ANALYSIS = NeuronContexts()
