"""One adapter per architecture family: the model driven piece by piece, exactly as its own
Hugging Face forward computes it.

The analyses get one API whatever the family: embed tokens; build the per-call context
(positions, rotary tables, causal / sliding-window masks) for queries at positions
first_pos..first_pos+q_len-1 over keys 0..first_pos+q_len-1 (earlier keys and values come from
a prefix cache); the attention and MLP outputs of a block (norms included, and Gemma's
post-norms); a block with either sublayer skipped or edited; the final norm and unembedding.
Parallel blocks (GPT-NeoX with use_parallel_residual, GPT-J) read the same residual for
attention and MLP: skipping or editing one sublayer never changes what the other reads.

The modules called are the original Hugging Face ones inside the bridge's wrappers, so the
bridge's hooks do not fire on this path; analyses patch through ``edits`` instead.
Batches are right-padded: a causal mask keeps real positions from ever seeing a pad.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from analyses.core.errors import BadInput

FAMILY_OF_ARCHITECTURE = {
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
SUPPORTED = "GPT-2, GPT-NeoX (Pythia), GPT-J, Phi, Llama family (Llama 2/3, SmolLM2, Mistral, Qwen 2/3), Gemma 3"
SITES = ("attn_out", "mlp_out")
Edit = Callable[[Any], Any]


def unwrap(module: Any) -> Any:
    """The original Hugging Face module inside a bridge component (or the module itself)."""
    while hasattr(module, "_original_component"):
        module = module._original_component
    return module


def family_of(model: Any) -> str:
    """The adapter family of a loaded model; BadInput naming its architecture otherwise."""
    architecture = type(unwrap(model.bridge.original_model)).__name__
    family = FAMILY_OF_ARCHITECTURE.get(architecture)
    if family is None:
        raise BadInput(f"model {model.name!r} has architecture {architecture}, which iwb does not support; supported: {SUPPORTED}")
    return family


@dataclass
class Context:
    """What every block call of one batch needs: positions, rotary tables and masks per layer type."""

    first_pos: int
    q_len: int
    position_ids: Any
    masks: dict = field(default_factory=dict)
    rotary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LayerParts:
    attn: Any
    mlp: Any
    ln1: Any
    ln2: Any
    post_attn: Any = None
    post_mlp: Any = None


class Adapter:
    """The model's embedding, blocks, final norm and unembedding, callable piecewise."""

    family = ""
    parallel = False

    def __init__(self, model: Any) -> None:
        self.model = model
        self.hf = unwrap(model.bridge.original_model)
        self.config = self.hf.config
        self.n_layers = model.n_layers
        self.d_model = model.d_model
        self.device = model.device
        raw_layers = self._layer_list()
        self.layers = [self._parts(unwrap(layer)) for layer in raw_layers]
        types = getattr(self.config, "layer_types", None) or ["full_attention"] * self.n_layers
        self.layer_types = list(types)[: self.n_layers]
        self.sliding_window = getattr(self.config, "sliding_window", None)

    # -- per family ----------------------------------------------------------------------
    def _layer_owner(self) -> tuple[Any, str]:
        """The module holding the decoder-layer list and that list's attribute name."""
        raise NotImplementedError

    def _layer_list(self) -> Any:
        owner, name = self._layer_owner()
        return getattr(owner, name)

    @contextlib.contextmanager
    def blocks_in_order(self, order: list[int]) -> Iterator[None]:
        """The model's own forward runs its blocks in ``order`` inside the context (each block
        keeps its attention type); the original order always comes back. For naive references."""
        import torch

        owner, name = self._layer_owner()
        original = getattr(owner, name)
        types = getattr(self.config, "layer_types", None)
        setattr(owner, name, torch.nn.ModuleList([original[index] for index in order]))
        if types is not None:
            self.config.layer_types = [types[index] for index in order] + list(types[len(order):])
        try:
            yield
        finally:
            setattr(owner, name, original)
            if types is not None:
                self.config.layer_types = types

    def _parts(self, layer: Any) -> LayerParts:
        raise NotImplementedError

    def _token_embedding(self) -> Any:
        raise NotImplementedError

    def token_embed(self, tokens: Any) -> Any:
        """Token embeddings only (what causal tracing corrupts), [B, T, d]; Gemma's scale included."""
        return self._token_embedding()(tokens)

    def embedding_matrix(self) -> Any:
        """[d_vocab, d_model]: the vectors token_embed returns, for every token."""
        module = self._token_embedding()
        scale = getattr(module, "embed_scale", None)
        return module.weight * scale.to(module.weight.dtype) if scale is not None else module.weight

    def add_positions(self, token_embeds: Any, first_pos: int = 0) -> Any:
        """Add learned absolute position embeddings where the family has them."""
        return token_embeds

    def _rotary(self, hidden: Any, position_ids: Any) -> dict:
        return {}

    def _attention(self, layer: int, normed: Any, ctx: Context, cache: Any) -> Any:
        raise NotImplementedError

    def _final_norm_module(self) -> Any:
        raise NotImplementedError

    def _unembed_module(self) -> Any:
        return unwrap(self.hf.lm_head)

    # -- generic ---------------------------------------------------------------------------
    def embed(self, tokens: Any, first_pos: int = 0) -> Any:
        """The residual entering block 0, [B, T, d]."""
        return self.add_positions(self.token_embed(tokens), first_pos)

    def context(self, q_len: int, first_pos: int = 0, hidden: Any = None) -> Context:
        """Positions, rotary tables and additive masks for queries first_pos.. over keys 0.."""
        import torch

        dtype = hidden.dtype if hidden is not None else torch.float32
        positions = torch.arange(first_pos, first_pos + q_len, device=self.device)
        keys = torch.arange(first_pos + q_len, device=self.device)
        position_ids = positions[None]
        masks = {}
        for layer_type in set(self.layer_types):
            blocked = keys[None, :] > positions[:, None]
            if layer_type == "sliding_attention" and self.sliding_window:
                blocked = blocked | (keys[None, :] <= positions[:, None] - self.sliding_window)
            mask = torch.zeros(blocked.shape, dtype=dtype, device=self.device).masked_fill(blocked, torch.finfo(dtype).min)
            masks[layer_type] = mask[None, None]
        probe = hidden if hidden is not None else torch.zeros(1, dtype=dtype, device=self.device)
        return Context(first_pos, q_len, position_ids, masks, self._rotary(probe, position_ids))

    def attn_out(self, layer: int, resid: Any, ctx: Context, cache: Any = None) -> Any:
        """The block's attention output added to the residual (post-norm included), [B, q, d]."""
        parts = self.layers[layer]
        out = self._attention(layer, parts.ln1(resid), ctx, cache)
        return parts.post_attn(out) if parts.post_attn is not None else out

    def mlp_out(self, layer: int, mlp_input: Any) -> Any:
        """The block's MLP output added to the residual, from the residual the MLP reads."""
        parts = self.layers[layer]
        out = parts.mlp(parts.ln2(mlp_input))
        return parts.post_mlp(out) if parts.post_mlp is not None else out

    def block(
        self, layer: int, resid: Any, ctx: Context, cache: Any = None,
        attn: bool = True, mlp: bool = True, edits: Mapping[str, Edit] | None = None,
    ) -> Any:
        """resid_post of one block; a sublayer turned off contributes zero; ``edits[site]``
        (site attn_out / mlp_out) may replace that output before it is added."""
        edits = edits or {}
        attn_part = None
        if attn:
            attn_part = self.attn_out(layer, resid, ctx, cache)
            if "attn_out" in edits:
                attn_part = edits["attn_out"](attn_part)
        mid = resid + attn_part if attn_part is not None else resid
        if not mlp:
            return mid
        mlp_part = self.mlp_out(layer, resid if self.parallel else mid)
        if "mlp_out" in edits:
            mlp_part = edits["mlp_out"](mlp_part)
        return mid + mlp_part

    def run(self, resid: Any, layers: Any, ctx: Context, caches: Any = None) -> Any:
        """Blocks in the given order from a residual (a prefix cache per call, or None)."""
        for layer in layers:
            resid = self.block(layer, resid, ctx, caches)
        return resid

    def final_norm(self, resid: Any) -> Any:
        return self._final_norm_module()(resid)

    def unembed(self, normed: Any) -> Any:
        logits = self._unembed_module()(normed)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            import torch

            logits = torch.tanh(logits / cap) * cap
        return logits

    def logits(self, resid: Any) -> Any:
        return self.unembed(self.final_norm(resid))


