"""Hooked forwards over whole documents: the tokens of each input as the model sees them, and one
hooked forward per document with progress and cancel between documents."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from analyses.core.contract import CancelEvent, Input, Progress
from analyses.core.errors import Cancelled

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel


def document_tokens(model: LoadedModel, inputs: list[Input], prepend_bos: str) -> list:
    """Token ids [1, T] per input, cut to its meta max_tokens and to the model's context."""
    return [model.to_tokens(item.text, prepend_bos=prepend_bos, max_tokens=item.meta.get("max_tokens")) for item in inputs]


def run_hooked_documents(
    model: LoadedModel, token_rows: list, hooks: list, progress: Progress, cancel: CancelEvent,
    after_each: Callable[[Any], None] | None = None,
) -> None:
    """One forward per document with the hooks, checking cancel and reporting progress between them."""
    import torch

    with torch.inference_mode():
        for index, tokens in enumerate(token_rows):
            if cancel.is_set():
                raise Cancelled("cancelled")
            progress(index, len(token_rows), f"input {index + 1}/{len(token_rows)}")
            model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, use_cache=False)
            if after_each is not None:
                after_each(tokens)
    progress(len(token_rows), len(token_rows), "done")
