"""Hooked forwards over whole documents: the tokens of each input as the model sees them, and
hooked forwards over documents batched by length under a token budget (the one batching policy
of analyses/model/tokens.py: right padding, the model's pad id, an attention mask), with progress
and cancel after every block. ``run_hooked_documents`` is the reference: one unpadded forward per
document, no mask.

A hook here is ``(name, fn(activation, batch))``: fn gets the activation and the DocumentBatch of
that forward, whose rows are right-padded. Under the causal mask no real position ever sees a pad,
so whatever a real position computes is the document's own; but every per-position statistic
must drop the pad positions (``DocumentBatch.keep`` / ``DocumentBatch.real``), and a pattern's
pad queries with them.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from analyses.core.contract import CancelEvent, Input, Progress, check_cancel

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel

BatchHook = tuple[str, Callable[[Any, "DocumentBatch"], None]]
# run_hooked_batches (optionally with batch_tokens / stop_at_layer bound) or run_hooked_documents.
Runner = Callable[..., None]


def document_tokens(model: LoadedModel, inputs: list[Input], prepend_bos: str) -> list:
    """Token ids [1, T] per input, cut to its meta max_tokens and to the model's context."""
    return [model.to_tokens(item.text, prepend_bos=prepend_bos, max_tokens=item.meta.get("max_tokens")) for item in inputs]


@dataclass(frozen=True)
class DocumentBatch:
    """The documents of one forward: their indices in the token rows (in row order), their real
    lengths, and the padded width. Row r holds real tokens at positions 0..lengths[r]-1."""

    indices: tuple[int, ...]
    lengths: tuple[int, ...]
    width: int

    @property
    def padded(self) -> bool:
        return min(self.lengths) < self.width

    def real(self, start: int = 0, device: Any = None) -> Any:
        """bool [B, width - start]: which positions start..width-1 of every row are real tokens."""
        import torch

        positions = torch.arange(start, self.width, device=device)
        return positions[None, :] < torch.tensor(self.lengths, device=device)[:, None]

    def keep(self, values: Any, start: int = 0) -> Any:
        """The real positions of per-position values [B, width - start, ...] (positions start..):
        values itself when no row is padded, else the real ones flattened [N, ...]."""
        if not self.padded:
            return values
        return values[self.real(start, values.device)]


def batch_token_budget(model: LoadedModel, lengths: Sequence[int]) -> int:
    """Tokens per forward: the model layer's budget, counting the attention scores and pattern
    (n_heads x the longest document per token) that every forward forms."""
    from analyses.model.tokens import activation_bytes_per_token, token_budget

    longest = max(lengths, default=1)
    return token_budget(model, activation_bytes_per_token(model, extra_floats=2 * model.bridge.cfg.n_heads * longest))


def _forward(model: LoadedModel, tokens: Any, hooks: list, attention_mask: Any, stop_at_layer: int | None) -> None:
    extra: dict[str, Any] = {"stop_at_layer": stop_at_layer} if stop_at_layer is not None else {}
    if attention_mask is not None:
        extra["attention_mask"] = attention_mask
    model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, use_cache=False, **extra)


def _bound(hooks: list[BatchHook], current: dict) -> list:
    def call(activation: Any, hook: Any, fn: Callable[[Any, DocumentBatch], None]) -> None:
        fn(activation, current["batch"])

    return [(name, functools.partial(call, fn=fn)) for name, fn in hooks]


# Hook points inside every block, in the order a forward reaches them, that every supported
# family has (GPT-2, NeoX, GPT-J, Phi, Llama, Gemma 3): after the q projection, after attention
# (z), the attention output, the MLP's hidden layer before and after its activation. None of
# them asks the bridge for the attention pattern, so hooking them changes no computation.
WITHIN_BLOCK = ("attn.hook_q", "attn.hook_z", "hook_attn_out", "mlp.hook_pre", "mlp.hook_post")


