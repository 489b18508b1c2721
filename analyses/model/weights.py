"""The model's weights in one layout for every family, read from the Hugging Face modules.

``model_weights(model)`` returns raw weights as float32 tensors: no norm folding, no centring,
no bias folding. Norms are returned as they are applied: ``kind`` (``layernorm`` or
``rmsnorm``), the ``weight`` as multiplied (Gemma's RMSNorm multiplies by ``1 + weight``; that
sum is what is stored), ``bias`` (layernorm only) and ``eps``. Shapes (n = n_heads, k =
n_kv_heads, d = d_model, h = d_head, m = d_mlp, V = d_vocab):

- W_E [V, d] as added to the residual (Gemma's sqrt(d_model) embedding scale is multiplied in;
  ``embed_scale`` records it); W_pos [n_ctx, d] for learned absolute positions, else None.
- per layer: W_Q [n, d, h]; W_K, W_V [k, d, h], query head i reads KV head i // (n // k);
  b_Q [n, h], b_K and b_V [k, h], b_O [d] or None; W_O [n, h, d]; q_norm / k_norm (per-head
  norms applied to queries and keys before rotary, Gemma 3) or None; attn_scale multiplies
  q.k; sliding_window (a key is seen when query - key < sliding_window) or None.
- MLP: W_in [d, m], W_gate [d, m] or None (gated: act(x W_gate) * (x W_in)), b_in [m] or None,
  W_out [m, d], b_out [d] or None, activation (a transformers ACT2FN name).
- norms per layer: ln1 (before attention), ln2 (before the MLP; for GPT-J the MLP reads ln1,
  so ln2 is ln1), post_attn / post_mlp (Gemma 3: applied to each sublayer's output before it
  is added to the residual) or None; ln_final; W_U [d, V], b_U [V] or None.
- ``parallel``: attention and MLP read the same residual (GPT-NeoX use_parallel_residual, GPT-J).
- ``rotary`` per layer or None: inverse frequencies, rotary dims (the first ``dim`` dims of each
  head), style (``half``: rotate_half pairs i and i + dim/2; ``interleaved``: pairs 2i, 2i+1).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from analyses.core.errors import BadInput
from analyses.model.families import family_of, unwrap

if TYPE_CHECKING:
    import torch

    from analyses.model.loading import LoadedModel


@dataclass(frozen=True)
class Norm:
    kind: str
    weight: Any
    bias: Any
    eps: float


@dataclass(frozen=True)
class Rotary:
    inv_freq: Any
    dim: int
    style: str
    attention_scaling: float = 1.0

    @property
    def base(self) -> float:
        """The base of the default RoPE frequencies (inv_freq[1] = base ** (-2 / dim))."""
        import math

        if self.inv_freq.numel() < 2:
            return float("nan")
        return float(math.exp(-math.log(float(self.inv_freq[1])) * self.dim / 2))


@dataclass(frozen=True)
class LayerWeights:
    W_Q: Any
    W_K: Any
    W_V: Any
    W_O: Any
    b_Q: Any
    b_K: Any
    b_V: Any
    b_O: Any
    q_norm: Norm | None
    k_norm: Norm | None
    attn_scale: float
    sliding_window: int | None
    rotary: Rotary | None
    W_in: Any
    W_gate: Any
    b_in: Any
    W_out: Any
    b_out: Any
    activation: str
    ln1: Norm
    ln2: Norm
    post_attn: Norm | None
    post_mlp: Norm | None

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_kv_heads(self) -> int:
        return self.W_K.shape[0]

    def kv_head(self, head: int) -> int:
        return head // (self.n_heads // self.n_kv_heads)


@dataclass(frozen=True)
class ModelWeights:
    family: str
    W_E: Any
    W_pos: Any
    embed_scale: float
    layers: tuple[LayerWeights, ...]
    ln_final: Norm
    W_U: Any
    b_U: Any
    parallel: bool


def _sub(module: Any, *path: str) -> Any:
    """module.a.b... through bridge wrappers; an entry "x|y" takes the first attribute present
    (the bridge renames some top-level modules, e.g. NeoX's embed_out to lm_head)."""
    module = unwrap(module)
    for step in path:
        names = step.split("|")
        found = next((getattr(module, name) for name in names if name in module._modules or hasattr(module, name)), None)
        if found is None:
            raise BadInput(f"weights reader: {type(module).__name__} has none of {names}")
        module = unwrap(found)
    return module


def _f(tensor: Any) -> Any:
    return None if tensor is None else tensor.detach().float().clone()


def _layernorm(module: Any) -> Norm:
    return Norm("layernorm", _f(module.weight), _f(module.bias), float(module.eps))


def _rmsnorm(module: Any, plus_one: bool = False) -> Norm:
    weight = _f(module.weight)
    eps = float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))
    return Norm("rmsnorm", weight + 1.0 if plus_one else weight, None, eps)


