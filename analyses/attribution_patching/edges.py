"""Edge attribution patching (EAP, Syed et al. 2023): a score for every edge between components,
from one source run and one gradient pass at the base run (a forward and a backward).

Upstream nodes write into the residual stream: ``embed`` (the residual stream before block 0),
each attention head ``Ll.Hh`` (its own output, attn.hook_result) and each MLP ``Ll.MLP``
(hook_mlp_out). Downstream inputs read from it: each head's query, key and value input (the
bridge's per-head residual copies before the attention norm, attn.hook_q_input / hook_k_input /
hook_v_input, with use_split_qkv_input; with grouped-query attention a key/value input belongs to
its key-value head ``Ll.KVg``), each MLP's input (hook_mlp_in) and the final residual stream
(``logits``, before the final norm). The per-head input gradient is the bridge's own, so the
scores need no per-family weight handling.

edge(u -> d) = mean over samples of sum over tokens of (u_source - u_base) . dM/d(input d), the
gradient taken at the base run. u feeds d when u's block comes before d's (and a head feeds the
MLP of its own block unless the block is parallel). Where the residual stream is the plain sum of
its writers, the edges into d sum exactly to d's own input score (input_source - input_base) .
dM/d(input d): checked in every run (atp_edge_inputs). Gemma 3 normalises each sublayer's output
before adding it (post-norm): a head's write is then post(a + delta_h) - post(a) with a the base
attention output, the change of the residual when only that head is patched, and the sum holds
to first order only (exact_sum false).

Exact edge patching (the checks): the base run with only input d changed by u's write,
input_d + (u_source - u_base), through the same hooks, batched one row per (edge, sample).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from analyses.attribution_patching.engine import Setup, _bind, forward
from analyses.core.contract import CancelEvent, check_cancel

INPUT_HOOK = {"q": "attn.hook_q_input", "k": "attn.hook_k_input", "v": "attn.hook_v_input", "mlp": "hook_mlp_in"}
FLAGS = ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in")
DOWN_CHUNK = 64  # downstream inputs whose gradients are stacked at once


@dataclass(frozen=True)
class Upstream:
    name: str
    kind: str  # embed / head / mlp
    layer: int  # -1 for embed
    index: int | None = None  # head


@dataclass(frozen=True)
class Downstream:
    name: str
    node: str  # the component it is an input of: Ll.Hh, Ll.KVg, Ll.MLP or logits
    input: str  # q / k / v / mlp / logits
    layer: int  # n_layers for logits
    index: int | None = None  # head (q) or key-value head (k, v)


@dataclass
class EdgeScores:
    ups: list
    downs: list
    scores: Any  # [U, D] float64 numpy, NaN where u does not feed d
    input_scores: Any  # [D]
    exact_sum: bool  # the residual stream is the plain sum of the upstream writes (no post-norm)
    up_deltas: Any  # [S, U, T, d] torch float64: each upstream node's write, source - base


def unavailable(model) -> str | None:
    """Why this model's edges cannot be scored (None when they can)."""
    from analyses.model.adapters import adapter_for

    adapter = adapter_for(model)
    if adapter.parallel and adapter.block_parts.get("ln2") is None:
        return f"edges: the {adapter.family} block's attention and MLP share one norm and the bridge has no MLP input hook before it"
    try:
        model.bridge._validate_attention_fork_supported("use_split_qkv_input")
    except NotImplementedError:
        return f"edges: the bridge has no per-head query/key/value input hook (use_split_qkv_input) for {adapter.family} attention"
    return None


@contextmanager
def edge_hooks(model):
    """The bridge's per-head input copies, per-head results and MLP input hook on, and back as they were."""
    bridge = model.bridge
    before = {flag: bool(getattr(bridge.cfg, flag, False)) for flag in FLAGS}
    try:
        bridge.set_use_split_qkv_input(True)
        bridge.set_use_attn_result(True)
        bridge.set_use_hook_mlp_in(True)
        yield
    finally:
        bridge.set_use_split_qkv_input(before["use_split_qkv_input"])
        bridge.set_use_attn_result(before["use_attn_result"])
        bridge.set_use_hook_mlp_in(before["use_hook_mlp_in"])


