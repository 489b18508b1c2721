"""The one table of supported architecture families, shared by the adapters and the weights API."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from analyses.core.errors import BadInput

if TYPE_CHECKING:
    import torch

    from analyses.model.loading import LoadedModel

FAMILY_OF_ARCHITECTURE: dict[str, str] = {
    "GPT2LMHeadModel": "gpt2",
    "GPTNeoXForCausalLM": "neox",
    "GPTJForCausalLM": "gptj",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "llama",
    "Qwen3ForCausalLM": "llama",
    "Gemma3ForCausalLM": "gemma3",
    "PhiForCausalLM": "phi",
}
FAMILIES: tuple[str, ...] = ("gpt2", "neox", "gptj", "phi", "llama", "gemma3")
SUPPORTED = "GPT-2, GPT-NeoX (Pythia), GPT-J, Phi, Llama family (Llama 2/3, SmolLM2, Mistral, Qwen 2/3), Gemma 3"


def unwrap(module: Any) -> Any:
    """The original Hugging Face module inside a bridge component (or the module itself)."""
    while hasattr(module, "_original_component"):
        module = module._original_component
    return module


def hf_model(model: LoadedModel | torch.nn.Module) -> Any:
    """The bare Hugging Face causal LM of a LoadedModel, a bridge, or an HF model itself."""
    bridge = getattr(model, "bridge", model)
    return unwrap(getattr(bridge, "original_model", bridge))


def family_of(model: LoadedModel | torch.nn.Module) -> str:
    """The family of a LoadedModel or a bare HF causal LM; BadInput naming its architecture otherwise."""
    hf = hf_model(model)
    if hf is None:  # a model described by its config only (a sweep's driver-side checks): no weights to name
        raise LookupError("the model's weights are not loaded here")
    architecture = type(hf).__name__
    family = FAMILY_OF_ARCHITECTURE.get(architecture)
    if family is None:
        name = getattr(model, "name", None)
        subject = f"model {name!r} has architecture" if name else "architecture"
        raise BadInput(f"{subject} {architecture}, which iwb does not support; supported: {SUPPORTED}")
    return family