class GPT2Adapter(Adapter):
    family = "gpt2"

    def _layer_owner(self) -> tuple[Any, str]:
        return self.hf.transformer, "h"

    def _parts(self, layer: Any) -> LayerParts:
        return LayerParts(unwrap(layer.attn), unwrap(layer.mlp), unwrap(layer.ln_1), unwrap(layer.ln_2))

    def _token_embedding(self) -> Any:
        return unwrap(self.hf.transformer.wte)

    def add_positions(self, token_embeds: Any, first_pos: int = 0) -> Any:
        import torch

        positions = torch.arange(first_pos, first_pos + token_embeds.shape[1], device=token_embeds.device)
        return token_embeds + unwrap(self.hf.transformer.wpe)(positions)[None]

    def _attention(self, layer: int, normed: Any, ctx: Context, cache: Any) -> Any:
        return self.layers[layer].attn(normed, past_key_values=cache, attention_mask=ctx.masks[self.layer_types[layer]])[0]

    def _final_norm_module(self) -> Any:
        return unwrap(self.hf.transformer.ln_f)


class NeoXAdapter(Adapter):
    family = "neox"

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.parallel = bool(getattr(self.config, "use_parallel_residual", True))

    def _layer_owner(self) -> tuple[Any, str]:
        return self.hf.gpt_neox, "layers"

    def _parts(self, layer: Any) -> LayerParts:
        return LayerParts(unwrap(layer.attention), unwrap(layer.mlp), unwrap(layer.input_layernorm), unwrap(layer.post_attention_layernorm))

    def _token_embedding(self) -> Any:
        return unwrap(self.hf.gpt_neox.embed_in)

    def _rotary(self, hidden: Any, position_ids: Any) -> dict:
        return {"full_attention": unwrap(self.hf.gpt_neox.rotary_emb)(hidden, position_ids)}

    def _attention(self, layer: int, normed: Any, ctx: Context, cache: Any) -> Any:
        attn = self.layers[layer].attn
        return attn(normed, attention_mask=ctx.masks[self.layer_types[layer]], layer_past=cache, position_embeddings=ctx.rotary["full_attention"])[0]

    def _final_norm_module(self) -> Any:
        return unwrap(self.hf.gpt_neox.final_layer_norm)


