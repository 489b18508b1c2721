"""Tiny random models of every supported family, built offline from a transformers config and
saved as a Hugging Face folder with the embedded model's tokenizer, so that they boot through
the same loader as a real model. Tests and benchmarks use them to cover every family."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.model.families import FAMILIES

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

VOCAB = 49152  # the embedded SmolLM2 tokenizer's vocabulary


def tiny_config(family: str, n_layers: int = 3, d_model: int = 64, n_heads: int = 4, n_ctx: int = 256, **overrides: Any) -> PreTrainedConfig:
    """A transformers config of a small random model of that family."""
    import transformers

    common: dict[str, Any] = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    config: PreTrainedConfig
    if family == "gpt2":
        config = transformers.GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_positions=n_ctx, n_inner=4 * d_model, **common)
    elif family == "neox":
        # rotary_pct (like Phi's partial_rotary_factor below) is a legacy keyword the config's __post_init__
        # still reads from **kwargs; the dataclass __init__ transformers types does not list it.
        config = transformers.GPTNeoXConfig(  # type: ignore[call-arg]
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads, intermediate_size=4 * d_model,
            max_position_embeddings=n_ctx, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False, **common,
        )
    elif family == "gptj":
        config = transformers.GPTJConfig(
            n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_positions=n_ctx, rotary_dim=d_model // n_heads // 2,
            n_inner=4 * d_model, tie_word_embeddings=False, **common,
        )
    elif family == "phi":
        config = transformers.PhiConfig(  # type: ignore[call-arg]
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads, intermediate_size=4 * d_model,
            max_position_embeddings=n_ctx, partial_rotary_factor=0.5, tie_word_embeddings=False, **common,
        )
    elif family == "llama":
        config = transformers.LlamaConfig(
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads, num_key_value_heads=max(1, n_heads // 2),
            intermediate_size=2 * d_model, max_position_embeddings=n_ctx, tie_word_embeddings=True, **common,
        )
    elif family == "gemma3":
        config = transformers.Gemma3TextConfig(
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads, num_key_value_heads=max(1, n_heads // 2),
            head_dim=d_model // n_heads, intermediate_size=2 * d_model, max_position_embeddings=n_ctx, sliding_window=8,
            layer_types=["sliding_attention" if (i + 1) % 3 else "full_attention" for i in range(n_layers)],
            query_pre_attn_scalar=d_model // n_heads, tie_word_embeddings=True, **common,
        )
    elif family == "opt":
        # Not supported by the adapters: used to test the refusal.
        config = transformers.OPTConfig(num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads, ffn_dim=4 * d_model,
                                        max_position_embeddings=n_ctx, word_embed_proj_dim=d_model, **common)
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    # A wider init than the default 0.02, so that every sublayer visibly moves the output.
    config.initializer_range = 0.1
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def build_tiny(family: str, folder: str | Path, seed: int = 0, **config_kwargs: Any) -> Path:
    """Save a seeded random model of the family with the embedded tokenizer into folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analyses.model.loading import prepare_embedded

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **config_kwargs), attn_implementation="eager")
    if family != "llama":
        # Random biases and norm weights, so that no term of the computation is trivially zero.
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if name.endswith("bias") or "norm" in name or "ln" in name:
                    tensor.add_(0.1 * torch.randn_like(tensor))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(prepare_embedded()).save_pretrained(folder)
    return folder
