"""Per-layer anatomy of the attention heads from the corpus sums: pattern, masses, widths,
duplicate-token score, normaliser and class. Shared by first-layer-heads and contextual-neurons."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.first_layer_heads import engine

CLASSES = ("duplicate-token", "detokenization", "contextual", "other")


@dataclass(frozen=True)
class Thresholds:
    local_mass: float
    duplicate: float
    contextual_min_width: int
    contextual_decay: float
    contextual_max_far: float


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


def classify(masses: dict, width90: float, decay: float, duplicate: float, limits: Thresholds) -> str:
    """duplicate-token, then detokenization (self + previous 5), then contextual (a decaying
    pattern reaching past 5 tokens, mostly within 50), else other."""
    if duplicate >= limits.duplicate:
        return "duplicate-token"
    if masses["self"] + masses["prev_1_5"] >= limits.local_mass:
        return "detokenization"
    if width90 >= limits.contextual_min_width and decay >= limits.contextual_decay and masses["beyond_50"] <= limits.contextual_max_far:
        return "contextual"
    return "other"


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
    duplicate, pairs = engine.duplicate_scores(corpus)
    per_dest = [engine.by_offset(pattern, dest) for dest in dests]
    heads = []
    for head in range(pattern.shape[0]):
        head_masses = {name: _mean([float(engine.masses(row)[name][head]) for row in per_dest]) for name, _, _ in engine.BUCKETS}
        width50 = _mean([float(engine.widths(row, 0.5)[head]) for row in per_dest])
        width90 = _mean([float(engine.widths(row, 0.9)[head]) for row in per_dest])
        decay = _mean([float(engine.decay_ratio(row)[head]) for row in per_dest])
        values = torch.cat([sample[head, max(1, first_pos):] for _, sample in normaliser]) if normaliser else torch.zeros(0)
        median = float(values.median()) if values.numel() else float("nan")
        head_class = classify(head_masses, width90, decay, float(duplicate[head]), limits)
        heads.append(HeadSummary(head, head_class, head_masses, width50, width90, decay, float(duplicate[head]), median))
    return LayerAnatomy(layer, method, pattern, allowed, dests, tuple(heads), normaliser, pairs, corpus.scale_mean,
                        corpus.scale_std, corpus.n_scaled, terms, query)


def _mean(values: list[float]) -> float:
    finite = [value for value in values if value == value]
    return sum(finite) / len(finite) if finite else float("nan")