class GPTJAdapter(Adapter):
    family = "gptj"
    parallel = True

    def _layer_owner(self) -> tuple[Any, str]:
        return self.hf.transformer, "h"

    def _parts(self, layer: Any) -> LayerParts:
        norm = unwrap(layer.ln_1)
        return LayerParts(unwrap(layer.attn), unwrap(layer.mlp), norm, norm)

    def _token_embedding(self) -> Any:
        return unwrap(self.hf.transformer.wte)

    def _attention(self, layer: int, normed: Any, ctx: Context, cache: Any) -> Any:
        attn = self.layers[layer].attn
        position_ids = ctx.position_ids.expand(normed.shape[0], -1)
        return attn(hidden_states=normed, layer_past=cache, attention_mask=ctx.masks[self.layer_types[layer]], position_ids=position_ids)[0]

    def _final_norm_module(self) -> Any:
        return unwrap(self.hf.transformer.ln_f)


class LlamaAdapter(Adapter):
    family = "llama"

    def _layer_owner(self) -> tuple[Any, str]:
        return self.hf.model, "layers"

    def _parts(self, layer: Any) -> LayerParts:
        return LayerParts(unwrap(layer.self_attn), unwrap(layer.mlp), unwrap(layer.input_layernorm), unwrap(layer.post_attention_layernorm))

    def _token_embedding(self) -> Any:
        return unwrap(self.hf.model.embed_tokens)

    def _rotary(self, hidden: Any, position_ids: Any) -> dict:
        table = unwrap(self.hf.model.rotary_emb)(hidden, position_ids)
        return {layer_type: table for layer_type in set(self.layer_types)}

    def _attention(self, layer: int, normed: Any, ctx: Context, cache: Any) -> Any:
        layer_type = self.layer_types[layer]
        return self.layers[layer].attn(
            hidden_states=normed, position_embeddings=ctx.rotary[layer_type], attention_mask=ctx.masks[layer_type], past_key_values=cache,
        )[0]

    def _final_norm_module(self) -> Any:
        return unwrap(self.hf.model.norm)


class Gemma3Adapter(LlamaAdapter):
    family = "gemma3"

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        if getattr(self.config, "use_bidirectional_attention", False):
            raise BadInput(f"model {model.name!r}: Gemma 3 with bidirectional attention is not supported")

    def _parts(self, layer: Any) -> LayerParts:
        return LayerParts(
            unwrap(layer.self_attn), unwrap(layer.mlp), unwrap(layer.input_layernorm), unwrap(layer.pre_feedforward_layernorm),
            post_attn=unwrap(layer.post_attention_layernorm), post_mlp=unwrap(layer.post_feedforward_layernorm),
        )

    def _rotary(self, hidden: Any, position_ids: Any) -> dict:
        rotary = unwrap(self.hf.model.rotary_emb)
        return {layer_type: rotary(hidden, position_ids, layer_type) for layer_type in set(self.layer_types)}


class PhiAdapter(LlamaAdapter):
    """Phi: one LayerNorm feeds attention and MLP in parallel (as GPT-J), Llama-style rotary attention."""

    family = "phi"
    parallel = True

    def _parts(self, layer: Any) -> LayerParts:
        norm = unwrap(layer.input_layernorm)
        return LayerParts(unwrap(layer.self_attn), unwrap(layer.mlp), norm, norm)

    def _final_norm_module(self) -> Any:
        return unwrap(self.hf.model.final_layernorm)


ADAPTERS = {
    "gpt2": GPT2Adapter, "neox": NeoXAdapter, "gptj": GPTJAdapter, "phi": PhiAdapter, "llama": LlamaAdapter, "gemma3": Gemma3Adapter,
}


def adapter_for(model: Any) -> Adapter:
    """The adapter of a loaded model, built once and kept on it."""
    cached = getattr(model, "_adapter", None)
    if cached is None:
        cached = ADAPTERS[family_of(model)](model)
        model._adapter = cached
    return cached
