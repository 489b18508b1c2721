"""The computations of first-layer-heads: one hooked pass over the corpus, the positional pattern
(exact additive decomposition or measured over content), masses, widths and the normaliser.

Conventions: positions count from the model's first input token (BOS included when prepended);
offset = destination - key, 0 is the token itself. A positional pattern is [H, T, T]
(head, destination, key), rows summing to 1 over the keys the head can see.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from analyses.core.contract import CancelEvent, Progress, check_cancel

BUCKETS = (("self", 0, 0), ("prev_1_5", 1, 5), ("prev_6_50", 6, 50), ("beyond_50", 51, None))


@dataclass
class LayerCorpus:
    """Sums over the corpus for one layer (filled document by document, then read)."""

    n_heads: int
    length: int
    scale_sum: float = 0.0
    scale_sq_sum: float = 0.0
    n_scaled: int = 0
    attn_sum: Any = None
    doc_count: Any = None
    dup_attn_sum: Any = None
    dup_count: Any = None
    residual_logz: list = field(default_factory=list)
    documents: list = field(default_factory=list)

    @property
    def scale_mean(self) -> float:
        return self.scale_sum / max(1, self.n_scaled)

    @property
    def scale_std(self) -> float:
        mean = self.scale_mean
        return max(0.0, self.scale_sq_sum / max(1, self.n_scaled) - mean * mean) ** 0.5


def _new_layer(n_heads: int, length: int) -> LayerCorpus:
    import torch

    corpus = LayerCorpus(n_heads, length)
    corpus.attn_sum = torch.zeros(n_heads, length, length, dtype=torch.float64)
    corpus.dup_attn_sum = torch.zeros(n_heads, length, length, dtype=torch.float64)
    corpus.doc_count = torch.zeros(length, dtype=torch.float64)
    corpus.dup_count = torch.zeros(length, length, dtype=torch.float64)
    return corpus


ROW_SCORES = ("sink", "previous", "local", "contextual", "averaging")


@dataclass(frozen=True)
class DocumentScores:
    """One document's real attention, per destination row: rows [len(ROW_SCORES), H, T] (nan where
    a row has no such score; see row_scores); duplicate pairs (destination, key) [2, P] and the
    attention on them [H, P], scored against the corpus baseline once every document is in."""

    rows: Any
    dup_cells: Any
    dup_attn: Any
    scale_sum: float = 0.0  # the document's ln1 scales (first analysed position on): sum, sum of squares, count
    scale_sq_sum: float = 0.0
    n_scaled: int = 0
    pooled: Any = None  # row_pools(rows, score_from) when rows is None (a document rebuilt from a shard)


def row_pools(rows, score_from: int) -> tuple[Any, Any]:
    """(sum, count) [len(ROW_SCORES), H] of a document's row scores over destinations from score_from."""
    rows = rows[:, :, score_from:]
    return rows.nan_to_num(0.0).sum(-1), (~rows.isnan()).sum(-1).double()


def row_scores(pattern) -> Any:
    """Per head and destination row d of a real pattern [H, T, T]: [len(ROW_SCORES), H, T].
    sink: attention on key 0 (BOS, or the first token); the rest are over keys 1..d renormalised to
    sum to 1 (the sink excluded): previous = weight on offset 1, local = self + previous 5,
    contextual = mass on offsets 6..50 minus a uniform row's (count / d), averaging = entropy over
    log d (1 = uniform). Row 0 is nan; previous and averaging need d >= 2."""
    import torch

    pattern = pattern.double()
    heads, size, _ = pattern.shape
    dest = torch.arange(size)
    offsets = dest[:, None] - dest[None, :]
    after_sink = (dest[None, :] >= 1) & (offsets >= 0)
    sink = pattern[:, :, 0]
    rest = pattern.masked_fill(~after_sink, 0.0) / (1 - sink).clamp(min=1e-30)[..., None]
    previous = (rest * ((offsets == 1) & after_sink)).sum(-1)
    local = (rest * ((offsets <= 5) & after_sink)).sum(-1)
    middle = (offsets >= 6) & (offsets <= 50) & after_sink
    contextual = (rest * middle).sum(-1) - middle.sum(-1) / dest.clamp(min=1)
    entropy = -(rest * rest.clamp(min=1e-300).log()).sum(-1)
    averaging = entropy / dest.double().clamp(min=2).log()
    out = torch.stack([sink, previous, local, contextual, averaging])
    out[:, :, 0] = float("nan")
    out[[1, 4], :, :2] = float("nan")
    return out