def nodes(model) -> tuple[list[Upstream], list[Downstream]]:
    n_layers, n_heads = model.n_layers, int(model.bridge.cfg.n_heads)
    n_kv = kv_heads(model)
    ups = [Upstream("embed", "embed", -1)]
    downs: list[Downstream] = []
    for layer in range(n_layers):
        ups += [Upstream(f"L{layer}.H{head}", "head", layer, head) for head in range(n_heads)]
        ups.append(Upstream(f"L{layer}.MLP", "mlp", layer))
        downs += [Downstream(f"L{layer}.H{head}.q", f"L{layer}.H{head}", "q", layer, head) for head in range(n_heads)]
        for name in ("k", "v"):
            downs += [Downstream(f"{kv_node(layer, group, n_kv, n_heads)}.{name}", kv_node(layer, group, n_kv, n_heads), name, layer, group)
                      for group in range(n_kv)]
        downs.append(Downstream(f"L{layer}.MLP", f"L{layer}.MLP", "mlp", layer))
    downs.append(Downstream("logits", "logits", "logits", n_layers))
    return ups, downs


def kv_heads(model) -> int:
    cfg = model.bridge.cfg
    return int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)


def kv_node(layer: int, group: int, n_kv: int, n_heads: int) -> str:
    return f"L{layer}.H{group}" if n_kv == n_heads else f"L{layer}.KV{group}"


def feeds(up: Upstream, down: Downstream, parallel: bool) -> bool:
    if up.kind == "embed" or down.input == "logits":
        return True
    if up.layer < down.layer:
        return True
    return up.layer == down.layer and up.kind == "head" and down.input == "mlp" and not parallel


def _site_hooks(model) -> list[tuple[str, str, int]]:
    """(key, hook name, layer) of every activation the edges read."""
    sites = [("embed", "blocks.0.hook_resid_pre", 0)]
    for layer in range(model.n_layers):
        sites += [("result", f"blocks.{layer}.attn.hook_result", layer), ("attn_pre", f"blocks.{layer}.attn.hook_out", layer),
                  ("mlp_out", f"blocks.{layer}.hook_mlp_out", layer)]
    return sites


def _input_hooks(model) -> list[tuple[str, str, int]]:
    inputs = [(name, f"blocks.{layer}.{hook}", layer) for layer in range(model.n_layers) for name, hook in INPUT_HOOK.items()]
    return inputs + [("logits", f"blocks.{model.n_layers - 1}.hook_resid_post", model.n_layers - 1)]


def _capture(model, run, rows: list[int], grad_metric: Any = None) -> tuple[dict, dict]:
    """Activations {(key, layer): [R, ...]} of the run's rows at every upstream and input site;
    with ``grad_metric``, also {(input, layer): dM/d input} of the summed metric."""
    import torch

    values: dict = {}
    deltas: dict = {}

    def keep(tensor: Any, hook: Any, key: tuple) -> Any:
        # Every head's query/key/value input is a copy of the same residual stream: one is kept.
        values[key] = (tensor[:, :, 0] if key[0] in ("q", "k", "v") else tensor).detach().clone()
        if grad_metric is not None and key[0] in (*INPUT_HOOK, "logits"):
            delta = torch.zeros_like(tensor, requires_grad=True)
            deltas[key] = delta
            return tensor + delta
        return None

    hooks = [(hook, _bind(keep, key=(key, layer))) for key, hook, layer in (*_site_hooks(model), *_input_hooks(model))]
    if grad_metric is None:
        with torch.inference_mode():
            forward(model, run, rows, hooks)
        return values, {}
    with torch.enable_grad():
        logits = forward(model, run, rows, hooks)
        total = grad_metric(logits).sum()
        keys = list(deltas)
        grads = torch.autograd.grad(total, [deltas[key] for key in keys], allow_unused=True)
    return values, {key: (torch.zeros_like(deltas[key]) if grad is None else grad.detach()) for key, grad in zip(keys, grads)}


def _post_attn(model, layer: int) -> Any:
    from analyses.model.adapters import adapter_for

    return adapter_for(model).layers[layer].post_attn


def up_writes(model, ups: list[Upstream], base: dict, source: dict, base_of: list[int], source_of: list[int]) -> Any:
    """[S, U, T, d] float64: what each upstream node adds to the residual stream, source - base."""
    import torch

    rows_b, rows_s = torch.tensor(base_of), torch.tensor(source_of)

    def diff(key: tuple) -> Any:
        return source[key][rows_s].double() - base[key][rows_b].double()

    per_node: list = []
    for up in ups:
        if up.kind == "embed":
            per_node.append(diff(("embed", 0)))
        elif up.kind == "mlp":
            per_node.append(diff(("mlp_out", up.layer)))
        elif up.index == 0:
            # Every head of the layer at once: [S, T, H, d] -> H entries.
            change = diff(("result", up.layer))
            post = _post_attn(model, up.layer)
            if post is not None:
                with torch.inference_mode():
                    attn = base[("attn_pre", up.layer)][rows_b]
                    moved = attn[:, :, None] + change.to(attn.dtype)
                    change = (post(moved) - post(attn)[:, :, None]).double()
            per_node += [change[:, :, head] for head in range(change.shape[2])]
    return torch.stack(per_node, dim=1)


