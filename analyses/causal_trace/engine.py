"""Causal tracing engine: noise, the naive reference and the fast exact path.

Both paths return, per restored kind, a [T, n_layers] array of the answer probability averaged
over the noise samples. The naive path is one hooked forward per (kind, token, layer) cell with
the samples as the batch. The fast path runs the model block by block through the model layer's
adapter (exactly the model's own forward, on every family): it caches the clean and corrupted runs once, and for every token t runs one pipeline
over the layers in which each cell's rows join at the layer where they start, compute only the
positions t..T-1 (earlier positions are those of the corrupted run, whose keys and values are fed
in as a prefix), patch window kinds by editing the sublayer outputs, and unembed only the last
position. Noise goes on the token embeddings only (learned positions are added after it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import CancelEvent, Progress, check_cancel, no_progress

TRACE_KINDS = ("resid", "mlp", "attn")
HOOK_OF_KIND = {"mlp": "hook_mlp_out", "attn": "hook_attn_out"}
SITE_OF_KIND = {"mlp": "mlp_out", "attn": "attn_out"}


@dataclass(frozen=True)
class TraceSetup:
    """One prompt ready to trace: tokens [1, T], subject range [b, e), answer, noise [S, e-b, d]."""

    tokens: Any
    subject_range: tuple[int, int]
    answer_id: int
    noise: Any


@dataclass(frozen=True)
class TraceOutput:
    probs: dict  # kind -> numpy [T, n_layers], mean over samples of p(answer)
    high: float
    low: float


def noise_draws(samples: int, n_subject: int, d_model: int, rome_compatible: bool, seed: int, input_id: int) -> Any:
    """Standard-normal draws [S, e-b, d] in float64; ROME's mode reseeds RandomState(1) per trace."""
    import numpy as np

    if rome_compatible:
        return np.random.RandomState(1).randn(samples, n_subject, d_model)
    return np.random.default_rng([seed, input_id]).standard_normal((samples, n_subject, d_model))


def window_range(layer: int, n_layers: int, window: int) -> range:
    """Layers restored for a window cell centred on `layer`: [L - w//2, L - w//2 + w - 1], clipped."""
    start = layer - window // 2
    return range(max(0, start), min(n_layers, start + window))


def corrupt(clean_embed: Any, noise: Any, subject_range: tuple[int, int]) -> Any:
    """[S, T, d] embeddings with the noise added to the subject positions (in float64, as ROME)."""
    begin, end = subject_range
    samples = noise.shape[0]
    corrupted = clean_embed.expand(samples, -1, -1).clone()
    corrupted[:, begin:end] = (corrupted[:, begin:end].double() + noise.to(corrupted.device)).to(corrupted.dtype)
    return corrupted


def answer_probs(adapter, last_resid: Any, answer_id: int) -> Any:
    """p(answer) in float64 for final residuals at the last position, [B, d] -> [B]."""
    import torch

    logits = adapter.logits(last_resid[:, None, :])[:, 0].float()
    return torch.softmax(logits, dim=-1)[:, answer_id].double()


@dataclass
class RunStates:
    """Residual entering every block (index n_layers = final output), keys/values, sublayer outputs."""

    resid: list
    keys_values: dict
    outputs: dict  # (kind, layer) -> [B, T, d]


def forward_states(adapter, embeds: Any, capture: bool, cancel: CancelEvent | None = None) -> RunStates:
    """A full forward block by block (the model's own computation), keeping what the trace reuses;
    cancel is checked before every block."""
    from analyses.model.kv import PrefixCache

    cache = PrefixCache(record=True)
    context = adapter.context(embeds.shape[1], hidden=embeds)
    outputs: dict = {}
    resid = [embeds]
    hidden = embeds
    for layer in range(adapter.n_layers):
        check_cancel(cancel)
        edits = {}
        if capture:
            for kind, site in SITE_OF_KIND.items():
                edits[site] = _capture(outputs, kind, layer)
        hidden = adapter.block(layer, hidden, context, cache, edits=edits)
        resid.append(hidden)
    return RunStates(resid, cache.recorded, outputs)


def _capture(outputs: dict, kind: str, layer: int):
    def keep(tensor):
        outputs[(kind, layer)] = tensor.detach().clone()
        return tensor

    return keep


def _patch(rows: Any, value: Any):
    def write(tensor):
        tensor[rows, 0] = value
        return tensor

    return write


def batch_tokens_limit(model, seq_len: int) -> int:
    """Tokens per forward: the model layer's budget (fixed on the CPU, from free memory on CUDA)."""
    from analyses.model.tokens import activation_bytes_per_token, token_budget

    # K/V prefixes of every head for every earlier position come on top of the block's activations.
    return token_budget(model, activation_bytes_per_token(model, extra_floats=2 * model.bridge.cfg.n_heads * seq_len))


