"""Helpers shared by the analyses that read whole documents: tokenising, the tokens table, and
one hooked forward per document with progress and cancel between documents."""
from __future__ import annotations

from typing import Any, Callable

from analyses.base import CancelEvent, Input, Progress
from analyses.errors import Cancelled


def document_tokens(model, inputs: list[Input], prepend_bos: bool) -> list:
    """Token ids [1, T] per input, cut to its meta max_tokens and to the model's context."""
    return [model.to_tokens(item.text, prepend_bos=prepend_bos, max_tokens=item.meta.get("max_tokens")) for item in inputs]


def tokens_table(model, inputs: list[Input], token_rows: list) -> Any:
    """The run's tokens table (input_id, pos, token_id, token) for these inputs."""
    import pyarrow as pa

    rows = {"input_id": [], "pos": [], "token_id": [], "token": []}
    for item, tokens in zip(inputs, token_rows):
        ids = tokens.reshape(-1).tolist()
        rows["input_id"].extend([item.input_id] * len(ids))
        rows["pos"].extend(range(len(ids)))
        rows["token_id"].extend(ids)
        rows["token"].extend(model.token_strings(ids))
    return pa.table(rows)


def run_hooked_documents(
    model, token_rows: list, hooks: list, progress: Progress, cancel: CancelEvent,
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
