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

from analyses.core.contract import CancelEvent, Progress

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


def add_document(entry: LayerCorpus, layer_weights, resid, ids, first_pos: int):
    """Add one document's layer input resid [T, d] (real positions only) with token ids [T] to the
    sums; returns its residual log-normaliser [H, T]."""
    import torch

    from analyses.model.weights import attention_scores, norm_scale

    scales = norm_scale(layer_weights.ln1, resid[first_pos:]).double()
    entry.scale_sum += float(scales.sum())
    entry.scale_sq_sum += float((scales ** 2).sum())
    entry.n_scaled += int(scales.numel())
    # Scores from the weights: the bridge's hook_attn_scores is not the scores on every family.
    scores, allowed = attention_scores(layer_weights, resid)
    size = scores.shape[-1]
    pattern = scores.softmax(-1)
    entry.attn_sum[:, :size, :size] += pattern
    entry.doc_count[:size] += 1
    duplicate = (ids[:, None] == ids[None, :]) & allowed & ~torch.eye(size, dtype=torch.bool)
    entry.dup_count[:size, :size] += duplicate
    entry.dup_attn_sum[:, :size, :size] += pattern * duplicate
    seen = scores.masked_fill(~allowed, float("nan"))
    return torch.logsumexp(scores, -1) - seen.nanmean(-1)


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
            logz[layer][index] = add_document(corpus[layer], weights.layers[layer], resid[row, :size], ids[index], first_pos)

    hooks = [(f"blocks.{layer}.hook_resid_pre", functools.partial(on_resid, layer=layer)) for layer in layers]
    (runner or run_hooked_batches)(model, token_rows, hooks, progress, cancel, stop_at_layer=max(layers) + 1)
    for layer in layers:
        corpus[layer].residual_logz = [(set_names[index], logz[layer][index]) for index in sorted(logz[layer])]
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
