"""Decoding through the model layer's adapter with a KV cache, the lens at every step, and
interventions that act identically on the prompt forward and on every cached step.

One forward per new token: the prompt once, then one position per step, every attention reading
the earlier keys and values from a prefix cache (analyses.model.kv.PrefixCache, which every
family's attention accepts; the adapter's masks handle Gemma's sliding-window layers and its
positions continue from the prompt). The residual entering each block at the newest position
and the final residual are stacked and put through the final norm and unembedding in one matrix
product per step: row n_layers is the model's own logits, rows 0..n_layers-1 the lens.

``full_forward_logits`` is the reference: the whole sequence in one forward, no cache, the same
interventions.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analyses.core.contract import CancelEvent, check_cancel
from analyses.generation.interventions import AblationSpec

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel

# The attention's output projection and the MLP's down projection, per family (the module the
# attention / MLP forward calls on the concatenated head outputs / on the neuron activations).
OUT_PROJ = ("o_proj", "c_proj", "out_proj", "dense")
DOWN_PROJ = ("down_proj", "dense_4h_to_h", "fc_out", "fc2", "c_proj")


@dataclass
class Steer:
    layer: int
    vector: Any  # float32 [d] already times the coefficient, on the model's device and dtype
    positions: tuple[int, ...] | None  # None: every position


@dataclass
class Clamp:
    layer: int
    direction: Any  # unit vector [d]
    value: float


@dataclass
class Plan:
    """Resolved interventions: what the decoder applies at every forward."""

    steer: Steer | None = None
    clamp: Clamp | None = None
    ablation: AblationSpec = field(default_factory=AblationSpec)
    ablation_mode: str = "zero"
    # Mean ablation values, filled from a clean forward of the prompt: (kind, layer) -> tensor.
    means: dict = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.steer is None and self.clamp is None and self.ablation.empty


def _child(module: Any, names: tuple[str, ...], what: str) -> Any:
    for name in names:
        if name in getattr(module, "_modules", {}):
            return module._modules[name]
    raise RuntimeError(f"{type(module).__name__} has no {what} ({', '.join(names)})")


def _positions(first_pos: int, q_len: int, device: Any) -> Any:
    import torch

    return torch.arange(first_pos, first_pos + q_len, device=device)


class Decoder:
    """Forwards of a growing sequence with the prefix cache and the plan's interventions."""

    def __init__(self, model: LoadedModel, plan: Plan) -> None:
        from analyses.model.adapters import adapter_for

        self.model = model
        self.adapter = adapter_for(model)
        self.plan = plan
        cfg = model.bridge.cfg
        self.n_heads = int(cfg.n_heads)
        self.d_head = int(cfg.d_head)
        self.n_layers = model.n_layers

    # -- hooks on head outputs and neurons ------------------------------------------------
    @contextlib.contextmanager
    def _module_hooks(self, capture: dict | None = None) -> Iterator[None]:
        """Forward pre-hooks on the output projection of ablated heads' attentions and on the
        down projection of ablated neurons' MLPs (or, with ``capture``, hooks that record those
        inputs for mean ablation). Removed on exit."""
        handles = []
        plan = self.plan
        head_layers: dict[int, list[int]] = {}
        for layer, head in plan.ablation.heads:
            head_layers.setdefault(layer, []).append(head)
        neuron_layers: dict[int, list[int]] = {}
        for layer, neuron in plan.ablation.neurons:
            neuron_layers.setdefault(layer, []).append(neuron)
        try:
            for layer, heads in head_layers.items():
                module = _child(self.adapter.layers[layer].attn, OUT_PROJ, "output projection")
                handles.append(module.register_forward_pre_hook(self._head_hook(layer, heads, capture)))
            for layer, neurons in neuron_layers.items():
                module = _child(self.adapter.layers[layer].mlp, DOWN_PROJ, "down projection")
                handles.append(module.register_forward_pre_hook(self._neuron_hook(layer, neurons, capture)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _head_hook(self, layer: int, heads: list[int], capture: dict | None) -> Callable:
        d_head = self.d_head

        def hook(module: Any, args: tuple) -> tuple:
            z = args[0]
            if capture is not None:
                capture.setdefault(("head", layer), []).append(z[0].detach().float())
                return args
            z = z.clone()
            for head in heads:
                span = slice(head * d_head, (head + 1) * d_head)
                if self.plan.ablation_mode == "mean":
                    z[..., span] = self.plan.means[("head", layer)][span].to(z.dtype)
                else:
                    z[..., span] = 0
            return (z, *args[1:])

        return hook

    def _neuron_hook(self, layer: int, neurons: list[int], capture: dict | None) -> Callable:
        def hook(module: Any, args: tuple) -> tuple:
            acts = args[0]
            if capture is not None:
                capture.setdefault(("neuron", layer), []).append(acts[0].detach().float())
                return args
            acts = acts.clone()
            index = list(neurons)
            if self.plan.ablation_mode == "mean":
                acts[..., index] = self.plan.means[("neuron", layer)][index].to(acts.dtype)
            else:
                acts[..., index] = 0
            return (acts, *args[1:])

        return hook

    # -- residual interventions -------------------------------------------------------------
    def _resid(self, layer: int, resid: Any, first_pos: int) -> Any:
        plan = self.plan
        steer, clamp = plan.steer, plan.clamp
        if steer is not None and steer.layer == layer:
            vector = steer.vector.to(resid.dtype)
            if steer.positions is None:
                resid = resid + vector
            else:
                import torch

                positions = _positions(first_pos, resid.shape[1], resid.device)
                wanted = torch.tensor(steer.positions, device=resid.device)
                hit = (positions[:, None] == wanted[None, :]).any(-1).to(resid.dtype)
                resid = resid + hit[None, :, None] * vector
        if clamp is not None and clamp.layer == layer:
            direction = clamp.direction.to(resid.dtype)
            projection = resid @ direction
            resid = resid + (clamp.value - projection)[..., None] * direction
        return resid

    def _edits(self, layer: int) -> dict:
        if layer not in self.plan.ablation.mlps:
            return {}
        if self.plan.ablation_mode == "mean":
            mean = self.plan.means[("mlp", layer)]
            return {"mlp_out": lambda out: mean.to(out.dtype).expand_as(out).clone()}
        return {"mlp_out": lambda out: out.new_zeros(out.shape)}

    # -- forwards -------------------------------------------------------------------------
    def forward(self, tokens: Any, first_pos: int, prefixes: dict, cancel: CancelEvent | None = None,
                rows_at: int = -1) -> tuple[Any, dict]:
        """Residual rows [n_layers + 1, d] at position ``rows_at`` of this chunk (the residual
        entering every block, then the final residual) and the cache's keys and values after it
        (prefixes for the next forward). ``tokens`` [1, q] sit at positions first_pos.."""
        import torch

        from analyses.model.kv import PrefixCache

        adapter = self.adapter
        cache = PrefixCache(prefixes, record=True)
        rows = []
        with self._module_hooks():
            resid = adapter.embed(tokens, first_pos)
            ctx = adapter.context(int(tokens.shape[-1]), first_pos, resid)
            for layer in range(self.n_layers):
                check_cancel(cancel)
                resid = self._resid(layer, resid, first_pos)
                rows.append(resid[0, rows_at])
                resid = adapter.block(layer, resid, ctx, cache, edits=self._edits(layer))
        rows.append(resid[0, rows_at])
        return torch.stack(rows), cache.recorded

    def full_residuals(self, tokens: Any) -> Any:
        """The final residual [T, d] of one forward of the whole sequence, no cache (the reference)."""
        from analyses.model.kv import PrefixCache

        with self._module_hooks():
            resid = self.adapter.embed(tokens, 0)
            ctx = self.adapter.context(int(tokens.shape[-1]), 0, resid)
            for layer in range(self.n_layers):
                resid = self._resid(layer, resid, 0)
                resid = self.adapter.block(layer, resid, ctx, PrefixCache(), edits=self._edits(layer))
        return resid[0]

    def fill_means(self, tokens: Any) -> None:
        """Mean-ablation values from a forward of the prompt without interventions: each ablated
        head's output (before the output projection), MLP output and neuron activation, averaged
        over the prompt's positions."""
        from analyses.model.kv import PrefixCache

        if self.plan.ablation_mode != "mean" or self.plan.ablation.empty:
            return
        capture: dict = {}
        mlp_layers = set(self.plan.ablation.mlps)

        def edit(layer: int) -> dict:
            if layer not in mlp_layers:
                return {}

            def record(out: Any) -> Any:
                capture.setdefault(("mlp", layer), []).append(out[0].detach().float())
                return out

            return {"mlp_out": record}

        with self._module_hooks(capture):
            resid = self.adapter.embed(tokens, 0)
            ctx = self.adapter.context(int(tokens.shape[-1]), 0, resid)
            for layer in range(self.n_layers):
                resid = self.adapter.block(layer, resid, ctx, PrefixCache(), edits=edit(layer))
        self.plan.means = {key: parts[0].mean(0) for key, parts in capture.items()}


@contextlib.contextmanager
def bare_blocks(model: LoadedModel) -> Iterator[None]:
    """Inside the context every block's attention and MLP call the Hugging Face modules the bridge
    wraps (its LinearBridge around q/k/v/o and the MLP's projections) directly, not through the
    wrapper; the wrappers come back on exit, whatever happened inside.

    The adapter already calls the blocks' unwrapped attention and MLP, so no bridge hook fires on
    this path (ablations hook the modules themselves, through Decoder._module_hooks, resolved
    inside the context); what the wrappers still cost is their per-call machinery (two hook points
    and an offload check per projection, seven projections a layer), a sizeable share of a
    one-token step on a small model. The wrapped module computes the same numbers: the wrapper's
    hook points are identities without hooks."""
    from analyses.model.adapters import adapter_for
    from analyses.model.families import unwrap

    swaps: list[tuple[Any, str, Any]] = []

    def collect(module: Any) -> None:
        for name, child in module._modules.items():
            if child is None:
                continue
            if "_original_component" in child._modules:
                swaps.append((module, name, child))
            else:
                collect(child)

    for parts in adapter_for(model).layers:
        for owner in (parts.attn, parts.mlp):
            if owner is not None:
                collect(owner)
    try:
        for module, name, child in swaps:
            module._modules[name] = unwrap(child)
        yield
    finally:
        for module, name, child in reversed(swaps):
            module._modules[name] = child


# Vocabulary rows of the unembedding per matrix product in lens_logits: [R, d] x [d, 1024] keeps the
# slice of the weight and of the logits in cache while it is used; measured on 1 CPU thread, 31 rows
# x 49k (SmolLM2) in 30 ms instead of 36 ms as one product, 19 rows x 262k (Gemma 3) 136 ms
# instead of 171, and the softmax's sums over each slice while it is still in cache save 4 ms more.
UNEMBED_CHUNK = 1024


@dataclass
class LensLogits:
    """The lens' logits of one step, float32 [R, V], with what the softmax needs: per row the
    log-normaliser ``lse`` and the mean logit under the distribution ``mean_logit`` (sum p * logit,
    so the entropy is lse - mean_logit), or None for both where they are left to the caller."""

    logits: Any
    lse: Any = None
    mean_logit: Any = None


def lens_logits(model: LoadedModel, rows: Any, out: Any = None) -> LensLogits:
    """Final norm and unembedding of residual rows [R, d] (into ``out`` when it is a float32
    [R, V] buffer, reused from step to step).

    A plain linear unembedding (every supported family's, bias or not) without a soft cap is
    computed in slices of the vocabulary: each slice of logits is the same dot products over d as
    the whole product, and while it is in cache its maximum, sum of exp(logit - max) and sum of
    exp(logit - max) * logit per row are taken; the slices' sums combine, rescaled to the largest
    maximum, into lse and the mean logit (the same sums in another order: float rounding, 1e-6
    relative). Anything else goes through the adapter's own unembedding, the sums left to the caller."""
    import torch

    from analyses.model.adapters import adapter_for

    adapter = adapter_for(model)
    module = adapter._module("unembed")
    weight = getattr(module, "weight", None)
    if type(module) is not torch.nn.Linear or weight is None or getattr(adapter.config, "final_logit_softcapping", None):
        return LensLogits(adapter.logits(rows[None])[0].float())
    normed = adapter.final_norm(rows[None])[0]
    bias = module.bias
    n_rows, n_vocab = int(normed.shape[0]), int(weight.shape[0])
    if out is None or tuple(out.shape) != (n_rows, n_vocab) or out.dtype != torch.float32:
        out = torch.empty((n_rows, n_vocab), dtype=torch.float32, device=normed.device)
    n_chunks = -(-n_vocab // UNEMBED_CHUNK)
    maxima = torch.empty((n_rows, n_chunks), dtype=torch.float32, device=normed.device)
    sums = torch.empty_like(maxima)
    dots = torch.empty_like(maxima)
    for index in range(n_chunks):
        start = index * UNEMBED_CHUNK
        stop = min(start + UNEMBED_CHUNK, n_vocab)
        part = out[:, start:stop]
        part.copy_(torch.nn.functional.linear(normed, weight[start:stop], None if bias is None else bias[start:stop]))
        top = part.amax(-1, keepdim=True)
        shifted = (part - top).exp_()
        maxima[:, index : index + 1] = top
        sums[:, index] = shifted.sum(-1)
        dots[:, index] = torch.linalg.vecdot(shifted, part)
    top = maxima.amax(-1, keepdim=True)
    scale = (maxima - top).exp_()
    total = (sums * scale).sum(-1)
    mean_logit = (dots * scale).sum(-1) / total
    if not bool(torch.isfinite(mean_logit).all()):  # an infinite logit: the caller's passes handle it
        return LensLogits(out)
    return LensLogits(out, top[:, 0] + total.log(), mean_logit)


@dataclass
class Sampler:
    """Greedy (temperature 0) or sampled decoding with temperature and nucleus (top-p), seeded."""

    temperature: float
    top_p: float
    seed: int
    generator: Any = None

    def __post_init__(self) -> None:
        import torch

        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)

    def choose(self, logits: Any) -> int:
        import torch

        if self.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.double().cpu() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            order = torch.argsort(probs, descending=True)
            sorted_probs = probs[order]
            before = torch.cumsum(sorted_probs, 0) - sorted_probs
            keep = before < self.top_p  # the smallest set whose mass reaches top_p (the top token always kept)
            filtered = torch.zeros_like(probs)
            filtered[order[keep]] = sorted_probs[keep]
            probs = filtered / filtered.sum()
        return int(torch.multinomial(probs, 1, generator=self.generator))
