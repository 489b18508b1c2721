"""Per-layer anatomy of the attention heads from the corpus sums: pattern, masses, widths,
duplicate-token score, normaliser and class. Shared by first-layer-heads and contextual-neurons."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.first_layer_heads import engine

# Each class from one measured score (engine.SCORES) against its threshold.
CLASS_SCORES = (("previous-token", "previous"), ("local", "local"), ("contextual", "contextual"),
                ("averaging", "averaging"), ("duplicate-token", "duplicate"), ("attention-sink", "sink"))
CLASSES = (*(name for name, _ in CLASS_SCORES), "uncertain", "other")


@dataclass(frozen=True)
class Thresholds:
    previous: float
    local: float
    contextual: float
    averaging: float
    duplicate: float
    sink: float
    score_from: int = 100
    bootstrap: int = 1000
    seed: int = 0

    def of(self, score: str) -> float:
        return float(getattr(self, score))


@dataclass(frozen=True)
class Verdict:
    """The class and the relative margin (interval low - threshold) / threshold by which its score
    cleared; runner_up: the next class that cleared too (None when none), with its margin."""

    head_class: str
    margin: float
    runner_up: str | None
    runner_up_margin: float


@dataclass(frozen=True)
class HeadSummary:
    head: int
    head_class: str
    masses: dict
    width50: float
    width90: float
    decay: float
    duplicate_score: float
    normaliser_median: float
    scores: dict  # score name -> (estimate, low, high) over the documents
    verdict: Verdict
    n_docs: int


@dataclass(frozen=True)
class LayerAnatomy:
    """pattern [H, T, T] over every destination the run reaches (additive: also up to the
    largest destination position that fits the context); dests: destinations reported;
    normaliser: (set name, N [H, T_doc]) per document; terms: additive split or None."""

    layer: int
    method: str
    pattern: Any
    allowed: Any
    dests: tuple[int, ...]
    heads: tuple[HeadSummary, ...]
    normaliser: list
    duplicate_pairs: int
    scale_mean: float
    scale_std: float
    n_scaled: int
    terms: dict | None
    query: Any


def classify(scores: dict, limits: Thresholds) -> Verdict:
    """A class only where its score's whole interval clears the threshold; when several clear, the
    largest relative margin wins, except that previous-token is the narrower claim of local (a head
    on the previous token is local too) and takes it. None clears: uncertain while some interval
    reaches its threshold (or there is none), other when every interval lies below."""
    cleared = []
    for name, score in CLASS_SCORES:
        _, low, _ = scores[score]
        threshold = limits.of(score)
        if low == low and low >= threshold:
            cleared.append(((low - threshold) / threshold, name))
    if any(name == "previous-token" for _, name in cleared):
        cleared = [item for item in cleared if item[1] != "local"]
    cleared.sort(reverse=True)
    if cleared:
        margin, name = cleared[0]
        runner_margin, runner = cleared[1] if len(cleared) > 1 else (float("nan"), None)
        return Verdict(name, margin, runner, runner_margin)
    below = all(scores[score][2] == scores[score][2] and scores[score][2] < limits.of(score) for _, score in CLASS_SCORES)
    return Verdict("other" if below else "uncertain", float("nan"), None, float("nan"))


def resolve_method(weights, layer: int, method: str) -> str:
    if method == "auto":
        return "additive" if weights.W_pos is not None and layer == 0 else "measured"
    return method


def analyse_layer(weights, corpus: engine.LayerCorpus, layer: int, method: str, dest_positions: tuple[int, ...],
                  dest_token: int, n_ctx: int, first_pos: int, limits: Thresholds) -> LayerAnatomy:
    import torch

    window = weights.layers[layer].sliding_window
    terms = query = None
    if method == "additive":
        fitting = [d for d in dest_positions if d < n_ctx]
        length = max([corpus.length] + [d + 1 for d in fitting])
        split = engine.additive_scores(weights, corpus.scale_mean, dest_token, length)
        allowed = engine.causal_mask(length, window)
        pattern = engine.softmax_rows(split.positional, allowed)
        terms, query, dests = split.terms, split.query, tuple(fitting)
    else:
        allowed = engine.causal_mask(corpus.length, window)
        pattern = engine.measured_pattern(corpus)
        dests = tuple(d for d in dest_positions if d < corpus.length and corpus.doc_count[d] > 0)
    size = corpus.length
    normaliser = engine.normaliser_samples(corpus, pattern[:, :size, :size], allowed[:size, :size])
    _, pairs = engine.duplicate_scores(corpus)
    estimate, low, high, n_docs = engine.bootstrap(*engine.document_sums(corpus, limits.score_from), limits.bootstrap, limits.seed)
    # The reported destinations' positional rows, the first position (sink) apart and the rest renormalised.
    per_dest = [engine.split_sink(engine.by_offset(pattern, dest)) for dest in dests]
    heads = []
    for head in range(pattern.shape[0]):
        head_masses = {name: _mean([float(engine.masses(rest)[name][head]) for _, rest in per_dest]) for name, _, _ in engine.BUCKETS}
        head_masses["sink"] = _mean([float(sink[head]) for sink, _ in per_dest])
        width50 = _mean([float(engine.widths(rest, 0.5)[head]) for _, rest in per_dest])
        width90 = _mean([float(engine.widths(rest, 0.9)[head]) for _, rest in per_dest])
        decay = _mean([float(engine.decay_ratio(rest)[head]) for _, rest in per_dest])
        values = torch.cat([sample[head, max(1, first_pos):] for _, sample in normaliser]) if normaliser else torch.zeros(0)
        median = float(values.median()) if values.numel() else float("nan")
        scores = {name: (float(estimate[i, head]), float(low[i, head]), float(high[i, head])) for i, name in enumerate(engine.SCORES)}
        verdict = classify(scores, limits)
        heads.append(HeadSummary(head, verdict.head_class, head_masses, width50, width90, decay, scores["duplicate"][0], median,
                                 scores, verdict, n_docs))
    return LayerAnatomy(layer, method, pattern, allowed, dests, tuple(heads), normaliser, pairs, corpus.scale_mean,
                        corpus.scale_std, corpus.n_scaled, terms, query)


def _mean(values: list[float]) -> float:
    finite = [value for value in values if value == value]
    return sum(finite) / len(finite) if finite else float("nan")
