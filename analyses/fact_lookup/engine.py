"""Batched forwards over an entity table: tokenising with the name's token span, one padded pass
per site capturing states at the last name token and the final position, mean ablation of a
component at the last name token, and hiding the earlier name tokens from the last one.

Rows are right-padded with an attention mask (exact on every family); every capture is written
straight into one preallocated tensor per site, indexed [layer, entity, ...].
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import check_cancel
from analyses.core.errors import BadInput


@dataclass(frozen=True)
class Encoded:
    """Token ids per prompt and, per prompt, the first and last token of the name (inclusive)."""

    ids: tuple[tuple[int, ...], ...]
    first_name_pos: tuple[int, ...]
    last_name_pos: tuple[int, ...]


def encode(tokenizer: Any, prompts: Sequence[str], spans: Sequence[tuple[int, int]], bos_token_id: int | None) -> Encoded:
    """Tokenise each prompt (no special tokens; the BOS the model layer chose, if any) and find the
    name's tokens from the character offsets: those whose span overlaps the name's characters."""
    all_ids, firsts, lasts = [], [], []
    bos = [bos_token_id] if bos_token_id is not None else []
    for prompt, (start, end) in zip(prompts, spans):
        encoding = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        inside = [pos for pos, (a, b) in enumerate(encoding["offset_mapping"]) if a < end and b > start]
        if not inside:
            raise BadInput(f"no token of the name in {prompt!r}")
        if inside[-1] == len(encoding["input_ids"]) - 1:
            raise BadInput(f"the template must go on after the name: {prompt!r}")
        all_ids.append(tuple(bos + list(encoding["input_ids"])))
        firsts.append(inside[0] + len(bos))
        lasts.append(inside[-1] + len(bos))
    return Encoded(tuple(all_ids), tuple(firsts), tuple(lasts))


def answer_token_ids(tokenizer: Any, values: Sequence[str]) -> list[int]:
    """The first token of " value" for each attribute value; BadInput when two values share it."""
    ids = []
    for value in values:
        pieces = tokenizer.encode(" " + value, add_special_tokens=False)
        ids.append(pieces[0])
    if len(set(ids)) < len(ids):
        raise BadInput(f"attribute values {', '.join(values)} do not all start with different tokens")
    return ids


@dataclass(frozen=True)
class EntityBatch:
    """One padded batch: global row indices, tokens [B, T], mask [B, T], and per row the
    first and last name position and the final position (tensors [B])."""

    rows: Any
    tokens: Any
    mask: Any
    first_name: Any
    last_name: Any
    final: Any


def make_batches(encoded: Encoded, rows: Sequence[int], batch_size: int, pad_id: int, device: str) -> list[EntityBatch]:
    import torch

    batches = []
    for begin in range(0, len(rows), batch_size):
        chunk = list(rows[begin : begin + batch_size])
        width = max(len(encoded.ids[row]) for row in chunk)
        tokens = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for slot, row in enumerate(chunk):
            ids = encoded.ids[row]
            tokens[slot, : len(ids)] = torch.tensor(ids)
            mask[slot, : len(ids)] = 1
        batches.append(EntityBatch(
            torch.tensor(chunk), tokens.to(device), mask.to(device),
            torch.tensor([encoded.first_name_pos[row] for row in chunk]),
            torch.tensor([encoded.last_name_pos[row] for row in chunk]),
            torch.tensor([len(encoded.ids[row]) - 1 for row in chunk]),
        ))
    return batches


Hooks = Callable[[EntityBatch], list]


def run_batches(model, batches: list[EntityBatch], hooks_of: Hooks, answer_ids: Sequence[int] | None, cancel: Any,
                tick: Callable[[], None], stop_at_layer: int | None = None, top1: list | None = None) -> Any:
    """One hooked forward per batch; with answer_ids, the final-position log-probabilities of the
    answer tokens [N rows in batch order, n_answers] (float64), else None. With a list top1 (and
    answer_ids), appends per batch the model's own top-1 over the whole vocabulary at the final
    position: (token ids [B], log-probabilities [B] float64)."""
    import torch

    outputs = []
    with torch.inference_mode():
        for batch in batches:
            check_cancel(cancel)
            # The bridge fails when asked to stop after the last block; that is a full forward anyway.
            kwargs = {"stop_at_layer": stop_at_layer} if stop_at_layer is not None and stop_at_layer < model.n_layers else {}
            logits = model.bridge.run_with_hooks(batch.tokens, attention_mask=batch.mask, fwd_hooks=hooks_of(batch), use_cache=False, **kwargs)
            if answer_ids is not None:
                final = logits[torch.arange(len(batch.rows)), batch.final].double().log_softmax(-1)
                outputs.append(final[:, list(answer_ids)].cpu())
                if top1 is not None:
                    best, best_id = final.max(-1)
                    top1.append((best_id.cpu(), best.cpu()))
            tick()
    return torch.cat(outputs) if outputs else None


def capture_hook(target: Any, layer: int | None, batch: EntityBatch, position: str) -> Callable:
    """A hook writing act[b, pos_b] of a [B, T, ...] activation into target[layer, rows] (or target[rows])."""
    import torch

    def hook(act, hook, layer=layer):
        picked = act[torch.arange(act.shape[0]), getattr(batch, position)].to(target.dtype).cpu()
        if layer is None:
            target[batch.rows] = picked
        else:
            target[layer, batch.rows] = picked
    return hook


def name_attention_hook(target: Any, layer: int, batch: EntityBatch, query: str, earlier_only: bool) -> Callable:
    """A hook on a pattern [B, H, T, T] writing, per head, the summed attention from the query
    position to the name tokens (only those before the last one when earlier_only) into target[layer, rows]."""
    import torch

    def hook(pattern, hook):
        rows = torch.arange(pattern.shape[0])
        weights = pattern[rows, :, getattr(batch, query)].float().cpu()  # [B, H, T]
        keys = torch.arange(pattern.shape[-1])[None, :]
        end = batch.last_name if earlier_only else batch.last_name + 1
        inside = (keys >= batch.first_name[:, None]) & (keys < end[:, None])
        target[layer, batch.rows] = (weights * inside[:, None, :]).sum(-1)
    return hook


def hide_name_hook(batch: EntityBatch) -> Callable:
    """A pattern hook: the last name token no longer sees the earlier name tokens (their weights
    zeroed and the row renormalised, as if their scores were -inf)."""
    import torch

    def hook(pattern, hook):
        pattern = pattern.clone()
        rows = torch.arange(pattern.shape[0])
        last = batch.last_name.to(pattern.device)
        keys = torch.arange(pattern.shape[-1], device=pattern.device)[None, :]
        hidden = (keys >= batch.first_name.to(pattern.device)[:, None]) & (keys < last[:, None])
        query_rows = pattern[rows, :, last] * (~hidden)[:, None, :]
        pattern[rows, :, last] = query_rows / query_rows.sum(-1, keepdim=True).clamp_min(1e-30)
        return pattern
    return hook


def replace_hook(value: Any, batch: EntityBatch) -> Callable:
    """A hook replacing act[b, last_name_b] with value [d] (mean ablation at the last name token)."""
    import torch

    def hook(act, hook):
        act = act.clone()
        act[torch.arange(act.shape[0]), batch.last_name.to(act.device)] = value.to(act.dtype).to(act.device)
        return act
    return hook


SITE_HOOKS = {"resid_post": "blocks.{layer}.hook_resid_post", "attn_out": "blocks.{layer}.hook_attn_out", "mlp_out": "blocks.{layer}.hook_mlp_out"}
NEURON_HOOK = "blocks.{layer}.mlp.out.hook_in"


def hooks_for(spec: list[tuple[str, Callable]]) -> Hooks:
    """Hooks of a batch from (hook name, factory(batch) -> hook) pairs."""
    return lambda batch: [(name, factory(batch)) for name, factory in spec]


def capture_spec(targets: dict[str, Any], n_layers: int) -> list[tuple[str, Callable]]:
    """Hook factories writing every requested site (keys of SITE_HOOKS, "neurons", "concat",
    "final_attn", "z", "final_resid") into its target tensor."""
    spec: list[tuple[str, Callable]] = []
    for layer in range(n_layers):
        for site, template in SITE_HOOKS.items():
            if site in targets:
                spec.append((template.format(layer=layer), functools.partial(capture_hook, targets[site], layer, position="last_name")))
        if "neurons" in targets:
            spec.append((NEURON_HOOK.format(layer=layer), functools.partial(capture_hook, targets["neurons"], layer, position="last_name")))
        pattern = f"blocks.{layer}.attn.hook_pattern"
        if "concat" in targets:
            spec.append((pattern, functools.partial(name_attention_hook, targets["concat"], layer, query="last_name", earlier_only=True)))
        if "final_attn" in targets:
            spec.append((pattern, functools.partial(name_attention_hook, targets["final_attn"], layer, query="final", earlier_only=False)))
        if "z" in targets:
            spec.append((f"blocks.{layer}.attn.hook_z", functools.partial(capture_hook, targets["z"], layer, position="final")))
    if "final_resid" in targets:
        spec.append((f"blocks.{n_layers - 1}.hook_resid_post", functools.partial(capture_hook, targets["final_resid"], None, position="final")))
    return spec
