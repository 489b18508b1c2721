"""Causal tracing (ROME): corrupt the subject's token embeddings with noise, restore one clean
state at a time, and measure how much of the answer's probability comes back.

Per (kind, token, layer) cell: the mean over noise samples of p(answer) with the clean state
restored (kind resid: block L's output at the token; mlp / attn: those outputs at the token for a
window of layers centred on L) and the normalised restoration (p - low) / (high - low). The answer
is the clean run's top-1 at the last position. Rows before the subject equal low exactly (their
states are those of the clean and corrupted runs alike) and are not recomputed.

Sharded: a prompt's trace depends on that prompt alone (its noise is seeded by its input id) and on
sigma, computed once for the run (prepare); the bucket averages over every included prompt are
the run's final step over the shards' per-prompt bucket means (causal_trace_bucket_inputs).
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
    Invariant,
    Line,
    Mark,
    Progress,
    Result,
    ResultTable,
    check_cancel,
    param,
)
from analyses.core.errors import BadInput
from analyses.core.params import name_list
from analyses.model.tokens import bos_param

SIGMA_SOURCES = ("subject", "embedding")
SUBJECT_MARK = Mark("causal_trace_inputs", "subject_start", "subject_end")


MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are unsigned 32-bit
MAX_SAMPLES = 10_000  # noise draws are held in memory: samples x subject tokens x d_model


@dataclass(frozen=True)
class Params:
    subject: str | None = param(None, "subject substring whose token embeddings are noised (prompt sets: each row's subject)")
    answer: str | None = param(None, "expected answer text as it follows the prompt, e.g. ' Paris' (prompt sets: each row's answer); only checked")
    kinds: str = param("resid,mlp,attn", "states restored, comma-separated: resid, mlp, attn")
    samples: int = param(10, "noise samples per trace")
    noise: float = param(3.0, "noise std as a multiple of sigma")
    sigma_source: str = param("subject", "sigma: subject (std of the subject-token embeddings over the inputs) or embedding (whole matrix)")
    sigma: float | None = param(None, "an explicit sigma; overrides sigma_source")
    window: int = param(10, "layers restored around L for mlp/attn cells: [L - window//2, L - window//2 + window - 1]")
    seed: int = param(0, "noise seed (not used in rome_compatible mode)")
    rome_compatible: bool = param(False, "ROME's noise: numpy RandomState(1) reseeded per trace, float64 draws")
    threshold: float = param(0.01, "prompts with high - low below this are left out of the bucket averages")
    prepend_bos: str = bos_param()

    def kind_list(self) -> tuple[str, ...]:
        from analyses.causal_trace.engine import TRACE_KINDS

        return name_list(self.kinds, "kinds", TRACE_KINDS)

    def check(self) -> None:
        self.kind_list()
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise BadInput(f"parameter 'samples' must be between 1 and {MAX_SAMPLES}, not {self.samples}")
        if not 0 <= self.seed <= MAX_SEED:
            raise BadInput(f"parameter 'seed' must be between 0 and {MAX_SEED}, not {self.seed}")
        if self.window < 1:
            raise BadInput(f"parameter 'window' must be at least 1, not {self.window}")
        if self.noise < 0 or (self.sigma is not None and self.sigma < 0):
            raise BadInput("parameters 'noise' and 'sigma' must not be negative")
        if self.sigma_source not in SIGMA_SOURCES:
            raise BadInput(f"parameter 'sigma_source' takes {' or '.join(SIGMA_SOURCES)}, not {self.sigma_source!r}")


def _heatmap(kind: str) -> Heatmap:
    return Heatmap(f"Restoration, {kind} (layer x token, * = subject)", "causal_trace", "restoration", filters=(Filter("kind", "=", kind),), mark=SUBJECT_MARK)


def _bucket_heatmap(kind: str) -> Heatmap:
    return Heatmap(f"Mean restoration by bucket, {kind}", "causal_trace_buckets", "mean_restoration", x="bucket", filters=(Filter("kind", "=", kind),), per_input=False, facet="category")


SPEC = AnalysisSpec(
    name="causal-trace",
    title="Causal tracing",
    description=(
        "ROME's causal tracing: noise the subject's token embeddings, restore one clean state at a "
        "time (residual, MLP or attention output at a token and layer) and record how much of the "
        "answer's probability comes back; averaged by category over the subject/after/last buckets."
    ),
    input_kinds=("prompt", "prompt_set"),
    tables=(
        ResultTable(
            "causal_trace",
            (("input_id", "INTEGER"), ("kind", "VARCHAR"), ("layer", "INTEGER"), ("pos", "INTEGER"), ("prob", "DOUBLE"), ("restoration", "DOUBLE")),
            "prob = mean over samples of p(answer) with the state restored; restoration = (prob - low) / (high - low)",
        ),
        ResultTable(
            "causal_trace_inputs",
            (
                ("input_id", "INTEGER"), ("category", "VARCHAR"), ("subject", "VARCHAR"), ("subject_start", "INTEGER"), ("subject_end", "INTEGER"),
                ("answer_token_id", "INTEGER"), ("answer_token", "VARCHAR"), ("expected_answer", "VARCHAR"), ("correct", "BOOLEAN"),
                ("high_prob", "DOUBLE"), ("low_prob", "DOUBLE"), ("included", "BOOLEAN"), ("noise_std", "DOUBLE"), ("samples", "INTEGER"),
            ),
            "subject tokens are [subject_start, subject_end); included = correct (or no expected answer) and high - low >= threshold",
        ),
        ResultTable(
            "causal_trace_buckets",
            (("category", "VARCHAR"), ("kind", "VARCHAR"), ("bucket", "VARCHAR"), ("layer", "INTEGER"), ("mean_restoration", "DOUBLE"), ("aie", "DOUBLE"), ("n_prompts", "INTEGER")),
            "over included prompts; aie = max(0, mean bucket prob - mean low) (ROME's difference of averages)",
        ),
        ResultTable("trace_attention", (("input_id", "INTEGER"), ("layer", "INTEGER"), ("target", "VARCHAR"), ("weight", "DOUBLE")), "clean run, last token's attention, mean over heads"),
        ResultTable("trace_hidden", (("input_id", "INTEGER"), ("layer", "INTEGER"), ("pos", "INTEGER"), ("norm", "DOUBLE"), ("cos_next_layer", "DOUBLE")), "clean block outputs; cos_next_layer only at the last token"),
        ResultTable(
            "causal_trace_bucket_inputs",
            (("input_id", "INTEGER"), ("category", "VARCHAR"), ("kind", "VARCHAR"), ("bucket", "VARCHAR"), ("layer", "INTEGER"),
             ("restoration", "DOUBLE"), ("prob", "DOUBLE"), ("low_prob", "DOUBLE")),
            "per included prompt: restoration and prob averaged over the bucket's tokens, and the prompt's low; causal_trace_buckets averages them over the prompts",
        ),
    ),
    charts=(
        _heatmap("resid"),
        _heatmap("mlp"),
        _heatmap("attn"),
        _bucket_heatmap("resid"),
        _bucket_heatmap("mlp"),
        _bucket_heatmap("attn"),
        Line("Attention from the last token (mean over heads)", "trace_attention", "weight", x="layer", series="target"),
        Line("Cosine of consecutive layers at the last token", "trace_hidden", "cos_next_layer", x="layer", last_pos=True),
    ),
)


@dataclass(frozen=True)
class Located:
    """A prompt tokenised with its subject located: ids, subject token range [b, e)."""

    ids: tuple[int, ...]
    subject: str
    subject_range: tuple[int, int]


def subject_of(item: Input, params: Params) -> str | None:
    return item.meta.get("subject") or params.subject


def locate(model, item: Input, params: Params) -> Located:
    """Tokenise and find the subject's tokens by character offsets; BadInput if absent or last."""
    subject = subject_of(item, params)
    where = f"input {item.input_id}" if item.source == "prompt_set" else "the prompt"
    if not subject:
        raise BadInput(f"{where} has no subject; give --param subject=TEXT (or a subject column in the prompt set)")
    char_start = item.text.find(subject)
    if char_start < 0:
        raise BadInput(f"subject {subject!r} is not in {where}: {item.text[:60]!r}")
    char_end = char_start + len(subject)
    ids = model.to_tokens(item.text, prepend_bos=params.prepend_bos)[0].tolist()
    n_bos = 1 if model.bos(params.prepend_bos).prepend else 0
    spans = token_char_spans(model.tokenizer, item.text, ids[n_bos:])
    covered = [n_bos + i for i, (start, end) in enumerate(spans) if end > char_start and start < char_end and end > start]
    if not covered:
        raise BadInput(f"subject {subject!r} matches no token of {where}")
    begin, end = covered[0], covered[-1] + 1
    if end >= len(ids):
        raise BadInput(f"subject {subject!r} covers the last token of {where}; the trace needs a token after it")
    return Located(tuple(ids), subject, (begin, end))


