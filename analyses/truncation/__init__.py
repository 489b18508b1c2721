"""Truncated-context residual similarity: how much of a token's residual depends on distant context.

For every analysed token of every document: the residual after each block (hook_resid_post) with
the full context versus with the context cut to the token's last k tokens (k = 1..k_max, the token
itself included, BOS prepended when the run prepends one). Both are centred with the per-layer
mean of the full-context residuals over all analysed tokens (BOS excluded) and compared by
cosine in float32. Computed with the sliding-window batching of analyses/truncation/engine.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Filter, Input, Line, Order, Progress, Reader, Result, ResultTable, Table, param
from analyses.core.errors import BadInput
from analyses.model.tokens import document_separator_id

COMMON_WORDS = frozenset(
    "and of or in to that which with for the a an they on is their but are its i we it at".split()
)
CATEGORIES = ("newline", "full stop", "comma", "common word", "alphabetic", "other")


@dataclass(frozen=True)
class Params:
    k_max: int = param(10, "longest truncated context (tokens, the token itself included); k runs 1..k_max")
    min_context: int | None = param(None, "analyse tokens with at least this many earlier document tokens (default and minimum: k_max)")
    start_token: bool = param(True, "start full and truncated contexts with the document separator (the BOS where the tokenizer adds one, else <|endoftext|> or EOS)")
    default_max_tokens: int = param(256, "tokens per document (BOS included) when the corpus options set none (--max-tokens)")
    n_lowest: int = param(30, "tokens listed in truncation_lowest (lowest cosine over layers at k = k_max)")
    batch_tokens: int = param(4096, "tokens per forward pass (memory vs speed; results do not depend on it)")

    def check(self) -> None:
        if not 1 <= self.k_max <= 128:
            raise BadInput(f"k_max must be between 1 and 128, not {self.k_max}")
        if self.min_context is not None and self.min_context < self.k_max:
            raise BadInput(f"min_context must be at least k_max ({self.k_max}), not {self.min_context}")
        if self.default_max_tokens < 2 or self.n_lowest < 0 or self.batch_tokens < self.k_max + 1:
            raise BadInput("default_max_tokens must be at least 2, n_lowest at least 0, batch_tokens at least k_max + 1")


SPEC = AnalysisSpec(
    name="truncation",
    title="Truncated-context residual similarity",
    description=(
        "Cosine between each token's residual after every block with the full context and with the "
        "context cut to its last k tokens (k = 1..k_max, BOS prepended), mean-centred per layer; "
        "per token, and summarised per (layer, k, token category) with quantiles."
    ),
    input_kinds=("pile",),
    tables=(
        ResultTable(
            "truncation",
            (("input_id", "INTEGER"), ("pos", "INTEGER"), ("token", "VARCHAR"), ("category", "VARCHAR"),
             ("layer", "SMALLINT"), ("context", "SMALLINT"), ("cos", "FLOAT")),
            "layer = block whose resid_post is compared; context = k tokens kept (the token included); pos counts BOS; cos in float32 as computed",
        ),
        ResultTable(
            "truncation_summary",
            (("layer", "INTEGER"), ("context", "INTEGER"), ("category", "VARCHAR"), ("n", "INTEGER"),
             ("mean", "DOUBLE"), ("median", "DOUBLE"), ("q05", "DOUBLE"), ("q25", "DOUBLE"),
             ("q75", "DOUBLE"), ("q95", "DOUBLE")),
            "over all analysed tokens of the run; category 'all' is every token",
        ),
        ResultTable(
            "truncation_lowest",
            (("rank", "INTEGER"), ("input_id", "INTEGER"), ("pos", "INTEGER"), ("token", "VARCHAR"),
             ("category", "VARCHAR"), ("layer", "INTEGER"), ("context", "INTEGER"), ("cos", "DOUBLE"),
             ("text", "VARCHAR")),
            "tokens with the lowest cosine over layers at context = k_max; text = earlier tokens | kept tokens [token]",
        ),
    ),
    charts=(
        Line("Mean cosine, full vs truncated context, per layer (all tokens)", "truncation_summary", "mean",
              x="layer", series="context", filters=(Filter("category", "=", "all"), Filter("context", "in", (1, 2, 5, 10))), per_input=False),
        Line("Mean cosine per token category at k = 5", "truncation_summary", "mean",
              x="layer", series="category", filters=(Filter("context", "=", 5),), per_input=False),
        Line("Mean cosine per token category at k = 10", "truncation_summary", "mean",
              x="layer", series="category", filters=(Filter("context", "=", 10),), per_input=False),
        Table("Lowest-cosine tokens at the longest truncated context", "truncation_lowest", "cos",
              per_input=False, order=(Order("rank"),), limit=15),
        # From the per-token rows, so a running or interrupted run draws the shards stored so far.
        Line("Mean cosine per layer and k, over the per-token rows stored so far", "truncation", "cos",
              x="layer", series="context", per_input=False),
    ),
)


def token_category(token: str) -> str:
    """newline, full stop, comma, common word, alphabetic (letters only) or other; one leading
    space and any case allowed for words and punctuation."""
    stripped = token.strip(" \t")
    if stripped and set(stripped) <= {"\n", "\r"}:
        return "newline"
    word = token[1:] if token.startswith(" ") else token
    if word == ".":
        return "full stop"
    if word == ",":
        return "comma"
    if word.lower() in COMMON_WORDS:
        return "common word"
    if word.isalpha():
        return "alphabetic"
    return "other"


def min_context_of(params: Params) -> int:
    return params.k_max if params.min_context is None else params.min_context


def analysed_documents(model, inputs: list[Input], params: Params) -> list:
    from analyses.truncation.engine import DocTokens, analysed_positions

    start = [document_separator_id(model)] if params.start_token else []
    docs = []
    for item in inputs:
        max_tokens = item.meta.get("max_tokens") or params.default_max_tokens
        ids = (start + model.to_tokens(item.text, prepend_bos="false")[0].tolist())[: min(max_tokens, model.n_ctx)]
        positions = analysed_positions(len(ids), len(start), min_context_of(params))
        docs.append(DocTokens(item.input_id, tuple(ids), positions))
    return docs


def bos_token_id(model, params: Params) -> int | None:
    return document_separator_id(model) if params.start_token else None


class Truncation(Analysis):
    Params = Params
    spec = SPEC
    sharded = True

    def check(self, model, inputs: list[Input], params: Params) -> None:
        docs = analysed_documents(model, inputs, params)
        if not any(doc.positions for doc in docs):
            longest = max(len(doc.ids) for doc in docs)
            raise BadInput(
                f"no document has a token with {min_context_of(params)} earlier tokens (longest: {longest} tokens); "
                "give longer documents, a larger --max-tokens or a smaller k_max"
            )

    def prepare(self, model, inputs: list[Input], params: Params, progress: Progress, cancel: CancelEvent) -> dict:
        """The run-level state: the per-layer mean of full-context residuals over every analysed token
        of every input (the centring all shards share)."""
        import torch

        from analyses.truncation.engine import full_context_mean, length_batch_count

        analysed = [doc for doc in analysed_documents(model, inputs, params) if doc.positions]
        forwards, n_layers = max(1, length_batch_count(analysed, params.batch_tokens)), model.n_layers
        total = forwards * n_layers
        done = [0]

        def tick(layer: int) -> None:
            done[0] += 1
            progress(min(done[0], total), total, f"full-context mean: forward {min(forwards, 1 + (done[0] - 1) // n_layers)}/{forwards}, block {layer + 1}/{n_layers}")

        with torch.inference_mode():
            mean = full_context_mean(model, analysed, params.batch_tokens, cancel, tick)
        return {"mean": mean.cpu().numpy()}

    def compute(self, model, inputs: list[Input], params: Params, state: dict, progress: Progress, cancel: CancelEvent) -> Result:
        """Per-token cosines of these inputs, centred with the run's mean."""
        import torch

        from analyses.truncation.engine import count_window_forwards, truncated_cosines
        from analyses.truncation.tables import detail_table

        docs = analysed_documents(model, inputs, params)
        analysed = [doc for doc in docs if doc.positions]
        bos_id = bos_token_id(model, params)
        forwards, n_layers = max(1, count_window_forwards(analysed, params.k_max, bos_id is not None, params.batch_tokens)), model.n_layers
        total = forwards * n_layers
        done = [0]

        def tick(layer: int) -> None:
            done[0] += 1
            progress(min(done[0], total), total, f"truncated windows: forward {min(forwards, 1 + (done[0] - 1) // n_layers)}/{forwards}, block {layer + 1}/{n_layers}")

        mean = torch.as_tensor(state["mean"], device=model.device)
        with torch.inference_mode():
            cosines = truncated_cosines(model, analysed, params.k_max, bos_id, mean, params.batch_tokens, cancel, tick)
        detail, tokens = detail_table(model, docs, cosines, params, token_category)
        notes = {
            "start_token": params.start_token,
            "bos_token_id": bos_id,
            "min_context": min_context_of(params),
            "centring": "per-layer mean of full-context resid_post over analysed tokens of the whole run (BOS excluded)",
            "positional_embedding": str(getattr(model.bridge.cfg, "positional_embedding_type", "unknown")),
            "positions_under_truncation": "truncated contexts start at position 0 (BOS); absolute-position models see shifted positions",
        }
        return Result(tables={"truncation": detail}, tokens=tokens, notes=notes)

    def finalize(self, params: Params, state: dict, read: Reader, progress: Progress, cancel: CancelEvent) -> Result:
        """Summary quantiles, the lowest tokens and the document counts, reduced where the shards are
        stored (read.quantiles, read.lowest, read.count_distinct): memory does not grow with the corpus."""
        from analyses.truncation.tables import lowest_table, summary_table

        n_layers = int(state["mean"].shape[0])
        summary, n_tokens = summary_table(read, cancel)
        progress(1, 3, "summaries: quantiles")
        lowest = lowest_table(read, n_layers, params.k_max, params.n_lowest)
        progress(2, 3, "summaries: lowest tokens")
        n_docs = read.count_distinct("tokens", ["input_id"])
        n_analysed_docs = read.count_distinct("truncation", ["input_id"], {"layer": 0, "context": 1})
        progress(3, 3, "summaries")
        notes = {"analysed_tokens": n_tokens, "documents_without_analysed_tokens": n_docs - n_analysed_docs}
        return Result(tables={"truncation_summary": summary, "truncation_lowest": lowest}, tokens=None, notes=notes)


ANALYSIS = Truncation()