def _input_grad(grads: dict, down: Downstream, rows: Any) -> Any:
    """[S, T, d] gradient at one downstream input (its head's copy for q/k/v)."""
    key = ("logits", down.layer - 1) if down.input == "logits" else (down.input, down.layer)
    grad = grads[key][rows].double()
    return grad[:, :, down.index] if down.input in ("q", "k", "v") else grad


def _input_change(base: dict, source: dict, down: Downstream, rows_b: Any, rows_s: Any) -> Any:
    key = ("logits", down.layer - 1) if down.input == "logits" else (down.input, down.layer)
    return source[key][rows_s].double() - base[key][rows_b].double()


def edge_scores(model, setup: Setup, cancel: CancelEvent | None = None) -> EdgeScores:
    """Every edge's EAP score, each input's own score, and the upstream writes (for exact checks)."""
    import numpy as np
    import torch

    from analyses.model.adapters import adapter_for

    ups, downs = nodes(model)
    parallel = adapter_for(model).parallel
    base_of, source_of = setup.base_rows(), setup.source_rows()
    with edge_hooks(model):
        check_cancel(cancel)
        source, _ = _capture(model, setup.source, list(range(setup.source.rows)))
        check_cancel(cancel)
        base, grads = _capture(model, setup.base, list(range(setup.base.rows)), setup.metric)
    writes = up_writes(model, ups, base, source, base_of, source_of)
    rows_b, rows_s = torch.tensor(base_of), torch.tensor(source_of)
    samples = setup.samples
    # The downstream inputs' gradients a chunk at a time: [S, chunk, T, d] in float64, not all at once.
    parts, input_scores = [], []
    for start in range(0, len(downs), DOWN_CHUNK):
        chunk = downs[start : start + DOWN_CHUNK]
        gradients = torch.stack([_input_grad(grads, down, rows_b) for down in chunk], dim=1)
        parts.append(torch.einsum("sutd,svtd->uv", writes, gradients).cpu().numpy() / samples)
        input_scores += [float(torch.einsum("std,std->", _input_change(base, source, down, rows_b, rows_s), gradients[:, j])) / samples
                         for j, down in enumerate(chunk)]
    mask = np.array([[feeds(up, down, parallel) for down in downs] for up in ups])
    scores = np.where(mask, np.concatenate(parts, axis=1), np.nan)
    exact_sum = all(_post_attn(model, layer) is None for layer in range(model.n_layers))
    return EdgeScores(ups, downs, scores, np.array(input_scores), exact_sum, writes)


def exact_edges(model, setup: Setup, edges: EdgeScores, pairs: list[tuple[int, int]], batch_rows: int = 64,
                cancel: CancelEvent | None = None) -> list[float]:
    """Exact edge patching of (upstream index, downstream index) pairs: the mean over samples of
    M(base with only input d moved by u's write) - M(base)."""
    import torch

    samples = setup.samples
    base_of = setup.base_rows()
    jobs = [(pair_index, sample) for pair_index in range(len(pairs)) for sample in range(samples)]
    totals = [0.0] * len(pairs)
    per_chunk = max(1, batch_rows - samples)
    with edge_hooks(model):
        for start in range(0, len(jobs), per_chunk):
            check_cancel(cancel)
            chunk = jobs[start : start + per_chunk] + [(-1, sample) for sample in range(samples)]
            by_hook: dict = {}
            for row, (pair_index, sample) in enumerate(chunk):
                if pair_index < 0:
                    continue
                up_index, down_index = pairs[pair_index]
                down = edges.downs[down_index]
                hook = (f"blocks.{model.n_layers - 1}.hook_resid_post" if down.input == "logits"
                        else f"blocks.{down.layer}.{INPUT_HOOK[down.input]}")
                by_hook.setdefault(hook, []).append((row, up_index, down, sample))
            hooks = [(hook, _edge_hook(rows, edges.up_deltas)) for hook, rows in by_hook.items()]
            with torch.inference_mode():
                logits = forward(model, setup.base, [base_of[sample] for _, sample in chunk], hooks)
                values = setup.metric(logits).cpu().tolist()
            unpatched = sum(values[-samples:])
            for (pair_index, _), value in zip(chunk[:-samples], values[:-samples]):
                totals[pair_index] += value - unpatched / samples
    return [total / samples for total in totals]


def _edge_hook(rows: list, writes: Any):
    def add(tensor: Any, hook: Any) -> Any:
        out = tensor.clone()
        for row, up_index, down, sample in rows:
            write = writes[sample, up_index].to(out.device, out.dtype)
            if down.input in ("q", "k", "v"):
                out[row, :, down.index] += write
            else:
                out[row] += write
        return out

    return add