def block_checks(n_blocks: int, cancel: CancelEvent, on_block: Callable[[int], None] | None = None,
                 within: Sequence[str] = ()) -> list:
    """Bridge hooks on every block's output (blocks 0..n_blocks-1) that check cancel (raising
    Cancelled inside the forward) and then call on_block(layer): cancel and progress per block,
    not only per forward. ``within``: hook points inside each block (e.g. WITHIN_BLOCK) that check
    cancel too, for forwards whose one block is itself seconds of work (a padded batch at the
    model's token budget)."""

    def check(activation: Any, hook: Any, layer: int) -> None:
        check_cancel(cancel)
        if on_block is not None:
            on_block(layer)

    def check_only(activation: Any, hook: Any) -> None:
        check_cancel(cancel)

    inner = [(f"blocks.{layer}.{name}", check_only) for layer in range(n_blocks) for name in within]
    return inner + [(f"blocks.{layer}.hook_resid_post", functools.partial(check, layer=layer)) for layer in range(n_blocks)]


def hook_upto_layer(model: LoadedModel, inputs: Sequence[Input], hook: str, layer: int, prepend_bos: str,
                    progress: Progress, cancel: CancelEvent) -> Iterator[tuple[int, Input, Any, Any]]:
    """One unpadded forward per input, stopped after block ``layer`` (cancel checked before each block),
    yielding (index, input, tokens, the cached ``hook`` activation); progress per input."""
    import torch

    with torch.inference_mode():
        for index, item in enumerate(inputs):
            check_cancel(cancel)
            progress(index, len(inputs), f"input {index + 1}/{len(inputs)}: forward to layer {layer}")
            tokens = model.to_tokens(item.text, prepend_bos=prepend_bos, max_tokens=item.meta.get("max_tokens"))
            with model.bridge.hooks(fwd_hooks=block_checks(layer + 1, cancel)):
                _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name == hook, stop_at_layer=layer + 1)
            yield index, item, tokens, cache[hook]


def run_hooked_batches(
    model: LoadedModel, token_rows: list, hooks: list[BatchHook], progress: Progress, cancel: CancelEvent,
    batch_tokens: int | None = None, stop_at_layer: int | None = None,
) -> None:
    """Forwards over the documents grouped by length under batch_tokens (default: the model
    layer's budget), right-padded with the pad id and an attention mask; progress is reported
    after every block of every forward (in document-blocks: a batch of B documents through n
    blocks is B x n units) and cancel checked there and at the WITHIN_BLOCK points inside every
    block, so a cancel waits for a fraction of one block of one batch."""
    import torch

    from analyses.model.tokens import length_batches, pad_right

    lengths = [int(row.shape[-1]) for row in token_rows]
    groups = length_batches(lengths, batch_tokens or batch_token_budget(model, lengths))
    current: dict[str, DocumentBatch] = {}
    n_blocks = model.n_layers if stop_at_layer is None else min(model.n_layers, stop_at_layer)
    bound, total, done = _bound(hooks, current), len(token_rows), 0

    def on_block(layer: int) -> None:
        group = current["batch"].indices
        progress(done * n_blocks + len(group) * (layer + 1), total * n_blocks, f"documents {done + 1}-{done + len(group)}/{total}: block {layer + 1}/{n_blocks}")

    checks = block_checks(n_blocks, cancel, on_block, within=WITHIN_BLOCK)
    with torch.inference_mode():
        for group in groups:
            check_cancel(cancel)
            progress(done * n_blocks, total * n_blocks, f"documents {done + 1}-{done + len(group)}/{total}")
            tokens, mask = pad_right(model, [token_rows[index].reshape(-1).tolist() for index in group])
            current["batch"] = DocumentBatch(tuple(group), tuple(lengths[index] for index in group), int(tokens.shape[-1]))
            _forward(model, tokens, bound + checks, mask, stop_at_layer)
            done += len(group)
    progress(total * n_blocks, total * n_blocks, "done")


def run_hooked_documents(
    model: LoadedModel, token_rows: list, hooks: list[BatchHook], progress: Progress, cancel: CancelEvent,
    stop_at_layer: int | None = None,
) -> None:
    """The reference loop: one unpadded forward per document (no mask), in order, each hook
    called with a batch of that one document."""
    import torch

    current: dict[str, DocumentBatch] = {}
    bound, total = _bound(hooks, current), len(token_rows)
    with torch.inference_mode():
        for index, tokens in enumerate(token_rows):
            check_cancel(cancel)
            progress(index, total, f"document {index + 1}/{total}")
            current["batch"] = DocumentBatch((index,), (int(tokens.shape[-1]),), int(tokens.shape[-1]))
            _forward(model, tokens, bound, None, stop_at_layer)
    progress(total, total, "done")
