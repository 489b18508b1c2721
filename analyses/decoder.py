"""Drive a pre-norm decoder (Llama-style) block by block, so that a run can start at any block,
skip a block or one of its sublayers, or run blocks in another order, without the bridge's
full forward (``bridge(resid, start_at_layer=L)`` still runs the earlier blocks).

Each block is the bridge's wrapper around the Hugging Face layer; its sublayers (the bridge's
norm, attention and MLP components) are called exactly as the HF layer calls them. Batches
are right-padded: with a causal mask the real positions never see a pad, so no padding mask
is needed and the results at real positions are exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.errors import BadInput

SUBLAYERS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
# Blocks with these extra norms (Gemma 2/3) or a parallel layout are not Llama-style.
UNSUPPORTED_PARTS = ("pre_feedforward_layernorm", "post_feedforward_layernorm")


def hf_layer(block: Any) -> Any:
    """The Hugging Face decoder layer inside a bridge block (or the layer itself)."""
    return getattr(block, "_original_component", block)


def check_llama_style(model: Any) -> None:
    """BadInput unless every block is a pre-norm attention-then-MLP decoder layer."""
    layers = getattr(getattr(model.bridge.original_model, "model", None), "layers", None)
    if layers is None:
        raise BadInput(f"model {model.name!r}: no decoder layer list (model.layers) to drive")
    layer = hf_layer(layers[0])
    missing = [name for name in SUBLAYERS if not hasattr(layer, name)]
    extra = [name for name in UNSUPPORTED_PARTS if hasattr(layer, name)]
    if missing or extra:
        kind = type(layer).__name__
        raise BadInput(f"model {model.name!r} ({kind}) is not a Llama-style decoder; layer interventions need {', '.join(SUBLAYERS)}")


@dataclass(frozen=True)
class Prepared:
    """What every block call of one batch needs: the embeddings, rotary cos/sin and the causal mask."""

    embeddings: Any
    position_embeddings: tuple
    causal_mask: Any


class Decoder:
    """The model's embedding, blocks, final norm and unembedding, callable piecewise."""

    def __init__(self, model: Any) -> None:
        check_llama_style(model)
        inner = model.bridge.original_model.model
        self.embed_tokens = inner.embed_tokens
        self.rotary_emb = inner.rotary_emb
        self.layers = [hf_layer(block) for block in inner.layers]
        self.norm = inner.norm
        self.lm_head = model.bridge.original_model.lm_head
        self.n_layers = len(self.layers)

    def prepare(self, tokens: Any) -> Prepared:
        import torch

        embeddings = self.embed_tokens(tokens)
        batch, length = tokens.shape
        position_ids = torch.arange(length, device=tokens.device).unsqueeze(0).expand(batch, -1)
        position_embeddings = self.rotary_emb(embeddings, position_ids)
        blocked = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        mask = torch.zeros(length, length, dtype=embeddings.dtype, device=tokens.device)
        mask = mask.masked_fill(blocked, torch.finfo(embeddings.dtype).min)
        return Prepared(embeddings, position_embeddings, mask[None, None].expand(batch, 1, length, length))

    def attention(self, layer: int, resid: Any, prepared: Prepared) -> Any:
        block = self.layers[layer]
        out, _ = block.self_attn(
            hidden_states=block.input_layernorm(resid),
            attention_mask=prepared.causal_mask,
            position_embeddings=prepared.position_embeddings,
        )
        return out

    def mlp(self, layer: int, resid_mid: Any) -> Any:
        block = self.layers[layer]
        return block.mlp(block.post_attention_layernorm(resid_mid))

    def block(self, layer: int, resid: Any, prepared: Prepared, attn: bool = True, mlp: bool = True) -> Any:
        """One block; a sublayer turned off contributes zero (its output is dropped from the sum)."""
        if attn:
            resid = resid + self.attention(layer, resid, prepared)
        if mlp:
            resid = resid + self.mlp(layer, resid)
        return resid

    def run(self, resid: Any, order: list[int] | range, prepared: Prepared) -> Any:
        for layer in order:
            resid = self.block(layer, resid, prepared)
        return resid

    def logits(self, resid: Any) -> Any:
        return self.lm_head(self.norm(resid))