def _heads_in(weight: Any, n: int) -> Any:
    """An nn.Linear weight [n*h, d] as [n, d, h]."""
    rows, d_model = weight.shape
    return weight.reshape(n, rows // n, d_model).transpose(1, 2).contiguous()


def _heads_out(weight: Any, n: int) -> Any:
    """An nn.Linear weight [d, n*h] as [n, h, d]."""
    d_model, cols = weight.shape
    return weight.T.reshape(n, cols // n, d_model).contiguous()


def _bias_heads(bias: Any, n: int) -> Any:
    return None if bias is None else _f(bias).reshape(n, -1)


def _activation(config: Any) -> str:
    for key in ("hidden_activation", "hidden_act", "activation_function"):
        if getattr(config, key, None):
            return str(getattr(config, key))
    return "gelu"


def _gpt2(hf: Any) -> ModelWeights:
    config, body = hf.config, _sub(hf, "transformer")
    n, d_model = config.n_head, config.n_embd
    layers = []
    for index, block in enumerate(_sub(body, "h")):
        block = unwrap(block)
        attn, mlp = _sub(block, "attn"), _sub(block, "mlp")
        # Conv1D stores [in, out]: the transpose of nn.Linear.
        w_qkv, b_qkv = _f(_sub(attn, "c_attn").weight), _f(_sub(attn, "c_attn").bias)
        w_q, w_k, w_v = (w_qkv[:, i * d_model:(i + 1) * d_model] for i in range(3))
        b_q, b_k, b_v = (b_qkv[i * d_model:(i + 1) * d_model] for i in range(3))
        scale = (d_model // n) ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= index + 1
        h_q, h_k, h_v = (_heads_in(w.T, n) for w in (w_q, w_k, w_v))
        layers.append(LayerWeights(
            h_q, h_k, h_v, _heads_out(_f(_sub(attn, "c_proj").weight).T, n), b_q.reshape(n, -1), b_k.reshape(n, -1),
            b_v.reshape(n, -1), _f(_sub(attn, "c_proj").bias), None, None, scale, None, None,
            _f(_sub(mlp, "c_fc").weight), None, _f(_sub(mlp, "c_fc").bias), _f(_sub(mlp, "c_proj").weight), _f(_sub(mlp, "c_proj").bias),
            _activation(config), _layernorm(_sub(block, "ln_1")), _layernorm(_sub(block, "ln_2")), None, None,
        ))
    head = _sub(hf, "lm_head")
    return ModelWeights("gpt2", _f(_sub(body, "wte").weight), _f(_sub(body, "wpe").weight), 1.0, tuple(layers), _layernorm(_sub(body, "ln_f")),
                        _f(head.weight).T.contiguous(), _f(getattr(head, "bias", None)), False)


def _neox(hf: Any) -> ModelWeights:
    config, body = hf.config, _sub(hf, "gpt_neox")
    n, d_model = config.num_attention_heads, config.hidden_size
    d_head = d_model // n
    rotary_dim = int(d_head * config.rope_parameters.get("partial_rotary_factor", 1.0))
    rotary_emb = _sub(body, "rotary_emb")
    rotary = Rotary(_f(rotary_emb.inv_freq), rotary_dim, "half", float(getattr(rotary_emb, "attention_scaling", 1.0)))
    layers = []
    for block in _sub(body, "layers"):
        block = unwrap(block)
        attn, mlp = _sub(block, "attention"), _sub(block, "mlp")
        qkv, dense = _sub(attn, "query_key_value"), _sub(attn, "dense")
        h_to_4h, h4_to_h = _sub(mlp, "dense_h_to_4h"), _sub(mlp, "dense_4h_to_h")
        # query_key_value rows are grouped per head as [q, k, v] of d_head each.
        w_qkv = _f(qkv.weight).reshape(n, 3, d_head, d_model)
        b_qkv = _f(qkv.bias)
        b_qkv = None if b_qkv is None else b_qkv.reshape(n, 3, d_head)
        w_q, w_k, w_v = (w_qkv[:, i].transpose(1, 2).contiguous() for i in range(3))
        b_q, b_k, b_v = (None, None, None) if b_qkv is None else (b_qkv[:, i].contiguous() for i in range(3))
        layers.append(LayerWeights(
            w_q, w_k, w_v, _heads_out(_f(dense.weight), n), b_q, b_k, b_v, _f(dense.bias), None, None,
            d_head ** -0.5, None, rotary, _f(h_to_4h.weight).T.contiguous(), None,
            _f(h_to_4h.bias), _f(h4_to_h.weight).T.contiguous(),
            _f(h4_to_h.bias), _activation(config), _layernorm(_sub(block, "input_layernorm")),
            _layernorm(_sub(block, "post_attention_layernorm")), None, None,
        ))
    return ModelWeights("neox", _f(_sub(body, "embed_in").weight), None, 1.0, tuple(layers), _layernorm(_sub(body, "final_layer_norm")),
                        _f(_sub(hf, "embed_out|lm_head").weight).T.contiguous(), None, bool(config.use_parallel_residual))


def _gptj(hf: Any) -> ModelWeights:
    import torch

    config, body = hf.config, _sub(hf, "transformer")
    n, d_model = config.n_head, config.n_embd
    d_head = d_model // n
    rotary_dim = config.rotary_dim or d_head
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))
    rotary = Rotary(inv_freq, rotary_dim, "interleaved")
    layers = []
    for block in _sub(body, "h"):
        block = unwrap(block)
        attn, mlp = _sub(block, "attn"), _sub(block, "mlp")
        ln = _layernorm(_sub(block, "ln_1"))
        layers.append(LayerWeights(
            _heads_in(_f(_sub(attn, "q_proj").weight), n), _heads_in(_f(_sub(attn, "k_proj").weight), n),
            _heads_in(_f(_sub(attn, "v_proj").weight), n), _heads_out(_f(_sub(attn, "out_proj").weight), n), None, None, None, None, None, None, d_head ** -0.5, None, rotary,
            _f(_sub(mlp, "fc_in").weight).T.contiguous(), None, _f(_sub(mlp, "fc_in").bias),
            _f(_sub(mlp, "fc_out").weight).T.contiguous(), _f(_sub(mlp, "fc_out").bias), _activation(config), ln, ln, None, None,
        ))
    head = _sub(hf, "lm_head")
    return ModelWeights("gptj", _f(_sub(body, "wte").weight), None, 1.0, tuple(layers), _layernorm(_sub(body, "ln_f")),
                        _f(head.weight).T.contiguous(), _f(head.bias), True)


def _llama_like(hf: Any, family: str) -> ModelWeights:
    config, body = hf.config, _sub(hf, "model")
    gemma = family == "gemma3"
    n, k = config.num_attention_heads, config.num_key_value_heads
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    rotary_emb = _sub(body, "rotary_emb")

    def gemma_norm(module: Any) -> Norm:
        return _rmsnorm(module, plus_one=True)

    norm: Callable[[Any], Norm] = gemma_norm if gemma else _rmsnorm
    layers = []
    for index, block in enumerate(_sub(body, "layers")):
        block = unwrap(block)
        attn, mlp = _sub(block, "self_attn"), _sub(block, "mlp")
        q, k_proj, v, o = (_sub(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
        up, gate, down = (_sub(mlp, name) for name in ("up_proj", "gate_proj", "down_proj"))
        prefix = f"{layer_types[index]}_" if gemma else ""
        inv_freq = getattr(rotary_emb, f"{prefix}inv_freq")
        scaling = float(getattr(rotary_emb, f"{prefix}attention_scaling", 1.0))
        rotary = Rotary(_f(inv_freq), 2 * inv_freq.numel(), "half", scaling)
        ln2_name = "pre_feedforward_layernorm" if gemma else "post_attention_layernorm"
        layers.append(LayerWeights(
            _heads_in(_f(q.weight), n), _heads_in(_f(k_proj.weight), k), _heads_in(_f(v.weight), k),
            _heads_out(_f(o.weight), n), _bias_heads(q.bias, n), _bias_heads(k_proj.bias, k), _bias_heads(v.bias, k),
            _f(o.bias), norm(_sub(attn, "q_norm")) if gemma else None, norm(_sub(attn, "k_norm")) if gemma else None,
            float(attn.scaling), getattr(attn, "sliding_window", None), rotary,
            _f(up.weight).T.contiguous(), _f(gate.weight).T.contiguous(), _f(up.bias), _f(down.weight).T.contiguous(),
            _f(down.bias), _activation(config), norm(_sub(block, "input_layernorm")), norm(_sub(block, ln2_name)),
            norm(_sub(block, "post_attention_layernorm")) if gemma else None,
            norm(_sub(block, "post_feedforward_layernorm")) if gemma else None,
        ))
    embed = _sub(body, "embed_tokens")
    embed_scale = float(getattr(embed, "embed_scale", 1.0))
    head = _sub(hf, "lm_head")
    return ModelWeights(family, _f(embed.weight) * embed_scale, None, embed_scale, tuple(layers), norm(_sub(body, "norm")),
                        _f(head.weight).T.contiguous(), _f(getattr(head, "bias", None)), False)


def _phi(hf: Any) -> ModelWeights:
    config, body = hf.config, _sub(hf, "model")
    n = config.num_attention_heads
    k = getattr(config, "num_key_value_heads", None) or n
    d_head = config.hidden_size // n
    rotary_emb = _sub(body, "rotary_emb")
    rotary = Rotary(_f(rotary_emb.inv_freq), 2 * rotary_emb.inv_freq.numel(), "half", float(getattr(rotary_emb, "attention_scaling", 1.0)))
    layers = []
    for block in _sub(body, "layers"):
        block = unwrap(block)
        attn, mlp = _sub(block, "self_attn"), _sub(block, "mlp")
        q, k_proj, v, dense = (_sub(attn, name) for name in ("q_proj", "k_proj", "v_proj", "dense"))
        fc1, fc2 = _sub(mlp, "fc1"), _sub(mlp, "fc2")
        ln = _layernorm(_sub(block, "input_layernorm"))
        layers.append(LayerWeights(
            _heads_in(_f(q.weight), n), _heads_in(_f(k_proj.weight), k), _heads_in(_f(v.weight), k), _heads_out(_f(dense.weight), n),
            _bias_heads(q.bias, n), _bias_heads(k_proj.bias, k), _bias_heads(v.bias, k), _f(dense.bias), None, None,
            d_head ** -0.5, None, rotary, _f(fc1.weight).T.contiguous(), None, _f(fc1.bias), _f(fc2.weight).T.contiguous(),
            _f(fc2.bias), _activation(config), ln, ln, None, None,
        ))
    head = _sub(hf, "lm_head")
    return ModelWeights("phi", _f(_sub(body, "embed_tokens").weight), None, 1.0, tuple(layers), _layernorm(_sub(body, "final_layernorm")),
                        _f(head.weight).T.contiguous(), _f(getattr(head, "bias", None)), True)


_READERS = {"gpt2": _gpt2, "neox": _neox, "gptj": _gptj, "phi": _phi}


def model_weights(model: LoadedModel | torch.nn.Module) -> ModelWeights:
    """The raw weights of a LoadedModel (or a bare HF causal LM), as described in the module doc;
    kept on a LoadedModel, read afresh from a bare module."""
    import torch

    from analyses.model.loading import LoadedModel

    if isinstance(model, LoadedModel) and model._weights is not None:
        return model._weights
    hf = model.bridge.original_model if isinstance(model, LoadedModel) else model
    family = family_of(hf)
    with torch.no_grad():
        weights = _READERS[family](hf) if family in _READERS else _llama_like(hf, family)
    if isinstance(model, LoadedModel):
        model._weights = weights
    return weights


def apply_norm(norm: Norm, x: Any) -> Any:
    """The norm applied to x [..., d] in float32 (or float64 when given), as the model does."""
    x = x if x.element_size() == 8 else x.float()
    if norm.kind == "layernorm":
        centred = x - x.mean(-1, keepdim=True)
        out = centred / (centred.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * norm.weight
        return out + norm.bias if norm.bias is not None else out
    return x / (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * norm.weight


def norm_scale(norm: Norm, x: Any) -> Any:
    """The denominator the norm divides x [..., d] by: std (layernorm) or RMS, eps included."""
    x = x.float()
    if norm.kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1) + norm.eps).sqrt()


def apply_norm_at_scale(norm: Norm, x: Any, scale: Any) -> Any:
    """The norm with its denominator fixed to scale: affine in x (the linearised norm)."""
    x = x.float()
    if norm.kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    out = x / scale * norm.weight
    return out + norm.bias if norm.bias is not None else out


def rotate(x: Any, positions: Any, rotary: Rotary) -> Any:
    """Rotary embedding of x [..., T, h] at positions [T] (the first rotary.dim dims of each head)."""
    import torch

    # positions and frequencies follow x: a CPU arange with CUDA weights failed on an H200
    angles = positions.to(device=x.device, dtype=x.dtype)[:, None] * rotary.inv_freq.to(device=x.device, dtype=x.dtype)[None, :]
    cos, sin = angles.cos() * rotary.attention_scaling, angles.sin() * rotary.attention_scaling
    part, rest = x[..., :rotary.dim], x[..., rotary.dim:]
    if rotary.style == "half":
        half = rotary.dim // 2
        first, second = part[..., :half], part[..., half:]
        rotated = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    else:
        even, odd = part[..., 0::2], part[..., 1::2]
        rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    return torch.cat((rotated, rest), dim=-1)


def activation(name: str) -> Any:
    from transformers.activations import ACT2FN

    return ACT2FN[name]


def attention_scores(layer: LayerWeights, resid: Any) -> tuple[Any, Any]:
    """A layer's attention scores [H, T, T] (float64, -inf where masked) and the mask of visible
    keys [T, T], from the residual [T, d] it reads; what the softmax of the model sees."""
    import torch

    x = apply_norm(layer.ln1, resid).double()
    q = torch.einsum("td,ndh->nth", x, layer.W_Q.double())
    k = torch.einsum("td,kdh->kth", x, layer.W_K.double())
    if layer.b_Q is not None:
        q, k = q + layer.b_Q.double()[:, None], k + layer.b_K.double()[:, None]
    if layer.q_norm is not None and layer.k_norm is not None:  # set together (Gemma 3)
        q, k = apply_norm(layer.q_norm, q).double(), apply_norm(layer.k_norm, k).double()
    positions = torch.arange(resid.shape[0], device=resid.device)
    if layer.rotary is not None:
        q, k = rotate(q, positions, layer.rotary), rotate(k, positions, layer.rotary)
    k = k.repeat_interleave(layer.n_heads // layer.n_kv_heads, 0)
    offsets = positions[:, None] - positions[None, :]
    allowed = offsets >= 0
    if layer.sliding_window is not None:
        allowed &= offsets < layer.sliding_window
    scores = torch.einsum("nqh,nkh->nqk", q, k) * layer.attn_scale
    return scores.masked_fill(~allowed, float("-inf")), allowed
