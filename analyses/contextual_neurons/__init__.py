"""Contextual neurons: which tokens, seen anywhere in the recent context, drive each layer-0 MLP neuron.

The contextual heads of layer 0 (classified by first-layer-heads, or given) are modelled by their
positional pattern, a content weight per key token and their median normaliser (see
analyses/contextual_neurons/engine.py). Each token's extended embedding (its weighted OV output
summed over those heads) composed with a neuron's input direction is the neuron's token
contribution; the model's prediction of the pre-activation on corpus text is compared with the
real one per neuron, and neurons are ranked by the share of their variance the heads explain.
Sharded (sharded.py): the heads' model is fitted once per run in ``prepare`` on the fit_docs longest
documents; each shard stores per-neuron sums (shifted moments, curve bins, content), merged in
``finalize``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.contextual_neurons.sharded import SHARD_TABLES
from analyses.core.contract import (
    Analysis,
    AnalysisSpec,
    CancelEvent,
    Filter,
    Input,
    Line,
    Order,
    Progress,
    Result,
    ResultTable,
    RunValue,
    Table,
    columns,
    param,
)
from analyses.core.errors import BadInput
from analyses.core.params import int_list
from analyses.model.tokens import bos_param

MAX_CURVE_BINS = 1000  # a curve drawn in a terminal; more bins than that hold a token or two each


@dataclass(frozen=True)
class Params:
    heads: str = param("", "comma-separated layer-0 heads to use (default: those first-layer-heads classes contextual)")
    dest_positions: str = param("100,250,500", "destination positions used to classify heads and average their pattern")
    dest_token: str = param(" the", "destination token fixed in the content weights (one token)")
    top_k: int = param(20, "tokens kept per neuron on each side (top and bottom contributions)")
    min_count: int = param(0, "list only tokens seen at least this often in the analysed text (0: the whole vocabulary)")
    n_curves: int = param(5, "best-explained neurons whose predicted-vs-real curve is stored")
    curve_bins: int = param(10, "bins of predicted pre-activation in each curve")
    prepend_bos: str = bos_param()
    default_max_tokens: int = param(512, "tokens per document when the corpus options set none (--max-tokens)")
    neuron_chunk: int = param(256, "neurons per chunk of the vocabulary product (memory vs speed; results do not depend on it)")
    fit_docs: int = param(32, "documents (the longest, earlier first) the heads' model, ln scales, fitted means and curve bins come from "
                              "before every document is scored (0: all)")

    def check(self) -> None:

        if self.heads.strip():
            int_list(self.heads, "heads")
        int_list(self.dest_positions, "dest_positions")
        if self.top_k < 1 or self.min_count < 0 or self.n_curves < 0 or self.curve_bins < 2 or self.neuron_chunk < 1 or self.default_max_tokens < 2 \
                or self.fit_docs < 0:
            raise BadInput("top_k must be at least 1, min_count at least 0, n_curves at least 0, curve_bins at least 2, neuron_chunk at least 1, "
                           "default_max_tokens at least 2, fit_docs at least 0")
        if self.curve_bins > MAX_CURVE_BINS:
            raise BadInput(f"curve_bins must be at most {MAX_CURVE_BINS}, not {self.curve_bins}")

    def heads_params(self):
        from analyses.first_layer_heads import Params as HeadsParams

        return HeadsParams(layers="0", dest_positions=self.dest_positions, dest_token=self.dest_token,
                           prepend_bos=self.prepend_bos, default_max_tokens=self.default_max_tokens)


SPEC = AnalysisSpec(
    name="contextual-neurons",
    title="Contextual neurons (extended embeddings through layer-0 contextual heads)",
    description=(
        "Extended embedding of every token through the layer-0 contextual heads (positional pattern x content "
        "weight / median normaliser x OV); per layer-0 MLP neuron its token contributions (top and bottom "
        "tokens), and the prediction of its pre-activation on corpus text against the real one: correlation, "
        "and the share of variance the contextual heads explain beyond the token's own embedding."
    ),
    input_kinds=("pile", "prompt", "prompt_set"),
    tables=(
        ResultTable("contextual_neurons_tokens", columns("neuron:INTEGER", "side:VARCHAR", "rank:INTEGER", "token_id:INTEGER", "token:VARCHAR", "contribution:DOUBLE"),
                    "top_k tokens per neuron on each side; contribution = extended embedding . input direction (per unit of positional weight)"),
        ResultTable("contextual_neurons_fit", columns("neuron:INTEGER", "rank:INTEGER", "corr:DOUBLE", "corr_direct:DOUBLE", "r2_full:DOUBLE",
                                                       "r2_direct:DOUBLE", "ctx_explained:DOUBLE", "real_std:DOUBLE", "pred_std:DOUBLE", "n_tokens:BIGINT"),
                    "per neuron over every analysed token; rank 1 = most variance explained by the contextual heads"),
        ResultTable("contextual_neurons_heads", columns("head:INTEGER", "class:VARCHAR", "used:BOOLEAN", "normaliser_median:DOUBLE", "content_std:DOUBLE"),
                    "layer-0 heads: class from first-layer-heads, whether used, median normaliser, spread of the content weight over corpus tokens"),
        ResultTable("contextual_neurons_curve", columns("neuron:INTEGER", "rank:INTEGER", "bin:INTEGER", "series:VARCHAR", "value:DOUBLE"),
                    "tokens binned by predicted pre-activation (equal-count bins on the fitted documents, edges fixed in prepare): "
                    "mean predicted and mean real per bin, for the best-explained neurons"),
        *SHARD_TABLES,
    ),
    charts=(
        Table("Neurons ranked by variance the contextual heads explain", "contextual_neurons_fit", "ctx_explained", per_input=False, order=(Order("rank"),), limit=15),
        Table("Top and bottom tokens of the best-explained neuron", "contextual_neurons_tokens", "contribution", per_input=False,
              filters=(Filter("neuron", "=", RunValue("neuron", "contextual_neurons_fit", (Filter("rank", "=", 1),))), Filter("rank", "<=", 8)),
              order=(Order("side", descending=True), Order("rank")), limit=16),
        Line("Predicted vs real pre-activation (best-explained neuron, binned)", "contextual_neurons_curve", "value", x="bin",
              series="series", filters=(Filter("rank", "=", 1),), per_input=False),
    ),
)


class ContextualNeurons(Analysis):
    Params = Params
    spec = SPEC
    sharded = True  # per-neuron sums per shard, merged by finalize (sharded.py)

    def check(self, model, inputs: list[Input], params: Params) -> None:
        from analyses import first_layer_heads
        from analyses.model.weights import model_weights

        first_layer_heads.ANALYSIS.check(model, inputs, params.heads_params())
        # Bounds from the model: more tokens than the vocabulary, or curves than neurons, do not exist.
        if params.top_k > model.d_vocab:
            raise BadInput(f"top_k must be at most the vocabulary of {model.name} ({model.d_vocab}), not {params.top_k}")
        d_mlp = int(model_weights(model).layers[0].W_in.shape[1])
        if params.n_curves > d_mlp:
            raise BadInput(f"n_curves must be at most the layer-0 MLP width of {model.name} ({d_mlp}), not {params.n_curves}")
        if params.heads.strip():
            n_heads = model_weights(model).layers[0].n_heads
            chosen = int_list(params.heads, "heads")
            if max(chosen) >= n_heads:
                raise BadInput(f"heads must be below {n_heads} for {model.name}, not {max(chosen)}")

    def prepare(self, model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent) -> dict:
        """The heads' model, directions, fitted means, curve bins and token lists (sharded.prepare)."""
        from analyses.contextual_neurons.sharded import prepare

        return prepare(model, inputs, params, progress, cancel)

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        """One shard's per-neuron sums (sharded.compute_shard)."""
        from analyses.contextual_neurons.sharded import compute_shard

        return compute_shard(model, inputs, params, state, progress, cancel)

    def finalize(self, params: Params, state: Any, read, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.contextual_neurons.sharded import finalize

        return finalize(params, state, read, progress, cancel)


ANALYSIS = ContextualNeurons()
