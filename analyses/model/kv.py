"""A stand-in for a Hugging Face KV cache that every family's attention accepts (they all call
``cache.update(key, value, layer_idx)``): it records each layer's keys and values, or puts
fixed per-row prefixes (keys/values of positions already computed) in front of the new ones."""
from __future__ import annotations

from typing import Any


class PrefixCache:
    def __init__(self, prefixes: dict | None = None, record: bool = False) -> None:
        self.prefixes = prefixes or {}
        self.record = record
        self.recorded: dict = {}

    def update(self, key: Any, value: Any, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        import torch

        if layer_idx in self.prefixes:
            prefix_key, prefix_value = self.prefixes[layer_idx]
            key = torch.cat([prefix_key, key], dim=2)
            value = torch.cat([prefix_value, value], dim=2)
        if self.record:
            self.recorded[layer_idx] = (key, value)
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        prefix = self.prefixes.get(layer_idx)
        return 0 if prefix is None else int(prefix[0].shape[2])
