"""The adapter: every supported family driven piece by piece, exactly as its own Hugging Face
forward computes it in the installed transformers version.

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
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analyses.core.errors import BadInput
from analyses.model.families import family_of, unwrap

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel

SITES = ("attn_out", "mlp_out")
Edit = Callable[[Any], Any]
# The cache argument of a Hugging Face attention module, newest name first: transformers 5.24
# renamed past_key_values to cache (the old name warns, and goes in 5.40); NeoX keeps layer_past.
CACHE_ARGUMENTS = ("cache", "past_key_values", "layer_past")


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


@dataclass(frozen=True)
class AttentionCall:
    """How the model's own decoder layer calls its attention module, in the installed transformers."""

    cache_argument: str
    position_embeddings: bool
    position_ids: bool

    @classmethod
    def of(cls, attention: Any) -> AttentionCall:
        parameters = inspect.signature(type(attention).forward).parameters
        cache_argument = next((name for name in CACHE_ARGUMENTS if name in parameters), None)
        if cache_argument is None:
            raise BadInput(f"{type(attention).__name__}.forward takes none of {CACHE_ARGUMENTS}: this transformers version is not supported")
        return cls(cache_argument, "position_embeddings" in parameters, "position_ids" in parameters)


def _resolve(root: Any, path: str) -> Any:
    """root.a.b... for a dotted path of the bridge's component mapping, through bridge wrappers."""
    module = unwrap(root)
    for step in path.split("."):
        module = unwrap(getattr(module, step))
    return module


class Adapter:
    """The model's embedding, blocks, final norm and unembedding, callable piecewise.

    Module paths come from TransformerBridge's own component mapping (``bridge.adapter``); how
    attention is called (cache argument, rotary tables or positions) from the attention module's
    signature in the installed transformers, so one class serves every family."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.family = family_of(model)
        self.hf = unwrap(model.bridge.original_model)
        self.config = self.hf.config
        self.n_layers = model.n_layers
        self.d_model = model.d_model
        self.device = model.device
        mapping = model.bridge.adapter.get_component_mapping()
        missing = {"embed", "blocks", "ln_final", "unembed"} - set(mapping)
        if missing:
            raise BadInput(f"model {model.name!r}: the bridge maps none of {sorted(missing)}; iwb cannot drive it piecewise")
        # A component mapped with name=None (a containerless part, as in OPT or BERT) has no module
        # path; every top-level component of a supported family (family_of checked it above) has one.
        self.paths = {name: component.name for name, component in mapping.items() if component.name is not None}
        self.block_parts = {name: part.name for name, part in (mapping["blocks"].submodules or {}).items()}
        self.layers = [self._parts(unwrap(layer)) for layer in self._layer_list()]
        self.parallel = "ln2" not in self.block_parts or bool(getattr(self.config, "use_parallel_residual", False))
        self.attention_call = AttentionCall.of(self.layers[0].attn)
        types = getattr(self.config, "layer_types", None) or ["full_attention"] * self.n_layers
        self.layer_types = list(types)[: self.n_layers]
        self.sliding_window = getattr(self.config, "sliding_window", None)
        if getattr(self.config, "use_bidirectional_attention", False):
            raise BadInput(f"model {model.name!r}: bidirectional attention is not supported")
        self.rotary_module = self._rotary_module()

    def _module(self, name: str) -> Any:
        return _resolve(self.hf, self.paths[name])

    def _layer_owner(self) -> tuple[Any, str]:
        """The module holding the decoder-layer list and that list's attribute name."""
        owner_path, _, name = self.paths["blocks"].rpartition(".")
        return (_resolve(self.hf, owner_path) if owner_path else self.hf), name

    def _layer_list(self) -> Any:
        owner, name = self._layer_owner()
        return getattr(owner, name)

    def _parts(self, layer: Any) -> LayerParts:
        def part(name: str) -> Any:
            path = self.block_parts.get(name)
            return _resolve(layer, path) if path else None

        ln1 = part("ln1")
        ln2 = part("ln2")
        return LayerParts(part("attn"), part("mlp"), ln1, ln2 if ln2 is not None else ln1, part("ln1_post"), part("ln2_post"))

    def _rotary_module(self) -> Any:
        """The model's rotary-embedding module: the bridge maps it for most families; GPT-J's lives
        beside its blocks from transformers 5.24 on (before, its attention computed the rotation)."""
        if "rotary_emb" in self.paths:
            return self._module("rotary_emb")
        if self.attention_call.position_embeddings:
            owner, _ = self._layer_owner()
            rotary = getattr(owner, "rotary_emb", None)
            if rotary is None:
                raise BadInput(f"model {self.model.name!r}: its attention takes rotary tables but no rotary module was found")
            return unwrap(rotary)
        return None

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

    def token_embed(self, tokens: Any) -> Any:
        """Token embeddings only (what causal tracing corrupts), [B, T, d]; Gemma's scale included."""
        return self._module("embed")(tokens)

    def embedding_matrix(self) -> Any:
        """[d_vocab, d_model]: the vectors token_embed returns, for every token."""
        module = self._module("embed")
        scale = getattr(module, "embed_scale", None)
        return module.weight * scale.to(module.weight.dtype) if scale is not None else module.weight

    def add_positions(self, token_embeds: Any, first_pos: int = 0) -> Any:
        """Add learned absolute position embeddings where the family has them (GPT-2)."""
        if "pos_embed" not in self.paths:
            return token_embeds
        import torch

        positions = torch.arange(first_pos, first_pos + token_embeds.shape[1], device=token_embeds.device)
        return token_embeds + self._module("pos_embed")(positions)[None]

    def _rotary(self, hidden: Any, position_ids: Any) -> dict:
        """Rotary tables per layer type, as the model's forward computes them once per call."""
        if self.rotary_module is None:
            return {}
        if "layer_type" in inspect.signature(type(self.rotary_module).forward).parameters:
            return {layer_type: self.rotary_module(hidden, position_ids, layer_type) for layer_type in set(self.layer_types)}
        table = self.rotary_module(hidden, position_ids)
        return dict.fromkeys(set(self.layer_types), table)

    def _attention(self, layer: int, normed: Any, ctx: Context, cache: Any) -> Any:
        layer_type = self.layer_types[layer]
        call = self.attention_call
        kwargs: dict[str, Any] = {"attention_mask": ctx.masks[layer_type], call.cache_argument: cache}
        if call.position_embeddings:
            kwargs["position_embeddings"] = ctx.rotary[layer_type]
        elif call.position_ids:
            kwargs["position_ids"] = ctx.position_ids.expand(normed.shape[0], -1)
        return self.layers[layer].attn(normed, **kwargs)[0]

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
        return self._module("ln_final")(resid)

    def unembed(self, normed: Any) -> Any:
        logits = self._module("unembed")(normed)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            import torch

            logits = torch.tanh(logits / cap) * cap
        return logits

    def logits(self, resid: Any) -> Any:
        return self.unembed(self.final_norm(resid))


def adapter_for(model: LoadedModel) -> Adapter:
    """The adapter of a loaded model, built once and kept on it."""
    cached = model._adapter
    if cached is None:
        cached = Adapter(model)
        model._adapter = cached
    return cached
