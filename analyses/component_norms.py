"""Component norms: per layer, the mean L2 norm of the attention output and of the MLP output
(what each sublayer adds to the residual stream), their ratio, and the residual norm.

The first position (BOS, or the first token without one) is excluded: its norms are outliers.
Norms are taken in float32 and averaged in float64. Sharded: every shard stores its per-layer sums
and token count (component_norms_sums); finalize merges them (analyses.core.aggregates, math.fsum)
into the means.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Input, Line, Progress, Result, ResultTable
from analyses.model.tokens import bos_param


@dataclass(frozen=True)
class Params:
    prepend_bos: str = bos_param()


SPEC = AnalysisSpec(
    name="component-norms",
    title="Attention and MLP output norms",
    description=(
        "Per layer, over all positions but the first: the mean L2 norm of the attention output "
        "and of the MLP output, the ratio attention / MLP, and the mean norm of the residual "
        "stream after the block."
    ),
    input_kinds=("pile", "prompt", "prompt_set"),
    tables=(
        ResultTable(
            "component_norms",
            (
                ("layer", "INTEGER"),
                ("relative_depth", "DOUBLE"),
                ("attn_out_norm", "DOUBLE"),
                ("mlp_out_norm", "DOUBLE"),
                ("attn_to_mlp_ratio", "DOUBLE"),
                ("resid_post_norm", "DOUBLE"),
                ("n_tokens", "BIGINT"),
            ),
            "means over every position but the first of every input; ratio = attn_out_norm / mlp_out_norm",
        ),
        ResultTable(
            "component_norms_sums",
            (
                ("layer", "INTEGER"),
                ("attn_out_sum", "DOUBLE"),
                ("mlp_out_sum", "DOUBLE"),
                ("resid_post_sum", "DOUBLE"),
                ("n_tokens", "BIGINT"),
            ),
            "per shard: the norms summed over the shard's positions (all but the first of each input) and their count; "
            "component_norms is their merge over every shard",
        ),
    ),
    charts=(
        Line("Attention-output / MLP-output norm ratio by layer", "component_norms", "attn_to_mlp_ratio", x="layer", per_input=False),
        Line("Mean MLP-output norm by layer", "component_norms", "mlp_out_norm", x="layer", per_input=False),
        Line("Mean attention-output norm by layer", "component_norms", "attn_out_norm", x="layer", per_input=False),
    ),
)

PARTS = ("attn_out", "mlp_out", "resid_post")


def norm_sums(model, token_rows: list, progress: Progress, cancel: CancelEvent, runner=None):
    """float64 [len(PARTS), n_layers]: the L2 norms (in float32) of every part summed over every
    real position but the first of every document, from length-batched forwards (runner: default
    run_hooked_batches at the model's budget; run_hooked_documents is the one-by-one reference)."""
    import functools

    import torch

    from analyses.model.hooks import run_hooked_batches

    sums = torch.zeros(len(PARTS), model.n_layers, dtype=torch.float64)

    def record(activation, batch, part: int, layer: int) -> None:
        norms = activation[:, 1:].float().norm(dim=-1)
        sums[part, layer] += batch.keep(norms, start=1).double().sum().cpu()

    hooks = [
        (f"blocks.{layer}.hook_{name}", functools.partial(record, part=part, layer=layer))
        for part, name in enumerate(PARTS)
        for layer in range(model.n_layers)
    ]
    (runner or run_hooked_batches)(model, token_rows, hooks, progress, cancel)
    return sums


def norms_table(sums, token_count: int):
    """The means per layer from sums [len(PARTS), n_layers] (float64, torch or numpy) over token_count positions."""
    import numpy as np
    import pyarrow as pa

    n_layers = sums.shape[1]
    means = np.asarray(sums, dtype=np.float64) / max(1, token_count)
    layers = np.arange(n_layers, dtype=np.int32)
    return pa.table(
        {
            "layer": layers,
            "relative_depth": layers / max(1, n_layers - 1),
            "attn_out_norm": means[0],
            "mlp_out_norm": means[1],
            "attn_to_mlp_ratio": means[0] / means[1],
            "resid_post_norm": means[2],
            "n_tokens": np.full(n_layers, token_count, dtype=np.int64),
        }
    )


def sums_table(sums, token_count: int):
    """One shard's partial aggregate: per layer, the sums of the norms of every part and the count."""
    import numpy as np
    import pyarrow as pa

    values = np.asarray(sums, dtype=np.float64)
    n_layers = values.shape[1]
    table = {"layer": np.arange(n_layers, dtype=np.int32)}
    table.update({f"{part}_sum": values[index] for index, part in enumerate(PARTS)})
    table["n_tokens"] = np.full(n_layers, token_count, dtype=np.int64)
    return pa.table(table)


class ComponentNorms(Analysis):
    Params = Params
    spec = SPEC
    sharded = True  # per-shard sums, merged by finalize

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.core.tables import tokens_table
        from analyses.model.hooks import document_tokens

        token_rows = document_tokens(model, inputs, params.prepend_bos)
        sums = norm_sums(model, token_rows, progress, cancel)
        # Every position but the first counts.
        token_count = sum(tokens.shape[-1] - 1 for tokens in token_rows)
        notes = {**model.bos(params.prepend_bos).record(), "bos_handling": "the first position of every input is excluded from every mean"}
        return Result(tables={"component_norms_sums": sums_table(sums, token_count)}, tokens=tokens_table(model, inputs, token_rows), notes=notes)

    def finalize(self, params: Params, state: Any, read, progress: Progress, cancel: CancelEvent) -> Result:
        """The means per layer from every shard's sums (math.fsum: exact merge of the partial sums)."""
        import numpy as np

        from analyses.core.aggregates import merged_sums

        merged = merged_sums(read, "component_norms_sums", ("layer",), [f"{part}_sum" for part in PARTS], ("n_tokens",))
        if merged is None:
            return Result({}, None, {})
        sums = np.stack([merged[f"{part}_sum"] for part in PARTS])
        return Result(tables={"component_norms": norms_table(sums, int(merged["n_tokens"][0]))}, tokens=None, notes={})


ANALYSIS = ComponentNorms()
