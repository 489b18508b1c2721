"""Component norms: per layer, the mean L2 norm of the attention output and of the MLP output
(what each sublayer adds to the residual stream), their ratio, and the residual norm.

The first position (BOS, or the first token without one) is excluded: its norms are outliers.
Norms are taken in float32 and averaged in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Input, Line, Progress, Result, ResultTable, param
from analyses.model.tokens import BOS_CHOICES, BOS_DOC, check_bos


@dataclass(frozen=True)
class Params:
    prepend_bos: str = param("auto", BOS_DOC, BOS_CHOICES)

    def check(self) -> None:
        check_bos(self.prepend_bos)


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
    ),
    charts=(
        Line("Attention-output / MLP-output norm ratio by layer", "component_norms", "attn_to_mlp_ratio", x="layer", per_input=False),
        Line("Mean MLP-output norm by layer", "component_norms", "mlp_out_norm", x="layer", per_input=False),
        Line("Mean attention-output norm by layer", "component_norms", "attn_out_norm", x="layer", per_input=False),
    ),
)

PARTS = ("attn_out", "mlp_out", "resid_post")


def run(model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent) -> Result:
    import functools

    import numpy as np
    import pyarrow as pa
    import torch

    from analyses.core.tables import tokens_table
    from analyses.model.hooks import document_tokens, run_hooked_documents

    n_layers = model.n_layers
    norm_sums = torch.zeros(len(PARTS), n_layers, dtype=torch.float64)

    def record(activation, hook, part: int, layer: int) -> None:
        norms = activation[:, 1:].float().norm(dim=-1)
        norm_sums[part, layer] += norms.double().sum().cpu()

    hooks = [
        (f"blocks.{layer}.hook_{name}", functools.partial(record, part=part, layer=layer))
        for part, name in enumerate(PARTS)
        for layer in range(n_layers)
    ]
    token_rows = document_tokens(model, inputs, params.prepend_bos)
    run_hooked_documents(model, token_rows, hooks, progress, cancel)
    # Every position but the first counts.
    token_count = sum(tokens.shape[-1] - 1 for tokens in token_rows)
    means = norm_sums.numpy() / max(1, token_count)
    layers = np.arange(n_layers, dtype=np.int32)
    table = pa.table(
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
    notes = {**model.bos(params.prepend_bos).record(), "bos_handling": "the first position of every input is excluded from every mean"}
    return Result(tables={"component_norms": table}, tokens=tokens_table(model, inputs, token_rows), notes=notes)


class ComponentNorms(Analysis):
    Params = Params
    spec = SPEC

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        return run(model, inputs, params, progress, cancel)


ANALYSIS = ComponentNorms()
