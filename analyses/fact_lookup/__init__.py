"""Fact lookup: where a model turns a multi-token name into a linear representation of its facts.

Over an entity table (e.g. athletes and their sport), asked with the candidate prompt the model
answers most (analyses.fact_lookup.prompts), at the last token of the name: per-layer linear probes for the attribute (k-fold held-out accuracy, random-label control,
majority baseline); token concatenation (attention from the last name token to the earlier ones,
and probe accuracy with them hidden from attention in layers 0..L); localisation (mean-ablate
the MLP or attention output at the last name token per layer: drop in log p(correct) and top-1);
known vs made-up names (MLP output norm); non-linearity of the neurons that write along the probe
directions (AND score); extraction (heads reading the name from the final token, direct effect).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Filter, Heatmap, Input, Line, Order, Progress, Result, Table, param
from analyses.core.errors import BadInput
from analyses.core.params import name_list
from analyses.fact_lookup.sharded import STATE_TABLES
from analyses.fact_lookup.tables import TABLES
from analyses.model.tokens import bos_param

SITES = ("resid_post", "attn_out", "mlp_out")
COMPONENTS = ("mlp", "attn")


@dataclass(frozen=True)
class Params:
    folds: int = param(5, "k of the stratified k-fold split; every attribute value needs at least k entities")
    sites: str = param("resid_post", "probed sites at the last name token, comma-separated: resid_post, attn_out, mlp_out")
    c: float = param(1.0, "inverse L2 regularisation of the logistic-regression probe")
    seed: int = param(0, "seed of the folds, the label shuffles of the permutation null and the bootstrap")
    n_permutations: int = param(100, "label shuffles per probe for the permutation null (p-value, null 95th percentile); 0 = none")
    n_bootstrap: int = param(1000, "bootstrap resamples of the entities for the 95% intervals; 0 = none")
    batch_size: int = param(32, "prompts per padded batch")
    intervention_entities: int = param(96, "entities used for the ablations (evenly spread over the table; 0 = all)")
    layer_stride: int = param(1, "ablate and hide every n-th layer only, and always layers 0-3 (1 = every layer; the summary names the layers left out)")
    concat_layer: int | None = param(None, "layer whose resid_post is probed with the earlier name tokens hidden (default n_layers // 2)")
    n_neurons: int = param(5, "neurons per layer scored for non-linearity (those best aligned with the probe directions)")
    prepend_bos: str = bos_param()
    prompt: str = param("auto", "the prompt: table (the rows' templates), few-shot (one example per value from the table, order rotated), "
                        "chat (the tokenizer's chat template around the few-shot examples), or auto: the candidate with the highest "
                        "answer-set probability on prompt_entities entities")
    prompt_entities: int = param(48, "entities (evenly spread) on which each candidate prompt is measured; 0 = all")

    def site_list(self) -> tuple[str, ...]:
        return name_list(self.sites, "sites", SITES)

    def check(self) -> None:
        self.site_list()
        if self.folds < 2:
            raise BadInput(f"parameter 'folds' must be at least 2, not {self.folds}")
        for name in ("batch_size", "layer_stride", "n_neurons"):
            if getattr(self, name) < 1:
                raise BadInput(f"parameter {name!r} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.seed <= 2**32 - 1:
            raise BadInput(f"parameter 'seed' must be between 0 and {2**32 - 1} (scikit-learn's range), not {self.seed}")
        if self.n_permutations < 0 or self.n_bootstrap < 0:
            raise BadInput("parameters 'n_permutations' and 'n_bootstrap' must not be negative")
        from analyses.fact_lookup.prompts import CHOICES

        if self.prompt not in CHOICES:
            raise BadInput(f"parameter 'prompt' takes one of {', '.join(CHOICES)}, not {self.prompt!r}")
        if self.prompt_entities < 0:
            raise BadInput(f"parameter 'prompt_entities' must not be negative, not {self.prompt_entities}")
        if self.intervention_entities < 0 or self.c <= 0:
            raise BadInput("parameter 'intervention_entities' must not be negative and 'c' must be positive")


def _line(title: str, table: str, value: str, x: str, series: str, filters: tuple[Filter, ...] = ()) -> Line:
    return Line(title, table, value, x=x, series=series, filters=filters, per_input=False)


SPEC = AnalysisSpec(
    name="fact-lookup",
    title="Fact lookup (multi-token names)",
    description=(
        "Over an entity table (default: athletes and their sport), asked with the candidate prompt (the rows' templates, "
        "few-shot with one example per value, or the chat template) that puts the most probability on the answer set, "
        "at the last token of the name: "
        "per-layer logistic-regression probes for the attribute with a random-label control; "
        "attention from the last name token to the earlier ones, and probes with those hidden; "
        "mean ablation of MLP and attention outputs there; MLP output norms of known against "
        "recombined names; AND-like neurons; heads moving the attribute to the final token."
    ),
    input_kinds=("entities",),
    tables=TABLES + STATE_TABLES,
    charts=(
        Table("What the run supports (from its tables: 95% intervals, permutation p-values)", "fact_lookup_summary", "finding", per_input=False, order=(Order("line"),), limit=40),
        _line("Probe accuracy at the last name token (resid_post, held-out) by layer", "fact_lookup_probe", "accuracy", "layer", "measure", (Filter("site", "=", "resid_post"),)),
        _line("Mean-ablation at the last name token: drop in log p(correct) by layer", "fact_lookup_ablation", "logprob_drop", "layer", "component"),
        _line("MLP output norm at the last name token: known vs made-up names", "fact_lookup_norms", "mean_norm", "layer", "names"),
        Heatmap("Attention from the last name token to the earlier name tokens (layer x head)", "fact_lookup_concat", "attention", x="head", y="layer", per_input=False),
        Line("Name attention by layer, mean over heads: estimate and 95% interval over entities (low, high)", "fact_lookup_intervals", "value",
             x="layer", series="curve", per_input=False, facet="measure"),
        _line("Probe accuracy with the earlier name tokens hidden in layers 0..L", "fact_lookup_hidden", "accuracy", "hidden_through", "measure"),
        Table("Heads reading the name from the final token (by direct effect)", "fact_lookup_heads", "direct_effect", per_input=False, order=(Order("direct_effect", descending=True),), limit=12),
    ),
)


def validate(model, inputs: list[Input], params: Params) -> None:
    """Refuse, before anything is stored, tables a probe cannot be fitted on and bad answer tokens."""
    from analyses.fact_lookup.engine import answer_token_ids
    from analyses.inputs.entities import check_counts, entities_of_inputs

    entities = entities_of_inputs(inputs)
    check_counts([entity.value for entity in entities], params.folds)
    answer_token_ids(model.tokenizer, sorted({entity.value for entity in entities}))
    if params.concat_layer is not None and not 0 <= params.concat_layer < model.n_layers:
        raise BadInput(f"parameter 'concat_layer' must be in 0..{model.n_layers - 1}, not {params.concat_layer}")


def run(model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent, state: dict | None = None) -> Result:
    from analyses.fact_lookup.lookup import compute

    return compute(model, inputs, params, progress, cancel, state)


class FactLookup(Analysis):
    Params = Params
    spec = SPEC
    sharded = True  # per-entity states per shard; probes, nulls and intervals over every entity in finalize

    def check(self, model, inputs: list[Input], params: Params) -> None:
        validate(model, inputs, params)

    def prepare(self, model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent) -> dict:
        """The prompt choice and what every shard needs from every entity (analyses.fact_lookup.sharded.prepare)."""
        from analyses.fact_lookup.sharded import prepare

        return prepare(model, inputs, params, progress, cancel)

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.fact_lookup.sharded import compute_shard

        return compute_shard(model, inputs, params, state, progress, cancel)

    def finalize(self, params: Params, state: Any, read, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.fact_lookup.sharded import finalize

        return finalize(params, state, read, progress, cancel)


ANALYSIS = FactLookup()
