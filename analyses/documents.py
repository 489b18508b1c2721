"""Helpers shared by the analyses that read whole documents: tokenising, the tokens table, and
one hooked forward per document with progress and cancel between documents."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from analyses.base import CancelEvent, Input, Progress
from analyses.errors import Cancelled


def document_tokens(model, inputs: list[Input], prepend_bos: str) -> list:
    """Token ids [1, T] per input, cut to its meta max_tokens and to the model's context."""
    return [model.to_tokens(item.text, prepend_bos=prepend_bos, max_tokens=item.meta.get("max_tokens")) for item in inputs]


def tokens_table_of(sequences: Iterable[tuple[int, Sequence[int], Sequence[str]]]) -> Any:
    """The run's tokens table (input_id, pos, token_id, token) from (input_id, ids, token strings)."""
    import pyarrow as pa

    rows: dict[str, list] = {"input_id": [], "pos": [], "token_id": [], "token": []}
    for input_id, ids, strings in sequences:
        rows["input_id"].extend([input_id] * len(ids))
        rows["pos"].extend(range(len(ids)))
        rows["token_id"].extend(ids)
        rows["token"].extend(strings)
    types = {"input_id": pa.int32(), "pos": pa.int32(), "token_id": pa.int32(), "token": pa.string()}
    return pa.table({name: pa.array(values, type=types[name]) for name, values in rows.items()})


def tokens_table(model, inputs: list[Input], token_rows: list) -> Any:
    """The tokens table for these inputs and their token tensors, decoded token by token."""
    sequences = []
    for item, tokens in zip(inputs, token_rows):
        ids = tokens.reshape(-1).tolist()
        sequences.append((item.input_id, ids, model.token_strings(ids)))
    return tokens_table_of(sequences)


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
