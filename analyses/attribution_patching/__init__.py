"""Attribution patching (AtP, AtP*): the effect of patching every node from one run into another,
estimated from one forward (both runs' rows in one batch) and one backward, and checked in every run by exact patching.

Corruption as causal tracing's (Gaussian noise on the subject's token embeddings, the same noise
draws and sigma) or a corrupt prompt of the same token length. Metric at the last position: log
p(target) (default), logit(target) - logit(foil), or KL(clean || patched). Direction: noising
patches corrupt values into the clean run (gradients at the clean run); denoising patches clean
values into the corrupt run. KL to the clean distribution has zero gradient at the clean run, so
``direction=auto`` denoises for KL and noises otherwise. Nodes and estimates: see engine.py.
Every run checks the top-k nodes of each kind by its ranking score and a random sample of the
rest by exact patching: the tables keep estimate and exact side by side, atp_checks the Spearman
rank correlation and the sampled false-negative estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.charts import Graph
from analyses.core.contract import (
    Analysis,
    AnalysisSpec,
    CancelEvent,
    Filter,
    Heatmap,
    Input,
    Invariant,
    Mark,
    Order,
    Progress,
    Result,
    ResultTable,
    Table,
    check_cancel,
    columns,
    param,
)
from analyses.core.errors import BadInput
from analyses.model.tokens import bos_param

METRICS = ("logprob", "logit_diff", "kl")
METHODS = ("atp_star", "atp")
DIRECTIONS = ("auto", "noising", "denoising")
SIGMA_SOURCES = ("subject", "embedding")
SUBJECT_MARK = Mark("atp_inputs", "changed_start", "changed_end")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Params:
    subject: str | None = param(None, "subject substring whose token embeddings are noised, as in causal-trace (prompt sets: each row's subject)")
    corrupt_prompt: str | None = param(None, "a corrupt prompt of the same token length instead of noise, e.g. 'The Colosseum is located in the city of'")
    target: str | None = param(None, "target token text, e.g. ' Paris' (one token); default: the clean run's top-1")
    foil: str | None = param(None, "foil token text for metric=logit_diff (one token, not the target)")
    metric: str = param("logprob", "metric at the last position: logprob (log p(target)), logit_diff (target - foil) or kl (KL(clean || patched))", METRICS)
    method: str = param("atp_star", "atp_star (QK fix for heads, GradDrop ranking) or atp (plain attribution patching)", METHODS)
    graddrop: bool = param(True, "with atp_star: rank nodes by GradDrop (one extra backward per layer, batched)")
    direction: str = param("auto", "noising (corrupt values into the clean run), denoising (clean into corrupt), auto (denoising for kl)", DIRECTIONS)
    samples: int = param(3, "noise samples (noise corruption only)")
    noise: float = param(3.0, "noise std as a multiple of sigma (as causal-trace)")
    sigma_source: str = param("subject", "sigma: subject (std of the subject-token embeddings over the inputs) or embedding (whole matrix)", SIGMA_SOURCES)
    sigma: float | None = param(None, "an explicit sigma; overrides sigma_source")
    seed: int = param(0, "noise seed (as causal-trace's) and the seed of the random exact checks")
    top_k: int = param(10, "exact checks: the top-k nodes of each kind by ranking score")
    random_checks: int = param(20, "exact checks: a random sample of this many of the other nodes of each kind (nodes before the first changed token, exactly 0 in both runs, are left out)")
    fn_threshold: float = param(0.1, "false negative: a sampled node whose |exact| is at least this fraction of the largest |exact| checked")
    edges: bool = param(True, "edge attribution patching: score every edge (head/MLP/embedding -> later head's q/k/v, MLP input, logits), store the top ones and a pruned circuit")
    top_edges: int = param(100, "edges: how many of the strongest edges (|estimate|) to store; each is checked by exact edge patching")
    edge_threshold: float = param(0.05, "edges: the pruned circuit keeps stored edges with |estimate| >= this fraction of the largest, connected to the logits")
    prepend_bos: str = bos_param()

    def check(self) -> None:
        if self.subject and self.corrupt_prompt:
            raise BadInput("give either parameter 'subject' (noise) or 'corrupt_prompt', not both")
        if self.metric == "logit_diff" and not self.foil:
            raise BadInput("metric logit_diff needs a foil token: --param foil=TEXT")
        if self.foil is not None and self.target is not None and self.foil == self.target:
            raise BadInput(f"parameter 'foil' equals the target {self.target!r}; a logit difference needs two different tokens")
        if not 1 <= self.samples <= 1000:
            raise BadInput(f"parameter 'samples' must be between 1 and 1000, not {self.samples}")
        if not 0 <= self.seed <= MAX_SEED:
            raise BadInput(f"parameter 'seed' must be between 0 and {MAX_SEED}, not {self.seed}")
        if self.top_k < 0 or self.random_checks < 0:
            raise BadInput("parameters 'top_k' and 'random_checks' must not be negative")
        if self.noise < 0 or (self.sigma is not None and self.sigma < 0):
            raise BadInput("parameters 'noise' and 'sigma' must not be negative")
        if not 1 <= self.top_edges <= 100_000:
            raise BadInput(f"parameter 'top_edges' must be between 1 and 100000, not {self.top_edges}")
        if not 0 <= self.edge_threshold <= 1:
            raise BadInput(f"parameter 'edge_threshold' must be in [0, 1], not {self.edge_threshold}")
        if not 0 < self.fn_threshold <= 1:
            raise BadInput(f"parameter 'fn_threshold' must be in (0, 1], not {self.fn_threshold}")

    def resolved_direction(self) -> str:
        if self.direction != "auto":
            return self.direction
        return "denoising" if self.metric == "kl" else "noising"


SCORE_COLUMNS = ("estimate:DOUBLE", "atp:DOUBLE", "graddrop:DOUBLE", "exact:DOUBLE", "checked:VARCHAR")
SCORE_DOC = ("estimate = the method's estimate of M(patched) - M(base); atp = plain AtP; graddrop = the GradDrop ranking score; "
             "exact = exact patching (checked nodes only: top-k or a random sample, 'top' / 'sample')")


def _position_heatmap(kind: str) -> Heatmap:
    return Heatmap(f"AtP estimate, {kind} (layer x token, * = corrupted)", "attribution_patching", "estimate", filters=(Filter("kind", "=", kind),), mark=SUBJECT_MARK)


SPEC = AnalysisSpec(
    name="attribution-patching",
    title="Attribution patching (AtP*)",
    description=(
        "Attribution patching: the effect of patching every residual, attention and MLP output per token, every head and every "
        "MLP neuron from a corrupt run (noise on the subject, or a corrupt prompt) into the clean run, from one forward of both runs "
        "and one backward; AtP* (QK fix, GradDrop) by default; the top nodes and a random sample checked by exact patching in every run."
    ),
    input_kinds=("prompt", "prompt_set"),
    tables=(
        ResultTable("attribution_patching", columns("input_id:INTEGER", "kind:VARCHAR", "layer:INTEGER", "pos:INTEGER", *SCORE_COLUMNS),
                    "kind resid / attn / mlp: block output, attention output, MLP output at (layer, pos). " + SCORE_DOC),
        ResultTable("atp_heads", columns("input_id:INTEGER", "kind:VARCHAR", "layer:INTEGER", "head:INTEGER", "pos:INTEGER", *SCORE_COLUMNS),
                    "kind head: the head reads token pos (query, key, value) from the source run; head_total: the whole head's output (pos null). " + SCORE_DOC),
        ResultTable("atp_neurons", columns("input_id:INTEGER", "kind:VARCHAR", "rank:INTEGER", "layer:INTEGER", "neuron:INTEGER", *SCORE_COLUMNS),
                    "kind sum: the neuron at every token; last: at the last token only; rank 1 = highest ranking score. " + SCORE_DOC),
        ResultTable("atp_inputs", columns(
            "input_id:INTEGER", "corruption:VARCHAR", "changed_start:INTEGER", "changed_end:INTEGER", "direction:VARCHAR", "metric:VARCHAR",
            "target_token:VARCHAR", "foil_token:VARCHAR", "clean_metric:DOUBLE", "corrupt_metric:DOUBLE", "samples:INTEGER"),
            "changed tokens [changed_start, changed_end): the noised subject or where the corrupt prompt differs; metric values are means over samples"),
        ResultTable("atp_checks", columns(
            "input_id:INTEGER", "kind:VARCHAR", "nodes:INTEGER", "checked:INTEGER", "spearman:DOUBLE", "spearman_atp:DOUBLE",
            "false_negatives:INTEGER", "fn_estimate:DOUBLE", "threshold:DOUBLE", "spearman_abs:DOUBLE"),
            "per kind, over the checked nodes: Spearman(estimate, exact), the same for plain AtP, spearman_abs = Spearman(|estimate|, |exact|) "
            "(the ranking by size the checks use), sampled false negatives (|exact| >= threshold "
            "outside the top-k) and their estimated count among all unchecked nodes"),
        ResultTable("atp_edges", columns(
            "input_id:INTEGER", "rank:INTEGER", "upstream:VARCHAR", "up_layer:INTEGER", "downstream:VARCHAR", "node:VARCHAR", "down_layer:INTEGER",
            "input:VARCHAR", "estimate:DOUBLE", "exact:DOUBLE", "checked:VARCHAR", "in_circuit:BOOLEAN"),
            "EAP: the top_edges edges by |estimate|; upstream embed / Ll.Hh (head output) / Ll.MLP into downstream input Ll.Hh.q, "
            "Ll.Hh.k / .v (Ll.KVg with grouped-query attention), Ll.MLP (its input) or logits (final residual); node = the downstream "
            "component; estimate = (upstream source - base) . dM/d input at the base run, the gradient taken at each head's own query / key / value "
            "input (the bridge's per-head residual copies before the attention norm, use_split_qkv_input), at the MLP's input (hook_mlp_in) "
            "and at the final residual stream; not available for GPT-J and Phi (one norm feeds attention and MLP); exact = exact edge patching; in_circuit = "
            "kept by the pruning (edge_threshold, connected to the logits); embed's layer is -1, logits' n_layers"),
        ResultTable("atp_edge_inputs", columns(
            "input_id:INTEGER", "downstream:VARCHAR", "layer:INTEGER", "input:VARCHAR", "input_score:DOUBLE", "edge_sum:DOUBLE", "exact_sum:BOOLEAN"),
            "every downstream input: its own score (input source - base) . dM/d input and the sum of all edges into it; equal where "
            "the residual stream is the plain sum of its writers (exact_sum), to first order with post-norms (Gemma 3)"),
        ResultTable("atp_circuit", columns(
            "input_id:INTEGER", "node:VARCHAR", "layer:INTEGER", "kind:VARCHAR", "estimate:DOUBLE", "exact:DOUBLE", "spearman:DOUBLE",
            "fn_estimate:DOUBLE"),
            "the pruned circuit's nodes: a head's or MLP's whole-node estimate (head_total; the MLP at every token) and exact "
            "patching of that node; spearman and fn_estimate: its kind's check (atp_checks head_total / mlp)"),
        ResultTable("atp_mean", columns("kind:VARCHAR", "layer:INTEGER", "index:INTEGER", "mean_estimate:DOUBLE", "n_prompts:INTEGER"),
                    "over the inputs: head_total per (layer, head = index) and resid / attn / mlp at the last token per layer (index -1)"),
    ),
    charts=(
        _position_heatmap("resid"),
        _position_heatmap("attn"),
        _position_heatmap("mlp"),
        Heatmap("AtP estimate per head (layer x head, whole head)", "atp_heads", "estimate", x="head", filters=(Filter("kind", "=", "head_total"),)),
        Table("Top MLP neurons at the last token (by ranking score)", "atp_neurons", "estimate", filters=(Filter("kind", "=", "last"),), order=(Order("rank"),), limit=15),
        Table("Top MLP neurons over all tokens (by ranking score)", "atp_neurons", "estimate", filters=(Filter("kind", "=", "sum"),), order=(Order("rank"),), limit=15),
        Graph("Circuit: the strongest edges (EAP, pruned)", "atp_edges", "estimate", filters=(Filter("in_circuit", "=", True),),
              source="upstream", target="node", source_layer="up_layer", target_layer="down_layer", label="input", nodes="atp_circuit"),
        Table("Checks: estimate vs exact patching", "atp_checks", "spearman", order=(Order("input_id"), Order("kind")), limit=50),
    ),
)


class AttributionPatching(Analysis):
    Params = Params
    spec = SPEC
    sharded = True
    invariant_checks = (
        Invariant("invariant_edges_sum_to_input", 1e-4, "every downstream input's edges sum to its own input score (relative to the largest), where the residual stream is the plain sum of its writers (not Gemma 3's post-norms)"),
        Invariant("invariant_unchanged_nodes_zero", 1e-5, "noise corruption: every resid/attn/mlp node before the noised subject has equal clean and corrupt values, so its estimate and (where checked) exact effect are 0 up to float32 rounding (the clean run is one row, the noised runs a batch): the largest of them relative to the run's largest |estimate| or |exact|"),
    )

    def check(self, model, inputs: list[Input], params: Params) -> None:
        from analyses.attribution_patching import setup as atp_setup

        target_id, foil_id = atp_setup.metric_tokens(model, params)
        for item in inputs:
            change = atp_setup.locate_change(model, item, params)
            if foil_id is not None and target_id is None:
                atp_setup.check_foil_against_top1(model, item, change, foil_id, params.foil)

    def prepare(self, model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent) -> Any:
        from analyses.attribution_patching import setup as atp_setup

        return atp_setup.run_state(model, inputs, params)

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.attribution_patching import tables as atp_tables

        collected = atp_tables.Collector(model, params, state)
        for index, item in enumerate(inputs):
            check_cancel(cancel)

            def input_progress(done: int, total: int, note: str = "", index: int = index) -> None:
                progress(index * 1000 + (1000 * done) // max(1, total), 1000 * len(inputs), f"input {index + 1}/{len(inputs)}: {note}")

            collected.add(item, input_progress, cancel)
        progress(len(inputs), len(inputs), "done")
        return collected.result()

    def finalize(self, params: Params, state: Any, read: Any, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.attribution_patching import tables as atp_tables

        return Result({"atp_mean": atp_tables.mean_table(read)}, None, {})

    def invariants(self, params: Params, read: Any, notes: dict) -> list[tuple]:
        from analyses.attribution_patching import circuit
        from analyses.attribution_patching import tables as atp_tables

        return atp_tables.invariants(params, read) + (circuit.invariants(read) if params.edges else [])


ANALYSIS = AttributionPatching()
