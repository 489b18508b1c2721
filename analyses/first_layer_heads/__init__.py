"""First-layer attention anatomy: positional pattern, duplicate-token score, normaliser and class per head.

Models with learned absolute positions (GPT-2 family), layer 0: ln1 is treated as linear at its
mean scale on the corpus (recorded with its spread), and each score splits exactly into a
key-position part (token-position, position-position and query-bias-position terms, with the
destination token fixed to ``dest_token``) and a key-content part; the positional pattern is the
softmax of the positional part. Rotary models (and other layers): the pattern is the real
attention averaged over the documents per (destination, key), i.e. averaged over content.
The normaliser, duplicate-token score and ln scale come from one hooked pass over the corpus.
Sharded: each shard stores its documents' rows and its summed attention (partials.py), and
finalize rebuilds the corpus sums from every shard before the anatomy and the bootstrap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import (
    Analysis,
    AnalysisSpec,
    CancelEvent,
    Filter,
    Heatmap,
    Input,
    Line,
    Order,
    Progress,
    Result,
    ResultTable,
    RunValue,
    Table,
    check_cancel,
    columns,
    param,
)
from analyses.core.errors import BadInput
from analyses.core.params import int_list
from analyses.model.tokens import bos_param

METHODS = ("auto", "additive", "measured")
SCORE_COLUMNS = ("previous", "local", "contextual", "averaging", "duplicate", "sink")  # engine.SCORES, in class-table order
# The corpus sums are [heads, T, T] per layer: cap T so that they stay within memory.
MAX_DOCUMENT_TOKENS = 2048


@dataclass(frozen=True)
class Params:
    layers: str = param("0", "comma-separated layers to analyse (0 = the first block)")
    dest_positions: str = param("100,250,500", "destination positions whose pattern is reported (those that fit)")
    dest_token: str = param(" the", "destination token fixed in the additive split (one token)")
    method: str = param("auto", "auto (additive for learned positions at layer 0, else measured), additive or measured")
    prepend_bos: str = bos_param()
    default_max_tokens: int = param(512, "tokens per document when the corpus options set none (--max-tokens)")
    previous_threshold: float = param(0.5, "previous-token: weight on the previous token (first position excluded, rest renormalised) at least this")
    local_threshold: float = param(0.5, "local (detokenization): mass on self and the previous 5 tokens (renormalised as above) at least this")
    contextual_threshold: float = param(0.2, "contextual: mass on offsets 6..50 above a uniform row's (renormalised as above) at least this")
    averaging_threshold: float = param(0.9, "averaging: entropy over the visible keys after the first, over its uniform value, at least this")
    duplicate_threshold: float = param(3.0, "duplicate-token: attention to earlier copies at least this many times the baseline")
    sink_threshold: float = param(0.5, "attention-sink: attention on the first position (BOS when prepended) at least this")
    score_from: int = param(100, "class scores average the real attention rows of destinations from this position on, per document")
    bootstrap: int = param(1000, "bootstrap resamplings of the documents for the 95% intervals of the class scores")
    seed: int = param(0, "seed of the bootstrap resampling")
    normaliser_bin: int = param(16, "destination positions per bin of the normaliser table")

    def check(self) -> None:
        int_list(self.layers, "layers")
        int_list(self.dest_positions, "dest_positions")
        if self.method not in METHODS:
            raise BadInput(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not self.dest_token:
            raise BadInput("dest_token must not be empty")
        if self.default_max_tokens < 2 or self.normaliser_bin < 1 or self.score_from < 2 or self.bootstrap < 100:
            raise BadInput("default_max_tokens must be at least 2, normaliser_bin at least 1, score_from at least 2, bootstrap at least 100")
        for name in ("previous_threshold", "local_threshold", "contextual_threshold", "averaging_threshold", "sink_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise BadInput(f"{name} must lie in (0, 1], not {getattr(self, name)}")
        if self.duplicate_threshold <= 0:
            raise BadInput("duplicate_threshold must be positive")

    def thresholds(self):
        from analyses.first_layer_heads.anatomy import Thresholds

        return Thresholds(self.previous_threshold, self.local_threshold, self.contextual_threshold, self.averaging_threshold,
                          self.duplicate_threshold, self.sink_threshold, self.score_from, self.bootstrap, self.seed)


SPEC = AnalysisSpec(
    name="first-layer-heads",
    title="First-layer attention anatomy (positional pattern, duplicate tokens, normaliser, classes)",
    description=(
        "Per attention head (layer 0 by default): the positional pattern (exact additive split with ln1 at its "
        "mean scale for learned positions, real attention averaged over content for rotary models), its masses "
        "on the first position (sink) and, renormalised without it, on self / previous 1-5 / 6-50 / beyond 50 and decay widths, attention to earlier copies of the "
        "destination token against the same cells otherwise, the softmax normaliser with the positional part "
        "divided out per destination position and corpus set. Per head, six class scores measured on each "
        "document's real attention (rows from score_from on; the first position's sink mass apart, the rest "
        "renormalised) with a bootstrap 95% interval over documents, and a class where an interval clears its "
        "threshold: previous-token, local (detokenization), contextual, averaging, duplicate-token or "
        "attention-sink; uncertain where none clears but one is within reach, other where all lie below."
    ),
    input_kinds=("pile", "prompt", "prompt_set"),
    tables=(
        ResultTable("first_layer_heads_pattern", columns("layer:INTEGER", "head:INTEGER", "dest_pos:INTEGER", "key_offset:INTEGER", "weight:DOUBLE", "method:VARCHAR"),
                    "positional pattern: weight on the key `offset` tokens back from destination dest_pos (0 = itself)"),
        ResultTable("first_layer_heads_mass", columns("layer:INTEGER", "head:INTEGER", "dest_pos:INTEGER", "bucket:VARCHAR", "mass:DOUBLE"),
                    "positional mass per bucket: sink (the first position), then self, prev_1_5, prev_6_50, beyond_50 renormalised without it"),
        ResultTable("first_layer_heads_width", columns("layer:INTEGER", "head:INTEGER", "dest_pos:INTEGER", "width50:INTEGER", "width90:INTEGER", "decay_ratio:DOUBLE"),
                    "smallest offset holding 50% / 90% of the mass (first position excluded); mean weight per offset on 1..5 over 6..50"),
        ResultTable("first_layer_heads_normaliser", columns("layer:INTEGER", "head:INTEGER", "set_name:VARCHAR", "pos:INTEGER", "pos_end:INTEGER", "n:BIGINT",
                                                             "mean:DOUBLE", "median:DOUBLE", "q25:DOUBLE", "q75:DOUBLE"),
                    "N(d) = sum_s pi(d,s) exp(c(d,s)), content c = score - log pi centred over keys, per bin [pos, pos_end] of destinations and corpus set"),
        ResultTable("first_layer_heads_class", columns(
            "layer:INTEGER", "head:INTEGER", "class:VARCHAR", "method:VARCHAR", "local_mass:DOUBLE", "mid_mass:DOUBLE", "far_mass:DOUBLE",
            "width50:DOUBLE", "width90:DOUBLE", "decay_ratio:DOUBLE", "duplicate_score:DOUBLE", "duplicate_pairs:BIGINT",
            "normaliser_median:DOUBLE", "normaliser_iqr_ratio:DOUBLE", "normaliser_late_over_early:DOUBLE", "ln_scale_mean:DOUBLE", "ln_scale_std:DOUBLE",
            "sink_mass:DOUBLE", "margin:DOUBLE", "runner_up:VARCHAR", "runner_up_margin:DOUBLE", "n_docs:INTEGER",
            *(f"{score}_{part}:DOUBLE" for score in SCORE_COLUMNS for part in ("score", "low", "high") if f"{score}_{part}" != "duplicate_score")),
                    "per head: positional masses and widths averaged over the reported destinations (sink_mass on the first position, "
                    "local/mid/far renormalised without it; local = self + previous 5); then each class score (previous, local, "
                    "contextual, averaging, duplicate, sink; see the parameters) measured per document on real attention with its "
                    "estimate over n_docs documents and bootstrap 95% interval [low, high]; class where the interval clears its "
                    "threshold, margin = (low - threshold) / threshold, runner_up the next class that cleared"),
        ResultTable("first_layer_heads_intervals", columns("layer:INTEGER", "head:INTEGER", "score:VARCHAR", "curve:VARCHAR", "value:DOUBLE"),
                    "first_layer_heads_class's scores in long form, for the charts: per head and score the estimate, the ends of its "
                    "95% interval over documents (low, high) and the class threshold, one curve each (prefixed 'layer L' with several layers)"),
        ResultTable("first_layer_heads_terms", columns("layer:INTEGER", "head:INTEGER", "dest_pos:INTEGER", "term:VARCHAR", "spread:DOUBLE"),
                    "additive split only: std over visible keys of each positional term (token_position, position_position, query_bias_position)"),
        # Per shard (partials.py): what finalize merges into the tables above.
        ResultTable("first_layer_heads_docs", columns("layer:INTEGER", "input_id:BIGINT", "set_name:VARCHAR", "n_tokens:INTEGER",
                                                       "scale_sum:DOUBLE", "scale_sq_sum:DOUBLE", "n_scaled:BIGINT"),
                    "per shard, per document: corpus set, tokens analysed, and its ln1 scales (from the first analysed position) summed, squared and counted"),
        ResultTable("first_layer_heads_logz", columns("layer:INTEGER", "input_id:BIGINT", "head:INTEGER", "pos:INTEGER", "residual_logz:DOUBLE"),
                    "per shard, per document, head and destination: the residual log-normaliser (log-sum-exp of the scores minus their mean)"),
        ResultTable("first_layer_heads_doc_scores", columns("layer:INTEGER", "input_id:BIGINT", "head:INTEGER", "score:VARCHAR", "row_sum:DOUBLE", "n_rows:BIGINT"),
                    "per shard, per document and head: each row score (sink, previous, local, contextual, averaging) measured on its real "
                    "attention, summed over the destinations from score_from that have it, and their number; the bootstrap resamples these"),
        ResultTable("first_layer_heads_duplicates", columns("layer:INTEGER", "input_id:BIGINT", "head:INTEGER", "dest_pos:INTEGER", "key_pos:INTEGER", "attn:DOUBLE"),
                    "per shard, per document and head: real attention on each earlier copy (key_pos) of the destination's token"),
        ResultTable("first_layer_heads_attn_sums", columns("layer:INTEGER", "first_input:BIGINT", "head:INTEGER", "dest_pos:INTEGER", "key_pos:INTEGER",
                                                            "attn_sum:DOUBLE"),
                    "per shard (named by its first input_id): real attention summed over the shard's documents per (head, destination, key), the one dense partial "
                    "(heads x T x T / 2 rows a shard: larger --shard-docs store fewer); the measured pattern is their merge over the documents"),
    ),
    charts=(
        Heatmap("Positional pattern, heads x offset (largest destination)", "first_layer_heads_pattern", "weight", x="key_offset", y="head",
              filters=(Filter("key_offset", "<=", 60), Filter("dest_pos", "=", RunValue("dest_pos"))),
              per_input=False, facet="layer"),
        Table("Head classes", "first_layer_heads_class", "duplicate_score", per_input=False, order=(Order("layer"), Order("head")), limit=64),
        Line("Class scores by head: estimate, 95% interval over documents (low, high) and threshold", "first_layer_heads_intervals", "value",
             x="head", series="curve", per_input=False, facet="score"),
        Line("Normaliser (median) over destination position, per corpus set", "first_layer_heads_normaliser", "median",
              x="pos", series="set_name", per_input=False, facet="head"),
    ),
)


def analysed_token_rows(model, inputs: list[Input], params: Params) -> list:
    return [model.to_tokens(item.text, prepend_bos=params.prepend_bos, max_tokens=item.meta.get("max_tokens") or params.default_max_tokens)
            for item in inputs]


def dest_token_id(model, text: str) -> int:
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise BadInput(f"dest_token {text!r} is {len(ids)} tokens for this tokenizer; give one token")
    return int(ids[0])


def anatomies(model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent, runner=None):
    """(weights, token rows, layer anatomies, first analysed position) for a run; runner: how the
    corpus pass runs its forwards (default length-batched, see engine.collect)."""
    from analyses.first_layer_heads import anatomy, engine
    from analyses.model.weights import model_weights

    weights = model_weights(model)
    layers = int_list(params.layers, "layers")
    token_rows = analysed_token_rows(model, inputs, params)
    set_names = [str(item.meta.get("pile_set_name") or item.source) for item in inputs]
    first_pos = 1 if model.bos(params.prepend_bos).prepend else 0
    corpus = engine.collect(model, weights, token_rows, set_names, layers, first_pos, progress, cancel, runner)
    dest_positions, token = int_list(params.dest_positions, "dest_positions"), dest_token_id(model, params.dest_token)
    results = []
    for index, layer in enumerate(layers):
        check_cancel(cancel)
        progress(index, len(layers), f"layer {layer} ({index + 1}/{len(layers)}): head anatomy and bootstrap")
        results.append(anatomy.analyse_layer(weights, corpus[layer], layer, anatomy.resolve_method(weights, layer, params.method),
                                             dest_positions, token, model.n_ctx, first_pos, params.thresholds()))
    check_cancel(cancel)
    return weights, token_rows, results, first_pos


class FirstLayerHeads(Analysis):
    Params = Params
    spec = SPEC
    sharded = True  # per-document rows and per-shard attention sums, merged by finalize (partials.py)

    def check(self, model, inputs: list[Input], params: Params) -> None:
        from analyses.model.weights import model_weights

        layers = int_list(params.layers, "layers")
        if max(layers) >= model.n_layers:
            raise BadInput(f"layers must be below {model.n_layers} for {model.name}, not {max(layers)}")
        dest_token_id(model, params.dest_token)
        weights = model_weights(model)
        if params.method == "additive" and (weights.W_pos is None or layers != (0,)):
            raise BadInput("method additive needs learned position embeddings and layers=0; use auto or measured")
        longest = max(int(tokens.shape[-1]) for tokens in analysed_token_rows(model, inputs, params))
        if longest > MAX_DOCUMENT_TOKENS:
            raise BadInput(f"documents of {longest} tokens; this analysis takes at most {MAX_DOCUMENT_TOKENS} (use --max-tokens)")
        # The additive split reaches any position of the context; measured patterns only the documents'.
        additive = params.method != "measured" and weights.W_pos is not None and layers == (0,)
        reach = [d for d in int_list(params.dest_positions, "dest_positions") if d < longest or (additive and d < model.n_ctx)]
        if not reach:
            raise BadInput(f"no destination position in {params.dest_positions!r} fits the documents (longest: {longest} tokens)")

    def prepare(self, model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent) -> Any:
        """The weights finalize reads (it has no model): layer 0's additive split, the windows."""
        from analyses.first_layer_heads.partials import weights_state

        first_pos = 1 if model.bos(params.prepend_bos).prepend else 0
        return weights_state(model, int_list(params.layers, "layers"), params.method, dest_token_id(model, params.dest_token), first_pos)

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        """One shard: the corpus pass over its documents, stored as partial tables."""
        from analyses.core.tables import tokens_table
        from analyses.first_layer_heads import engine
        from analyses.first_layer_heads.partials import shard_tables
        from analyses.model.weights import model_weights

        token_rows = analysed_token_rows(model, inputs, params)
        set_names = [str(item.meta.get("pile_set_name") or item.source) for item in inputs]
        first_pos = 1 if model.bos(params.prepend_bos).prepend else 0
        layers = int_list(params.layers, "layers")
        corpus = engine.collect(model, model_weights(model), token_rows, set_names, layers, first_pos, progress, cancel)
        notes = {
            **model.bos(params.prepend_bos).record(),
            "positions": "pos counts from the first input token (BOS included when prepended); offset = destination - key",
        }
        return Result(tables=shard_tables(corpus, [item.input_id for item in inputs], set_names, params.score_from),
                      tokens=tokens_table(model, inputs, token_rows), notes=notes)

    def finalize(self, params: Params, state: Any, read, progress: Progress, cancel: CancelEvent) -> Result:
        """The anatomy of each layer from every shard's partials (partials.layer_corpus), then its tables."""
        from analyses.first_layer_heads import anatomy, tables
        from analyses.first_layer_heads.partials import layer_corpus, state_weights

        weights = state_weights(state)
        layers, methods = state["layers"].tolist(), [str(method) for method in state["methods"].tolist()]
        first_pos, n_ctx = int(state["first_pos"]), int(state["n_ctx"])
        results = []
        for index, (layer, method) in enumerate(zip(layers, methods)):
            check_cancel(cancel)
            progress(index, len(layers), f"layer {layer} ({index + 1}/{len(layers)}): head anatomy and bootstrap")
            corpus = layer_corpus(read, layer)
            if corpus is None:
                return Result({}, None, {})
            results.append(anatomy.analyse_layer(weights, corpus, layer, method, int_list(params.dest_positions, "dest_positions"), 0,
                                                 n_ctx, first_pos, params.thresholds()))
        out = tables.pattern_tables(results)
        out["first_layer_heads_normaliser"] = tables.normaliser_table(results, params.normaliser_bin, first_pos)
        out["first_layer_heads_class"] = tables.class_table(results, first_pos)
        out["first_layer_heads_intervals"] = tables.intervals_table(results, params.thresholds())
        out["first_layer_heads_terms"] = tables.terms_table(results)
        notes = {
            "methods": {str(item.layer): item.method for item in results},
            "ln_scale": {str(item.layer): {"mean": item.scale_mean, "std": item.scale_std, "n_tokens": item.n_scaled} for item in results},
        }
        return Result(tables=out, tokens=None, notes=notes)


ANALYSIS = FirstLayerHeads()
