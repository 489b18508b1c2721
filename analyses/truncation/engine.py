"""The torch work of the truncation analysis: full-context vs truncated-context residual cosines.

Sequences here are token id lists as the model sees them (BOS at 0 when prepended); an analysed
position p has its full-context residual compared with the residual of the same token when the
context is cut to its last k tokens (k = 1..k_max, the token itself included; BOS prepended
when the run prepends one). Both are mean-centred with the per-layer mean of the full-context
residuals over all analysed positions, then compared by cosine in float32.

Fast path: one window [BOS, t_s .. t_s+K-1] gives the context-k residual of token t_{s+k-1} at
window position k for every k at once, so every window of every document runs as one batched
[N, K+1] forward; full-context runs are batched right-padded (exact: the model is causal).
Cosines are reduced inside the hooks, so no residual stack is ever kept beyond one batch.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import check_cancel


@dataclass(frozen=True)
class DocTokens:
    """One document as the model sees it and the positions analysed in it."""

    input_id: int
    ids: tuple[int, ...]
    positions: tuple[int, ...]


def analysed_positions(n_tokens: int, bos_offset: int, min_context: int) -> tuple[int, ...]:
    """Positions with at least min_context earlier document tokens (BOS is not a document token)."""
    return tuple(range(bos_offset + min_context, n_tokens))


def _run_blocks(model, tokens, attention_mask, on_layer: Callable[[Any, int], None], cancel=None, tick=None) -> None:
    """Forward a batch, handing every block's resid_post to on_layer(resid, layer); stops after the
    last block (the bridge's stop_at_layer, the one early stop: no final norm or unembedding). After
    every block, cancel is checked and tick(layer) called (cancel and progress within a forward,
    which takes seconds at the default batch size on a CPU)."""

    def hook(resid, hook, layer):
        on_layer(resid, layer)
        check_cancel(cancel)
        if tick:
            tick(layer)
        return resid

    hooks = [(f"blocks.{layer}.hook_resid_post", functools.partial(hook, layer=layer)) for layer in range(model.n_layers)]
    model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, attention_mask=attention_mask, stop_at_layer=model.n_layers)


def _length_batches(docs: list[DocTokens], batch_tokens: int) -> list[list[DocTokens]]:
    """Documents of similar length grouped under the token budget (the model layer's policy)."""
    from analyses.model.tokens import length_batches

    return [[docs[i] for i in group] for group in length_batches([len(d.ids) for d in docs], batch_tokens)]


def length_batch_count(docs: list[DocTokens], batch_tokens: int) -> int:
    """Full-context forwards of the mean pass (its progress ticks once per block of each)."""
    return len(_length_batches(docs, batch_tokens))


def count_window_forwards(docs: list[DocTokens], k_max: int, with_bos: bool, batch_tokens: int) -> int:
    """Window forwards of the cosine pass (its progress ticks once per block of each)."""
    per_forward = max(1, batch_tokens // (k_max + int(with_bos)))
    batches = _length_batches(docs, batch_tokens)
    windows = [sum(len(window_starts(d, k_max)) for d in batch) for batch in batches]
    return sum(-(-n // per_forward) for n in windows)


def window_starts(doc: DocTokens, k_max: int) -> list[int]:
    """Start positions of the windows that hold every (analysed position, k) pair once."""
    return sorted({p - k + 1 for p in doc.positions for k in range(1, k_max + 1)})


def _padded(model, rows: list[list[int]], width: int):
    from analyses.model.tokens import pad_right

    return pad_right(model, rows, width)


def _full_residuals(model, batch: list[DocTokens], on_layer: Callable[[int, Any], None], cancel=None, tick=None) -> None:
    """One right-padded forward of full documents; on_layer(layer, resid [n analysed, d] float32)."""
    import torch

    tokens, mask = _padded(model, [list(d.ids) for d in batch], max(len(d.ids) for d in batch))
    rows = torch.tensor([r for r, d in enumerate(batch) for _ in d.positions], device=model.device)
    cols = torch.tensor([p for d in batch for p in d.positions], device=model.device)
    _run_blocks(model, tokens, mask, lambda resid, layer: on_layer(layer, resid[rows, cols].float()), cancel, tick)


def full_context_mean(model, docs: list[DocTokens], batch_tokens: int, cancel=None, tick=None):
    """Per-layer mean [n_layers, d] (float32, summed in float64) of the full-context residuals
    over every analysed position (BOS and unanalysed positions excluded)."""
    import torch

    total = torch.zeros((model.n_layers, model.d_model), dtype=torch.float64, device=model.device)
    count = 0
    for batch in _length_batches(docs, batch_tokens):
        check_cancel(cancel)

        def add(layer, resid):
            total[layer] += resid.double().sum(0)

        _full_residuals(model, batch, add, cancel, tick)
        count += sum(len(d.positions) for d in batch)
    return (total / max(count, 1)).float()


def _unit(x):
    import torch

    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-30)


def _keep_unit(full_unit, mean, layer, resid) -> None:
    full_unit[layer] = _unit(resid - mean[layer])


def _reduce_cosines(cos, full_unit, mean, offset: int, valid, rows, ks, resid, layer) -> None:
    """cos[row, layer, k] for the truncated windows of one forward, against the full-context states."""
    truncated = _unit(resid[:, offset:, :].float() - mean[layer])
    cos[rows, layer, ks] = (truncated[valid] * full_unit[layer][rows]).sum(-1)


def truncated_cosines(model, docs: list[DocTokens], k_max: int, bos_id: int | None, mean, batch_tokens: int, cancel=None, tick=None) -> dict[int, Any]:
    """Fast path: {input_id: cos [n positions, n_layers, k_max] float32 numpy}, k along the last axis."""
    import torch

    offset = 1 if bos_id is not None else 0
    width = k_max + offset
    results: dict[int, Any] = {}
    for batch in _length_batches(docs, batch_tokens):
        n_rows = sum(len(d.positions) for d in batch)
        full_unit = torch.zeros((model.n_layers, n_rows, model.d_model), dtype=torch.float32, device=model.device)

        _full_residuals(model, batch, functools.partial(_keep_unit, full_unit, mean), cancel)
        windows: list[list[int]] = []
        targets: list[list[int]] = []
        row_base = 0
        for doc in batch:
            row_of = {p: row_base + i for i, p in enumerate(doc.positions)}
            for start in window_starts(doc, k_max):
                piece = list(doc.ids[start : start + k_max])
                windows.append(([bos_id] if offset else []) + piece)
                targets.append([row_of.get(start + k, -1) if k < len(piece) else -1 for k in range(k_max)])
            row_base += len(doc.positions)
        cos = torch.zeros((n_rows, model.n_layers, k_max), dtype=torch.float32, device=model.device)
        per_forward = max(1, batch_tokens // width)
        for first in range(0, len(windows), per_forward):
            check_cancel(cancel)
            tokens, mask = _padded(model, windows[first : first + per_forward], width)
            target = torch.tensor(targets[first : first + per_forward], device=model.device)
            valid = target >= 0
            rows = target[valid]
            ks = torch.arange(k_max, device=model.device).expand_as(target)[valid]

            _run_blocks(model, tokens, mask, functools.partial(_reduce_cosines, cos, full_unit, mean, offset, valid, rows, ks), cancel, tick)
        cos_cpu = cos.cpu().numpy()
        row_base = 0
        for doc in batch:
            results[doc.input_id] = cos_cpu[row_base : row_base + len(doc.positions)]
            row_base += len(doc.positions)
        del full_unit
    return results