def add_document(entry: LayerCorpus, layer_weights, resid, ids, first_pos: int):
    """Add one document's layer input resid [T, d] (real positions only) with token ids [T] to the
    sums; returns its residual log-normaliser [H, T] and its DocumentScores."""
    import torch

    from analyses.model.weights import attention_scores, norm_scale

    scales = norm_scale(layer_weights.ln1, resid[first_pos:]).double()
    scale_sum, scale_sq_sum, n_scaled = float(scales.sum()), float((scales ** 2).sum()), int(scales.numel())
    entry.scale_sum += scale_sum
    entry.scale_sq_sum += scale_sq_sum
    entry.n_scaled += n_scaled
    # Scores from the weights: the bridge's hook_attn_scores is not the scores on every family.
    scores, allowed = attention_scores(layer_weights, resid)
    size = scores.shape[-1]
    pattern = scores.softmax(-1)
    entry.attn_sum[:, :size, :size] += pattern
    entry.doc_count[:size] += 1
    duplicate = (ids[:, None] == ids[None, :]) & allowed & ~torch.eye(size, dtype=torch.bool)
    entry.dup_count[:size, :size] += duplicate
    entry.dup_attn_sum[:, :size, :size] += pattern * duplicate
    cells = duplicate.nonzero().T
    document = DocumentScores(row_scores(pattern), cells, pattern[:, cells[0], cells[1]].double(), scale_sum, scale_sq_sum, n_scaled)
    seen = scores.masked_fill(~allowed, float("nan"))
    return torch.logsumexp(scores, -1) - seen.nanmean(-1), document


def collect(model, weights, token_rows: list, set_names: list[str], layers: tuple[int, ...], first_pos: int,
            progress: Progress, cancel: CancelEvent, runner=None) -> dict[int, LayerCorpus]:
    """Length-batched forwards stopped after the last analysed layer, filling the sums document by
    document from each one's real positions (runner: default run_hooked_batches at the model's
    budget; run_hooked_documents is the one-by-one reference). residual_logz is in document order."""
    from analyses.model.hooks import run_hooked_batches

    length = max(int(tokens.shape[-1]) for tokens in token_rows)
    corpus = {layer: _new_layer(weights.layers[layer].n_heads, length) for layer in layers}
    ids = [tokens.reshape(-1).cpu() for tokens in token_rows]
    logz: dict[int, dict[int, Any]] = {layer: {} for layer in layers}

    def on_resid(resid, batch, layer: int) -> None:
        for row, (index, size) in enumerate(zip(batch.indices, batch.lengths)):
            check_cancel(cancel)  # a document's scores and patterns take a fraction of a second each
            logz[layer][index] = add_document(corpus[layer], weights.layers[layer], resid[row, :size], ids[index], first_pos)

    hooks = [(f"blocks.{layer}.hook_resid_pre", functools.partial(on_resid, layer=layer)) for layer in layers]
    (runner or run_hooked_batches)(model, token_rows, hooks, progress, cancel, stop_at_layer=max(layers) + 1)
    for layer in layers:
        corpus[layer].residual_logz = [(set_names[index], logz[layer][index][0]) for index in sorted(logz[layer])]
        corpus[layer].documents = [logz[layer][index][1] for index in sorted(logz[layer])]
    return corpus


def linear_embeddings(weights, layer: int, scale: float) -> tuple[Any, Any, Any]:
    """Layer ln1 treated as linear at scale: (token part [V, d], position part [n_ctx, d], bias [d])."""
    import torch

    ln = weights.layers[layer].ln1
    centre = ln.kind == "layernorm"

    def part(rows):
        rows = rows - rows.mean(-1, keepdim=True) if centre else rows
        return rows / scale * ln.weight

    bias = ln.bias if ln.bias is not None else torch.zeros_like(ln.weight)
    return part(weights.W_E), part(weights.W_pos), bias


