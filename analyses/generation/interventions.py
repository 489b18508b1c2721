"""Interventions during generation, parsed from the run's parameters and resolved on the model.

- steering: a vector (from a contrast pair of prompts "A|B": the mean residual entering block
  ``layer`` over A's tokens minus that over B's, each read after a start-of-context token; or a ``.npy`` / ``.pt`` file of
  shape [d_model]) times a coefficient, added to the residual entering block ``layer`` at the
  chosen absolute positions (``all`` or a comma list);
- ablation of heads (``h3.2``: layer 3 head 2), whole MLPs (``mlp3``) or MLP neurons (``n3.17``),
  to zero or to their mean over the prompt's positions in a run without interventions;
- clamping: the residual entering block ``clamp_layer`` gets its projection on a unit direction
  set to ``clamp_value`` at every position.

Every intervention acts on a residual, a head's output or an MLP's output at a position through
a function of that position alone, so that a forward with the KV cache (one new position at a
time) computes exactly what a forward of the whole sequence computes.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.core.errors import BadInput

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel

ABLATION_MODES = ("zero", "mean")
_ITEM = re.compile(r"^(?:h(\d+)\.(\d+)|mlp(\d+)|n(\d+)\.(\d+))$")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class AblationSpec:
    """What the ``ablate`` parameter names: heads (layer, head), MLP layers, neurons (layer, index)."""

    heads: tuple[tuple[int, int], ...] = ()
    mlps: tuple[int, ...] = ()
    neurons: tuple[tuple[int, int], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.heads or self.mlps or self.neurons)


def parse_ablate(text: str | None) -> AblationSpec:
    """``h3.2, mlp5, n4.17``: heads, MLPs and neurons; BadInput on anything else."""
    if text is None:
        return AblationSpec()
    heads: list[tuple[int, int]] = []
    mlps: list[int] = []
    neurons: list[tuple[int, int]] = []
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise BadInput(f"parameter 'ablate' takes items such as h3.2 (head), mlp5 (MLP), n4.17 (neuron), not {text!r}")
    for part in parts:
        match = _ITEM.match(part)
        if match is None:
            raise BadInput(f"ablate item {part!r} is not h<layer>.<head>, mlp<layer> or n<layer>.<neuron>")
        h_layer, h_head, m_layer, n_layer, n_index = match.groups()
        if h_layer is not None:
            heads.append((int(h_layer), int(h_head)))
        elif m_layer is not None:
            mlps.append(int(m_layer))
        else:
            neurons.append((int(n_layer), int(n_index)))
    return AblationSpec(tuple(dict.fromkeys(heads)), tuple(dict.fromkeys(mlps)), tuple(dict.fromkeys(neurons)))


def parse_positions(text: str) -> tuple[int, ...] | None:
    """``all`` (None) or a comma list of absolute positions."""
    from analyses.core.params import int_list

    if text.strip().lower() == "all":
        return None
    return int_list(text, "steer_positions")


def is_file_source(text: str) -> bool:
    return text.strip().lower().endswith((".npy", ".pt"))


def contrast_pair(text: str, name: str) -> tuple[str, str]:
    if "|" not in text:
        raise BadInput(f"parameter {name!r} takes a .npy/.pt file or a contrast pair 'A|B' such as ' Love| Hate', not {text!r}")
    plus, minus = text.split("|", 1)
    if not plus.strip() or not minus.strip():
        raise BadInput(f"parameter {name!r}: both sides of the contrast pair {text!r} need text")
    return plus, minus


@dataclass
class Vector:
    """A resolved direction: the float32 tensor [d_model] and where it came from (for provenance)."""

    tensor: Any
    source: str
    detail: dict = field(default_factory=dict)


def load_vector_file(path_text: str, d_model: int, name: str) -> Vector:
    """A [d_model] float vector from a .npy or .pt file; BadInput for a missing file, a wrong
    shape or dtype, or a value that is not finite."""
    import numpy as np
    import torch

    path = Path(path_text.strip()).expanduser()
    if not path.is_file():
        raise BadInput(f"parameter {name!r}: no such file {str(path)!r}")
    raw = path.read_bytes()
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            dtype = str(array.dtype)
            tensor = torch.from_numpy(np.array(array)) if dtype in FLOAT_DTYPES else None
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, torch.Tensor):
                raise BadInput(f"parameter {name!r}: {path.name} holds a {type(loaded).__name__}, not a tensor")
            dtype = str(loaded.dtype).removeprefix("torch.")
            tensor = loaded
    except BadInput:
        raise
    except Exception as error:  # a corrupt or foreign file
        raise BadInput(f"parameter {name!r}: cannot read {path.name}: {type(error).__name__}: {error}") from None
    if dtype not in FLOAT_DTYPES or tensor is None:
        raise BadInput(f"parameter {name!r}: {path.name} has dtype {dtype}; a steering vector is floating point ({', '.join(FLOAT_DTYPES)})")
    shape = tuple(tensor.shape)
    if shape not in ((d_model,), (1, d_model)):
        raise BadInput(f"parameter {name!r}: {path.name} has shape {list(shape)}; the model's residual has width {d_model}")
    tensor = tensor.reshape(d_model).to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise BadInput(f"parameter {name!r}: {path.name} has values that are NaN or infinite")
    return Vector(tensor, f"file {path}", {"sha256": hashlib.sha256(raw).hexdigest(), "dtype": dtype})


def contrast_vector(model: LoadedModel, plus: str, minus: str, layer: int) -> Vector:
    """Mean residual entering block ``layer`` over the tokens of ``plus`` minus that over ``minus``,
    from plain forwards without interventions. Each text is read after the model's start-of-context
    token (its document separator), which is left out of the means: the first position of a
    sequence carries the attention sink's outsized residual (norms in the hundreds on SmolLM2), which
    would otherwise swamp the difference of a one-word pair."""
    import torch

    from analyses.model.adapters import adapter_for
    from analyses.model.kv import PrefixCache
    from analyses.model.tokens import document_separator_id

    adapter = adapter_for(model)
    start = document_separator_id(model)
    means = []
    with torch.inference_mode():
        for text in (plus, minus):
            ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise BadInput(f"contrast prompt {text!r} has no tokens")
            tokens = torch.tensor([[start, *ids]], dtype=torch.long, device=model.device)
            resid = adapter.embed(tokens)
            ctx = adapter.context(int(tokens.shape[-1]), 0, resid)
            for index in range(layer):
                resid = adapter.block(index, resid, ctx, PrefixCache())
            means.append(resid[0, 1:].float().mean(0))
    return Vector((means[0] - means[1]).cpu(), f"contrast {plus!r} - {minus!r} at layer {layer} (after token {start})")


def resolve_vector(model: LoadedModel, text: str, layer: int, name: str) -> Vector:
    if is_file_source(text):
        return load_vector_file(text, model.d_model, name)
    plus, minus = contrast_pair(text, name)
    return contrast_vector(model, plus, minus, layer)


def check_layer(value: int, n_layers: int, name: str) -> None:
    if not 0 <= value < n_layers:
        raise BadInput(f"parameter {name!r} is {value}; the model has layers 0..{n_layers - 1}")


def check_ablation(spec: AblationSpec, n_layers: int, n_heads: int, d_mlp: int) -> None:
    for layer, head in spec.heads:
        check_layer(layer, n_layers, "ablate")
        if head >= n_heads:
            raise BadInput(f"ablate h{layer}.{head}: the model has heads 0..{n_heads - 1}")
    for layer in spec.mlps:
        check_layer(layer, n_layers, "ablate")
    for layer, neuron in spec.neurons:
        check_layer(layer, n_layers, "ablate")
        if neuron >= d_mlp:
            raise BadInput(f"ablate n{layer}.{neuron}: the MLP has neurons 0..{d_mlp - 1}")


def finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise BadInput(f"parameter {name!r} takes a finite float, not {value!r}")
