"""The model as its config and tokenizer describe it, without loading its weights.

A sweep's driver checks a request on this before any actor starts (app/run/sweep.py): layer ranges,
context lengths and tokenization need the config and the tokenizer only; a check that reaches for the
weights or the bridge (which this model has not: ``bridge`` is None) is left to an actor.
"""
from __future__ import annotations

from typing import Any, cast

from analyses.core.errors import IwbError
from analyses.model.loading import LoadedModel, _locate, quiet_hf


def config_model(model_name: str) -> LoadedModel | None:
    """The model as its config and tokenizer describe it, without its weights: a LoadedModel with no
    bridge (n_layers, d_model, n_ctx, d_vocab from the config; the tokenizer itself). None when the
    model cannot be located here (a name only the cluster's nodes have): the actors check it."""
    try:
        source, location, revision = _locate(model_name)
        quiet_hf()
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (IwbError, OSError, ValueError, KeyError):
        return None
    text = getattr(config, "text_config", None) or config

    def first(*names: str) -> int | None:
        for name in names:
            value = getattr(text, name, None)
            if isinstance(value, int):
                return value
        return None

    n_layers, d_model, n_ctx = first("num_hidden_layers", "n_layer"), first("hidden_size", "n_embd"), first("max_position_embeddings", "n_positions")
    if n_layers is None or d_model is None or n_ctx is None:
        return None
    return LoadedModel(bridge=cast(Any, None), name=model_name, source=source, location=location, revision=revision,
                       device="cpu", dtype="float32", n_layers=n_layers, d_model=d_model, n_ctx=n_ctx,
                       d_vocab=first("vocab_size") or len(tokenizer), hf_tokenizer=tokenizer)