def _pipeline(adapter, t: int, cells: list, clean: RunStates, corrupted: RunStates, window: int, answer_id: int,
              cancel: CancelEvent | None = None) -> Any:
    """Mean p(answer) per cell for cells (kind, layer) restored at token t, in one layer pipeline;
    cancel is checked before every block."""
    import torch

    from analyses.model.kv import PrefixCache

    n_layers = adapter.n_layers
    samples = corrupted.resid[0].shape[0]
    starts = [layer + 1 if kind == "resid" else window_range(layer, n_layers, window).start for kind, layer in cells]
    hidden = None
    row_cell = torch.empty(0, dtype=torch.long)
    sample_index = torch.empty(0, dtype=torch.long)
    context = None
    sample_ids = torch.arange(samples)
    for layer in range(n_layers + 1):
        joining = [i for i, start in enumerate(starts) if start == layer]
        if joining:
            parts = []
            for i in joining:
                part = corrupted.resid[layer][:, t:].clone()
                if cells[i][0] == "resid":
                    part[:, 0] = clean.resid[layer][0, t]
                parts.append(part)
            new_rows = torch.cat(parts)
            hidden = new_rows if hidden is None else torch.cat([hidden, new_rows])
            row_cell = torch.cat([row_cell, torch.tensor(joining).repeat_interleave(samples)])
            sample_index = torch.cat([sample_index, sample_ids.repeat(len(joining))])
        if layer == n_layers or hidden is None:
            continue
        check_cancel(cancel)
        if context is None:
            context = adapter.context(hidden.shape[1], first_pos=t, hidden=hidden)
        edits = {}
        for kind, site in SITE_OF_KIND.items():
            restored = torch.tensor([c[0] == kind and layer in window_range(c[1], n_layers, window) for c in cells])[row_cell]
            if bool(restored.any()):
                edits[site] = _patch(restored.nonzero()[:, 0].to(hidden.device), clean.outputs[(kind, layer)][0, t])
        prefixes = {}
        if t > 0:
            keys, values = corrupted.keys_values[layer]
            device_index = sample_index.to(keys.device)
            prefixes[layer] = (keys[device_index, :, :t], values[device_index, :, :t])
        hidden = adapter.block(layer, hidden, context, PrefixCache(prefixes), edits=edits)
    probs = answer_probs(adapter, hidden[:, -1], answer_id).cpu()
    sums = torch.zeros(len(cells), dtype=torch.float64).index_add_(0, row_cell, probs)
    return (sums / samples).numpy()


def trace_fast(model, setup: TraceSetup, kinds: tuple[str, ...], window: int, progress: Progress = no_progress, cancel: CancelEvent | None = None, batch_tokens: int | None = None) -> TraceOutput:
    import numpy as np
    import torch

    from analyses.model.adapters import adapter_for

    adapter = adapter_for(model)
    tokens = setup.tokens
    begin, _ = setup.subject_range
    seq_len, n_layers, samples = tokens.shape[1], model.n_layers, setup.noise.shape[0]
    limit = batch_tokens or batch_tokens_limit(model, seq_len)
    with torch.inference_mode():
        clean_embed = adapter.token_embed(tokens)
        progress(0, 1, "clean and corrupted runs")
        clean = forward_states(adapter, adapter.add_positions(clean_embed), capture=True, cancel=cancel)
        corrupted = forward_states(adapter, adapter.add_positions(corrupt(clean_embed, setup.noise, setup.subject_range)), capture=False, cancel=cancel)
        high = float(answer_probs(adapter, clean.resid[-1][:, -1], setup.answer_id)[0])
        low = float(answer_probs(adapter, corrupted.resid[-1][:, -1], setup.answer_id).mean())
        probs = {kind: np.full((seq_len, n_layers), low) for kind in kinds}
        # A resid cell at the last layer runs no block: before the last token it is the corrupted
        # run (the last position does not see a later state); at the last token it is computed.
        last_resid = ("resid", n_layers - 1)
        cells_all = [(kind, layer) for kind in kinds for layer in range(n_layers) if (kind, layer) != last_resid]
        # Progress in cells (kind, layer, token) traced: each pipeline reports the cells it runs.
        n_cells = len(cells_all) * (seq_len - begin) + int("resid" in kinds)
        done = 0
        for t in range(begin, seq_len):
            per_chunk = max(1, limit // max(1, samples * (seq_len - t)))
            cells = cells_all + [last_resid] if t == seq_len - 1 and "resid" in kinds else cells_all
            for start in range(0, len(cells), per_chunk):
                check_cancel(cancel)
                chunk = cells[start : start + per_chunk]
                progress(done, n_cells, f"token {t + 1}/{seq_len}: cells {start + 1}-{start + len(chunk)}/{len(cells)} ({done}/{n_cells} cells)")
                means = _pipeline(adapter, t, chunk, clean, corrupted, window, setup.answer_id, cancel)
                done += len(chunk)
                for (kind, layer), value in zip(chunk, means):
                    probs[kind][t, layer] = value
    return TraceOutput(probs, high, low)