def expand_kv(tensor, layer_weights):
    """[n_kv, ...] -> [n_heads, ...]: query head i reads KV head i // group."""
    return tensor.repeat_interleave(layer_weights.n_heads // layer_weights.n_kv_heads, 0)


@dataclass(frozen=True)
class Additive:
    """The additive split of layer-0 scores for learned absolute positions (ln1 at its mean scale).

    positional [H, T, T]: the score's key-position part for the fixed destination token at each
    destination (token-position + position-position + query-bias-position terms); terms: the
    same split into those three, each [H, T, T]; query [H, T, h]: that token's query."""

    positional: Any
    terms: dict
    query: Any


def additive_scores(weights, scale: float, dest_token: int, length: int) -> Additive:
    import torch

    layer = weights.layers[0]
    tokens_lin, positions_lin, bias = linear_embeddings(weights, 0, scale)
    positions_lin = positions_lin[:length]
    key_positions = expand_kv(torch.einsum("td,kdh->kth", positions_lin, layer.W_K), layer)
    token_query = torch.einsum("d,ndh->nh", tokens_lin[dest_token], layer.W_Q)
    position_query = torch.einsum("td,ndh->nth", positions_lin, layer.W_Q)
    bias_query = torch.einsum("d,ndh->nh", bias, layer.W_Q) + (layer.b_Q if layer.b_Q is not None else 0)
    terms = {
        "token_position": torch.einsum("nh,nsh->ns", token_query, key_positions)[:, None, :].expand(-1, length, -1),
        "position_position": torch.einsum("ndh,nsh->nds", position_query, key_positions),
        "query_bias_position": torch.einsum("nh,nsh->ns", bias_query, key_positions)[:, None, :].expand(-1, length, -1),
    }
    terms = {name: value * layer.attn_scale for name, value in terms.items()}
    query = token_query[:, None] + position_query + bias_query[:, None]
    return Additive(sum(terms.values()), terms, query)


def causal_mask(length: int, window: int | None) -> Any:
    import torch

    offsets = torch.arange(length)[:, None] - torch.arange(length)[None, :]
    allowed = offsets >= 0
    return allowed & (offsets < window) if window is not None else allowed


def softmax_rows(scores, allowed):
    return scores.double().masked_fill(~allowed, float("-inf")).softmax(-1)


def measured_pattern(corpus: LayerCorpus) -> Any:
    """Mean real attention per (head, destination, key) over the documents reaching that destination."""
    counts = corpus.doc_count.clamp(min=1)[None, :, None]
    return corpus.attn_sum / counts


def by_offset(pattern, dest: int):
    """Row dest of a pattern [H, T, T] as weights per offset 0..dest: [H, dest + 1]."""
    return pattern[:, dest, : dest + 1].flip(-1)


def masses(weights_by_offset) -> dict[str, Any]:
    """Mass per bucket [H] from weights per offset [H, O]."""
    out = {}
    for name, low, high in BUCKETS:
        out[name] = weights_by_offset[:, low: (high + 1 if high is not None else None)].sum(-1)
    return out


def widths(weights_by_offset, share: float) -> Any:
    """The smallest offset whose cumulative mass (from offset 0) reaches share of the total, per head."""
    import torch

    cumulative = weights_by_offset.cumsum(-1) / weights_by_offset.sum(-1, keepdim=True).clamp(min=1e-30)
    reached = cumulative >= share - 1e-12
    return torch.where(reached.any(-1), reached.float().argmax(-1), torch.full_like(reached[:, 0], -1, dtype=torch.long))


def decay_ratio(weights_by_offset) -> Any:
    """Mean weight per offset on 1..5 over the mean per offset on 6..50 (nan when 6..50 is out of reach)."""
    near = weights_by_offset[:, 1:6].mean(-1)
    far = weights_by_offset[:, 6:51]
    if far.shape[-1] == 0:
        return near * float("nan")
    return near / far.mean(-1).clamp(min=1e-30)


def duplicate_scores(corpus: LayerCorpus) -> tuple[Any, int]:
    """Per head: attention on earlier copies of the destination token over what the same
    (destination, key) cells get when the tokens differ; and the number of duplicate pairs."""
    other_count = (corpus.doc_count[:, None] - corpus.dup_count).clamp(min=0)
    baseline = (corpus.attn_sum - corpus.dup_attn_sum) / other_count.clamp(min=1)
    usable = (corpus.dup_count > 0) & (other_count > 0)
    observed = (corpus.dup_attn_sum * usable).sum((-1, -2))
    expected = (baseline * corpus.dup_count * usable).sum((-1, -2))
    return observed / expected.clamp(min=1e-30), int((corpus.dup_count * usable).sum())


def normaliser_samples(corpus: LayerCorpus, pattern, allowed) -> list[tuple[str, Any]]:
    """Per document (set name, N [H, T_doc]): the softmax denominator with the positional part
    divided out, N(d) = sum_s pi(d, s) exp(c(d, s)), the content c = score - log pi centred over
    the keys; N = 1 when the content is constant."""
    import torch

    log_pattern = pattern.clamp(min=1e-300).log().masked_fill(~allowed, float("nan"))
    mean_log_pattern = log_pattern.nanmean(-1)
    samples = []
    for set_name, residual in corpus.residual_logz:
        size = residual.shape[-1]
        samples.append((set_name, torch.exp(residual + mean_log_pattern[:, :size])))
    return samples


SCORES = (*ROW_SCORES, "duplicate")


def split_sink(weights_by_offset) -> tuple[Any, Any]:
    """(sink [H], rest [H, O - 1]) of weights per offset [H, O]: the weight on the first position
    (the largest offset) and the others renormalised to sum to 1 without it."""
    sink = weights_by_offset[:, -1]
    return sink, weights_by_offset[:, :-1] / (1 - sink).clamp(min=1e-30)[:, None]


def document_sums(corpus: LayerCorpus, score_from: int) -> tuple[Any, Any]:
    """Per document, head and score (SCORES): (numerator, denominator) [N, len(SCORES), H], so that a
    score over any set of documents is sum(numerator) / sum(denominator). Row scores: their sum and
    count over destination rows d >= score_from; duplicate: attention on earlier copies and what the
    corpus gives the same (destination, key) cells when the tokens differ (as duplicate_scores)."""
    import torch

    other_count = (corpus.doc_count[:, None] - corpus.dup_count).clamp(min=0)
    baseline = (corpus.attn_sum - corpus.dup_attn_sum) / other_count.clamp(min=1)
    usable = (corpus.dup_count > 0) & (other_count > 0)
    numerators, denominators = [], []
    for document in corpus.documents:
        sums, counts = row_pools(document.rows, score_from) if document.rows is not None else document.pooled
        dest, key = document.dup_cells
        keep = usable[dest, key]
        observed = document.dup_attn[:, keep].sum(-1)
        expected = baseline[:, dest[keep], key[keep]].sum(-1)
        numerators.append(torch.cat([sums, observed[None]]))
        denominators.append(torch.cat([counts, expected[None]]))
    if not numerators:
        empty = torch.zeros(0, len(SCORES), corpus.n_heads, dtype=torch.float64)
        return empty, empty.clone()
    return torch.stack(numerators), torch.stack(denominators)


BOOTSTRAP_BLOCK = 1 << 20  # gathered values per block of resamplings (8 MiB of float64)


def bootstrap(numerators, denominators, samples: int, seed: int) -> tuple[Any, Any, Any, int]:
    """(estimate, low, high [len(SCORES), H], documents used): the pooled ratio over the documents
    that have rows, and the 2.5 and 97.5 percentiles of the same ratio over `samples` resamplings of
    those documents with replacement (torch generator seeded with seed). Under two documents the
    interval is nan: one document says nothing about the spread between documents."""
    import torch

    used = denominators[:, 0, 0] > 0 if denominators.shape[0] else torch.zeros(0, dtype=torch.bool)
    numerators, denominators = numerators[used], denominators[used]
    n_docs = int(used.sum())
    nan = torch.full(numerators.shape[1:], float("nan"), dtype=torch.float64)
    if n_docs == 0:
        return nan, nan.clone(), nan.clone(), 0
    estimate = numerators.sum(0) / denominators.sum(0)
    estimate = estimate.masked_fill(denominators.sum(0) <= 0, float("nan"))
    if n_docs < 2:
        return estimate, nan, nan.clone(), n_docs
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, n_docs, (samples, n_docs), generator=generator)
    # The resampled sums a block of resamplings at a time: the gathered [samples, n_docs, scores, H]
    # would grow with the square of the documents (about 430 MB at 1,000 documents); the same sums.
    block = max(1, BOOTSTRAP_BLOCK // max(1, numerators[0].numel() * n_docs))
    ratios = []
    for start in range(0, samples, block):
        chosen = picks[start: start + block]
        totals = denominators[chosen].sum(1)
        ratios.append((numerators[chosen].sum(1) / totals).masked_fill(totals <= 0, float("nan")))
    ratios = torch.cat(ratios)
    low, high = torch.nanquantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
    return estimate, low, high, n_docs