def token_char_spans(tokenizer, text: str, ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each token: the fast tokenizer's offsets, else decoded prefix lengths."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(encoded["input_ids"]) == list(ids):
            return [tuple(span) for span in encoded["offset_mapping"]]
    except (NotImplementedError, KeyError, TypeError):
        pass
    ends = [len(tokenizer.decode(ids[: i + 1])) for i in range(len(ids))]
    return list(zip([0] + ends[:-1], ends))


class CausalTrace(Analysis):
    Params = Params
    spec = SPEC
    sharded = True  # per-prompt traces; sigma is run-level state, the bucket averages the final step
    invariant_checks = (Invariant("invariant_last_resid_restoration", 1e-4, "restoring the whole clean residual after the last block at the last token is the clean run: that cell's restoration, computed, is 1 for every input (runs with the resid kind)"),)

    def check(self, model, inputs: list[Input], params: Params) -> None:
        for item in inputs:
            locate(model, item, params)

    def invariants(self, params: Params, read: Any, notes: dict) -> list[tuple]:
        """The exact invariant on the stored numbers: restoring the whole clean residual after the
        last block at the last token is the clean run, so that cell's restoration is 1 (computed, not
        set), for every included input."""
        if "resid" not in params.kind_list():
            return [("invariant_last_resid_restoration", None, 1e-4, None, "skipped: no resid kind in this run")]
        table = read("causal_trace", ["input_id", "kind", "layer", "pos", "restoration"])
        if table is None or table.num_rows == 0:
            return [("invariant_last_resid_restoration", None, 1e-4, None, "skipped: no rows")]
        rows = [r for r in table.to_pylist() if r["kind"] == "resid"]
        last_layer = max(r["layer"] for r in rows)
        last_pos = {}
        for r in rows:
            last_pos[r["input_id"]] = max(last_pos.get(r["input_id"], -1), r["pos"])
        cells = [r["restoration"] for r in rows if r["layer"] == last_layer and r["pos"] == last_pos[r["input_id"]] and r["restoration"] == r["restoration"]]
        if not cells:
            return [("invariant_last_resid_restoration", None, 1e-4, None, "skipped: no input with a finite restoration")]
        worst = max(abs(value - 1.0) for value in cells)
        return [("invariant_last_resid_restoration", worst, 1e-4, worst <= 1e-4, f"max |restoration - 1| at the last resid cell over {len(cells)} inputs")]

    def prepare(self, model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent) -> dict:
        """The run-level state: sigma (explicit, the embedding matrix's std, or the std of every
        input's subject-token embeddings), the same for every shard."""
        import numpy as np

        from analyses.causal_trace import tables as causal_tables

        progress(0, 1, "noise sigma")
        sigma, _ = causal_tables.noise_sigma(model, [locate(model, item, params) for item in inputs], params)
        return {"sigma": np.float64(sigma)}

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.causal_trace import tables as causal_tables

        located = [locate(model, item, params) for item in inputs]
        sigma = float(state["sigma"])
        sigma_note = "explicit" if params.sigma is not None else ("embedding matrix" if params.sigma_source == "embedding" else "subject-token embeddings")
        collected = causal_tables.Collector(model, params)
        for index, (item, where) in enumerate(zip(inputs, located)):
            check_cancel(cancel)

            def input_progress(done: int, total: int, note: str = "", index: int = index) -> None:
                progress(index * 1000 + (1000 * done) // max(1, total), 1000 * len(inputs), f"input {index + 1}/{len(inputs)}: {note}")

            collected.add(item, where, params.noise * sigma, input_progress, cancel)
        progress(len(inputs), len(inputs), "done")
        notes = {**model.bos(params.prepend_bos).record(), "sigma": sigma, "sigma_source": sigma_note, "noise_std": params.noise * sigma, "method": "fast (exact; the naive reference is in the tests and benchmarks)"}
        return collected.result(notes)

    def finalize(self, params: Params, state: Any, read, progress: Progress, cancel: CancelEvent) -> Result:
        """The bucket averages over every included prompt of every shard."""
        from analyses.causal_trace import tables as causal_tables

        buckets, prompts = causal_tables.bucket_table(read)
        return Result({"causal_trace_buckets": buckets}, None, {"prompts_in_buckets": prompts})


ANALYSIS = CausalTrace()
