"""Attribution patching engine: the base and source runs, the gradient pass (with GradDrop's
variants in the same batch), the QK pass for attention heads and the per-node estimates.

Direction: nodes are patched from the *source* run into the *base* run and the metric is read on
the base run (noising: base = clean, source = corrupt; denoising: the other way round). With
noise corruption a run has S rows (one per noise sample) and sample s pairs base row b(s) with
source row r(s) (the single row of the uncorrupted run, or row s). Every number is a mean over s.

Nodes (bridge hooks, so every family is covered the same way):
- resid / attn / mlp at (layer, pos): blocks.L.hook_resid_post / hook_attn_out / hook_mlp_out;
- neuron (layer, n): blocks.L.mlp.out.hook_in (what W_out reads), all positions (sum) or the last;
- head (layer, h, pos): head h reads position pos from the source run (its query, key and value
  at pos); this changes its output at every query >= pos. head_total (layer, h): the whole head's
  output (attn.hook_z) from the source run.
AtP(n) = (n_source - n_base) . dM/dn at the base run. For heads plain AtP linearises the softmax
(the exact score change through the softmax's Jacobian); AtP*'s QK fix takes the head's exact new
output (pattern recomputed through the softmax by the model itself in the QK pass) and linearises
only downstream of it. GradDrop (AtP*): for each layer l, the gradient with layer l's residual
contribution detached; score = sum_l |AtP_l(n)| / (L - 1), used to rank nodes for the checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analyses.core.contract import CancelEvent, check_cancel

POSITION_KINDS = ("resid", "attn", "mlp")
HOOK = {
    "resid": "hook_resid_post", "attn": "hook_attn_out", "mlp": "hook_mlp_out", "z": "attn.hook_z", "neuron": "mlp.out.hook_in",
    "attn_in": "attn.hook_in", "scores": "attn.hook_attn_scores", "pattern": "attn.hook_pattern", "v": "attn.hook_v",
    "q": "attn.hook_rot_q", "k": "attn.hook_rot_k",
}
GRAD_SITES = ("resid", "attn", "mlp", "z", "neuron")
CACHE_SITES = ("resid", "attn", "mlp", "z", "neuron", "attn_in", "scores", "pattern", "v", "q", "k")
METRICS = ("logprob", "logit_diff", "kl")


def hook_name(site: str, layer: int) -> str:
    return f"blocks.{layer}.{HOOK[site]}"


@dataclass(frozen=True)
class RunInput:
    """One side of the patch: tokens [1, T] and optional noise [S, e-b, d] on the token embeddings
    of subject_range (added exactly as causal tracing adds it)."""

    tokens: Any
    noise: Any = None
    subject_range: tuple[int, int] = (0, 0)

    @property
    def rows(self) -> int:
        return 1 if self.noise is None else int(self.noise.shape[0])


@dataclass(frozen=True)
class Metric:
    """M(logits at the last position) per row, in float64: log p(target), logit(target) -
    logit(foil), or KL(clean || row) in nats."""

    kind: str
    target_id: int
    foil_id: int | None = None
    reference_logprobs: Any = None

    def __call__(self, last_logits: Any) -> Any:
        import torch

        logits = last_logits.double()
        if self.kind == "logit_diff":
            return logits[:, self.target_id] - logits[:, self.foil_id]
        logprobs = torch.log_softmax(logits, dim=-1)
        if self.kind == "kl":
            reference = self.reference_logprobs.to(logprobs.device)
            return (reference.exp() * (reference - logprobs)).sum(-1)
        return logprobs[:, self.target_id]


@dataclass(frozen=True)
class Setup:
    base: RunInput
    source: RunInput
    metric: Metric

    @property
    def samples(self) -> int:
        return max(self.base.rows, self.source.rows)

    def base_rows(self) -> list[int]:
        return [s if self.base.rows > 1 else 0 for s in range(self.samples)]

    def source_rows(self) -> list[int]:
        return [s if self.source.rows > 1 else 0 for s in range(self.samples)]


@dataclass
class Scores:
    """Per kind, numpy arrays: position kinds [L, T]; head [L, H, T]; head_total [L, H];
    neuron_sum / neuron_last [L, m]. ``estimate`` is the method's, ``atp`` plain AtP, ``graddrop``
    the GradDrop score (None without it)."""

    estimate: dict = field(default_factory=dict)
    atp: dict = field(default_factory=dict)
    graddrop: dict | None = None
    base_metric: float = 0.0
    source_metric: float = 0.0
    z_patched: dict = field(default_factory=dict)  # layer -> [T_node, S, T, H, dh] head outputs of the QK pass


def forward(model, run: RunInput, rows: list[int], hooks: list) -> Any:
    """Last-position logits [R, V] of the run's rows (noise rows given by index) with extra bridge
    hooks: the blocks through the bridge, then the model's own final norm and unembedding on the
    last position only (unembedding every position was most of a batched forward's time)."""
    return forward_runs(model, [(run, rows)], hooks)


def forward_runs(model, parts: list[tuple[RunInput, list[int]]], hooks: list) -> Any:
    """forward() of several runs' rows in one batch (each run's rows in the order given, runs one
    after the other): the runs must have the same token length."""
    import torch

    from analyses.causal_trace.engine import corrupt
    from analyses.model.adapters import adapter_for

    tokens = torch.cat([run.tokens.expand(len(rows), -1) for run, rows in parts])
    all_hooks = list(hooks)
    if any(run.noise is not None for run, _ in parts):
        def add_noise(embed: Any, hook: Any) -> Any:
            pieces, start = [], 0
            for run, rows in parts:
                piece = embed[start : start + len(rows)]
                pieces.append(piece if run.noise is None else corrupt(piece[:1], run.noise[rows], run.subject_range))
                start += len(rows)
            return torch.cat(pieces)

        all_hooks.insert(0, ("hook_embed", add_noise))
    final: dict = {}

    def keep_last(resid: Any, hook: Any) -> None:
        final["resid"] = resid[:, -1:]
        raise _LastBlockDone

    # Registered last, so that it sees the last block's output after any patch of it; the bridge's
    # stop_at_layer=n_layers still unembeds every position, so the forward stops here instead.
    all_hooks.append((hook_name("resid", model.n_layers - 1), keep_last))
    try:
        model.bridge.run_with_hooks(tokens, fwd_hooks=all_hooks, use_cache=False)
    except _LastBlockDone:
        pass
    return adapter_for(model).logits(final["resid"])[:, 0]


class _LastBlockDone(Exception):
    """Raised by the hook on the last block's output: the rest of the forward is not needed."""


def capture(model, run: RunInput, sites: tuple[str, ...] = CACHE_SITES) -> tuple[dict, Any]:
    """Every row of a run: {(site, layer): activation} and the last-position logits."""
    import torch

    cache: dict = {}
    with torch.inference_mode():
        logits = forward(model, run, list(range(run.rows)), _capture_hooks(model, sites, cache))
    return cache, logits.detach().clone()


def _capture_hooks(model, sites: tuple[str, ...], cache: dict) -> list:
    """Hooks that keep every row's activation at each site and layer in cache[(site, layer)]."""

    def keep(tensor: Any, hook: Any, key: tuple) -> None:
        cache[key] = tensor.detach().clone()

    hooks = [(hook_name(site, layer), _bind(keep, key=(site, layer))) for layer in range(model.n_layers) for site in sites if site not in ("q", "k")]
    # The queries and keys the scores are made of: rotated where the bridge hooks the rotation.
    hook_names = model.bridge.hook_dict
    for site in ("q", "k"):
        if site in sites:
            rotated = hook_name(site, 0) in hook_names
            hooks += [(f"blocks.{layer}.attn.hook_{'rot_' if rotated else ''}{site}", _bind(keep, key=(site, layer))) for layer in range(model.n_layers)]
    return hooks


def _bind(fn: Any, **bound: Any) -> Any:
    import functools

    return functools.partial(fn, **bound)


def gradients(model, setup: Setup, variants: list[int], cancel: CancelEvent | None = None) -> dict:
    """{(site, layer): dM/d activation [len(variants), base rows, ...]} at the base run. Variant 0
    is the plain gradient; variant l + 1 detaches layer l's attention and MLP outputs (GradDrop)."""
    return _gradient_run(model, setup, variants, cancel)[0]


def both_runs(model, setup: Setup, cancel: CancelEvent | None = None) -> tuple[dict, Any, dict, dict, Any]:
    """Both runs' caches (as capture's) and last-position logits, and the plain gradients at the
    base run, from one batched forward and one backward: the source rows ride in the base run's
    batch (a forward of a few more rows of a short prompt costs far less than a second forward; the
    backward reads only the base rows' metric). Returns the base cache, base logits, plain
    gradients, source cache, source logits."""
    cache: dict = {}
    grads, logits = _gradient_run(model, setup, [0], cancel, cache)
    base_rows = setup.base.rows
    base = {key: value[:base_rows] for key, value in cache.items()}
    source = {key: value[base_rows:] for key, value in cache.items()}
    return base, logits[:base_rows], grads, source, logits[base_rows:]


def _gradient_run(model, setup: Setup, variants: list[int], cancel: CancelEvent | None = None, cache: dict | None = None) -> tuple[dict, Any]:
    """gradients(); with cache (variants [0] only) the source run's rows ride after the base rows
    (the metric does not read them) and every CACHE_SITES activation of both goes into cache."""
    import torch

    check_cancel(cancel)
    base_rows = setup.base.rows
    row_variant = torch.tensor(variants).repeat_interleave(base_rows)
    if cache is not None:
        row_variant = torch.cat([row_variant, torch.full((setup.source.rows,), -1)])
    deltas: dict = {}

    def add_delta(tensor: Any, hook: Any, key: tuple) -> Any:
        delta = torch.zeros_like(tensor, requires_grad=True)
        deltas[key] = delta
        value = tensor + delta
        site, layer = key
        if site in ("attn", "mlp"):
            dropped = (row_variant == layer + 1).to(value.device)
            if bool(dropped.any()):
                value = torch.where(dropped[:, None, None], value.detach(), value)
        return value

    hooks = [] if cache is None else _capture_hooks(model, CACHE_SITES, cache)  # before add_delta: they keep the value itself
    hooks += [(hook_name(site, layer), _bind(add_delta, key=(site, layer))) for layer in range(model.n_layers) for site in GRAD_SITES]
    rows = list(range(base_rows)) * len(variants)
    parts = [(setup.base, rows)] + ([(setup.source, list(range(setup.source.rows)))] if cache is not None else [])
    with torch.enable_grad():
        logits = forward_runs(model, parts, hooks)
        total = setup.metric(logits[: len(rows)]).sum()
        keys = list(deltas)
        grads = torch.autograd.grad(total, [deltas[key] for key in keys], allow_unused=True)
    out = {}
    for key, grad in zip(keys, grads):
        if grad is None:
            grad = torch.zeros_like(deltas[key])
        out[key] = grad.detach()[: len(rows)].reshape(len(variants), base_rows, *grad.shape[1:])
    return out, logits.detach().clone()


def qk_pass(model, setup: Setup, base: dict, source: dict, batch_rows: int, cancel: CancelEvent | None = None) -> tuple[dict, dict]:
    """For every layer, head and position t: the head's exact output when it reads t from the
    source run (its query, key and value at t), and plain AtP's linearisation of that change.
    Returns {layer: dz_star}, {layer: dz_linear}, each [T, S, T_query, H, dh] (float64).

    From the two runs' cached queries, keys and values (no forward) where they reproduce the
    model's own scores (scale . q k + mask, every layer, both runs): Llama family, Gemma 3, GPT-2,
    Phi. Otherwise (GPT-NeoX, GPT-J: rotary applied with no hook on the rotated q and k) the
    forward QK pass, rows (t, s) of one batched forward."""
    scales = qk_scales(model, base, source)
    if scales is not None:
        check_cancel(cancel)
        return _qk_from_cache(model, setup, base, source, scales)
    return _qk_forward(model, setup, base, source, batch_rows, cancel)


QK_TOLERANCE = 1e-4  # |model's score - scale . q k| relative to the layer's largest |score|, unmasked entries: float32 rounding is ~1e-6


def _masked(scores: Any) -> Any:
    """Entries the causal (or sliding-window) mask removed: -inf or the dtype's most negative value."""
    import torch

    return scores <= torch.finfo(scores.dtype).min / 2


def qk_scales(model, base: dict, source: dict) -> list[float] | None:
    """Per layer, the attention's score scale if the cached q and k reproduce both runs' scores
    on every unmasked entry (within QK_TOLERANCE); None where any layer does not."""
    import torch

    from analyses.model.families import unwrap

    if ("q", 0) not in base:
        return None
    scales = []
    for layer in range(model.n_layers):
        scale = getattr(unwrap(model.bridge.blocks[layer].attn), "scaling", None)
        if not isinstance(scale, (int, float)):
            return None
        for run in (base, source):
            scores = run[("scores", layer)]
            queries = run[("q", layer)]
            keys = _expand_heads(run[("k", layer)], queries.shape[2])
            rebuilt = torch.einsum("rqhd,rkhd->rhqk", queries.double(), keys.double()) * scale
            unmasked = ~_masked(scores)
            if not bool(unmasked.any()):
                return None
            error = (scores.double() - rebuilt)[unmasked].abs().max()
            if not float(error) <= QK_TOLERANCE * max(1.0, float(scores.double()[unmasked].abs().max())):
                return None
        scales.append(float(scale))
    return scales


def _qk_from_cache(model, setup: Setup, base: dict, source: dict, scales: list[float]) -> tuple[dict, dict]:
    """The QK pass computed from the caches: row t takes query, key and value at t from the
    source run. Every change is formed as a difference from the base values (dq, dk, dv, the
    scores' change, softmax of changed minus softmax of base scores of the same shape), so a node
    whose values do not change scores exactly 0, as in the forward QK pass."""
    import torch

    seq_len = setup.base.tokens.shape[1]
    base_rows, source_rows = torch.tensor(setup.base_rows()), torch.tensor(setup.source_rows())
    device = base[("q", 0)].device  # the caches stay where the model ran: build every mask beside them
    at_node = torch.eye(seq_len, dtype=torch.bool, device=device)  # [t, position]: row t reads position t from the source
    star: dict = {}
    linear: dict = {}
    for layer in range(model.n_layers):
        def both(site: str, heads: int | None = None, layer: int = layer) -> tuple[Any, Any]:
            b, s = base[(site, layer)][base_rows].double(), source[(site, layer)][source_rows].double()
            if heads is not None:
                b, s = _expand_heads(b, heads), _expand_heads(s, heads)
            # [t, S, T, H, dh]: the change that row t makes (the source minus the base value at t only)
            change = torch.where(at_node[:, None, :, None, None], (s - b)[None], torch.zeros((), dtype=b.dtype, device=b.device))
            return b, change

        q_base, dq = both("q")
        n_heads = q_base.shape[2]
        k_base, dk = both("k", n_heads)
        v_base, dv = both("v", n_heads)
        k_new = k_base[None] + dk
        # (q + dq)(k + dk) - q k = dq (k + dk) + q dk
        raw_change = (torch.einsum("tsqhd,tskhd->tshqk", dq, k_new) + torch.einsum("sqhd,tskhd->tshqk", q_base, dk)) * scales[layer]
        scores = base[("scores", layer)][base_rows].double()
        masked = _masked(base[("scores", layer)][base_rows])
        score_change = torch.where(masked[None], torch.zeros((), dtype=scores.dtype, device=scores.device), raw_change)
        pattern_before = torch.softmax(scores.expand_as(score_change), dim=-1)
        pattern_change = torch.softmax(scores[None] + score_change, dim=-1) - pattern_before
        values_new = v_base[None] + dv
        star[layer] = torch.einsum("tshqk,skhd->tsqhd", pattern_change, v_base) + torch.einsum("tshqk,tskhd->tsqhd", pattern_before + pattern_change, dv)
        pattern = base[("pattern", layer)][base_rows].double()
        linear_pattern = pattern[None] * (score_change - (pattern[None] * score_change).sum(-1, keepdim=True))
        linear[layer] = torch.einsum("tshqk,skhd->tsqhd", linear_pattern, v_base) + torch.einsum("shqk,tskhd->tsqhd", pattern, values_new - v_base[None])
    return star, linear


def _qk_forward(model, setup: Setup, base: dict, source: dict, batch_rows: int, cancel: CancelEvent | None = None) -> tuple[dict, dict]:
    """The forward QK pass: rows (t, s) patch the attention input at t and put the base output
    back, so the residual stream stays the base run's and one forward serves every layer."""
    import torch

    seq_len = setup.base.tokens.shape[1]
    samples = setup.samples
    base_of = setup.base_rows()
    pairs = [(t, s) for t in range(seq_len) for s in range(samples)]
    star: dict = {layer: [] for layer in range(model.n_layers)}
    linear: dict = {layer: [] for layer in range(model.n_layers)}
    for start in range(0, len(pairs), batch_rows):
        check_cancel(cancel)
        chunk = pairs[start : start + batch_rows]
        row_base = torch.tensor([base_of[s] for _, s in chunk])
        seen = _qk_chunk(model, setup, base, source, chunk)
        for layer in range(model.n_layers):
            z_base = base[("z", layer)][row_base].double()
            star[layer].append(seen[("z", layer)].double() - z_base)
            linear[layer].append(_linear_head_change(base, seen, layer, row_base))
    shape = (seq_len, samples)
    return ({layer: torch.cat(parts).reshape(*shape, *parts[0].shape[1:]) for layer, parts in star.items()},
            {layer: torch.cat(parts).reshape(*shape, *parts[0].shape[1:]) for layer, parts in linear.items()})


def _qk_chunk(model, setup: Setup, base: dict, source: dict, chunk: list) -> dict:
    """One forward of the QK pass over rows (t, s): {(site, layer): scores, pattern, v, z} as seen."""
    import torch

    base_of, source_of = setup.base_rows(), setup.source_rows()
    positions = torch.tensor([t for t, _ in chunk])
    row_base = torch.tensor([base_of[s] for _, s in chunk])
    row_source = torch.tensor([source_of[s] for _, s in chunk])
    row_ids = torch.arange(len(chunk))
    seen: dict = {}

    def patch_input(tensor: Any, hook: Any, layer: int) -> Any:
        device = tensor.device
        patched = tensor.clone()
        patched[row_ids.to(device), positions.to(device)] = source[("attn_in", layer)][row_source.to(device), positions.to(device)]
        return patched

    def keep(tensor: Any, hook: Any, key: tuple) -> None:
        seen[key] = tensor.detach().clone()

    def restore_z(tensor: Any, hook: Any, layer: int) -> Any:
        seen[("z", layer)] = tensor.detach().clone()
        return base[("z", layer)][row_base.to(tensor.device)].clone()

    hooks = []
    for layer in range(model.n_layers):
        hooks.append((hook_name("attn_in", layer), _bind(patch_input, layer=layer)))
        hooks += [(hook_name(site, layer), _bind(keep, key=(site, layer))) for site in ("scores", "pattern", "v")]
        hooks.append((hook_name("z", layer), _bind(restore_z, layer=layer)))
    with torch.inference_mode():
        forward(model, setup.base, row_base.tolist(), hooks)
    return seen


def _expand_heads(values: Any, n_heads: int) -> Any:
    """[R, T, KV, dh] -> [R, T, H, dh]: query head h reads KV head h // (H // KV)."""
    return values.repeat_interleave(n_heads // values.shape[2], dim=2)


def _linear_head_change(base: dict, seen: dict, layer: int, row_base: Any) -> Any:
    """Plain AtP's change of every head output: the exact score change through the softmax's
    Jacobian at the base pattern, plus the value change under the base pattern. [R, T, H, dh]."""
    import torch

    pattern = base[("pattern", layer)][row_base].double()
    n_heads = pattern.shape[1]
    scores_change = seen[("scores", layer)].double() - base[("scores", layer)][row_base].double()
    # Masked entries are equal (and huge) in both runs: their change is exactly 0; no NaN from inf - inf.
    scores_change = torch.where(pattern > 0, scores_change, torch.zeros_like(scores_change))
    pattern_change = pattern * (scores_change - (pattern * scores_change).sum(-1, keepdim=True))
    values = _expand_heads(base[("v", layer)][row_base].double(), n_heads)
    values_new = _expand_heads(seen[("v", layer)].double(), n_heads)
    return torch.einsum("rhqu,ruhd->rqhd", pattern_change, values) + torch.einsum("rhqu,ruhd->rqhd", pattern, values_new - values)


def node_scores(model, setup: Setup, method: str = "atp_star", graddrop: bool = True, batch_rows: int = 64, variant_chunk: int = 8,
                cancel: CancelEvent | None = None, progress: Any = None) -> tuple[Scores, dict, dict]:
    """Every node's estimate: the base run with its gradient and the source run (one batched
    forward, one backward), the QK pass (heads; from the caches where the model allows), then GradDrop's
    variants in chunks. Returns the scores and the two runs' caches."""
    import numpy as np
    import torch

    report = progress or (lambda done, total, note="": None)
    n_layers = model.n_layers
    use_graddrop = graddrop and method == "atp_star" and n_layers > 1
    steps = 3 + (n_layers if use_graddrop else 0)
    report(0, steps, "base run (forward and backward) and source run")
    check_cancel(cancel)
    base, base_logits, plain_grads, source, source_logits = both_runs(model, setup, cancel)
    base_of, source_of = setup.base_rows(), setup.source_rows()
    scores = Scores()
    scores.base_metric = float(setup.metric(base_logits)[base_of].mean())
    scores.source_metric = float(setup.metric(source_logits)[source_of].mean())
    report(1, steps, "QK pass (attention heads)")
    dz_star, dz_linear = qk_pass(model, setup, base, source, batch_rows, cancel)
    scores.z_patched = {layer: dz_star[layer] + base[("z", layer)][base_of].double()[None] for layer in range(n_layers)}
    deltas = {key: source[key][source_of].double() - base[key][base_of].double() for key in source if key[0] in GRAD_SITES}

    def estimates(grads: dict, n_variants: int) -> tuple[dict, dict]:
        """Per kind, [n_variants, ...] estimates: the method's and plain AtP."""
        base_index = torch.tensor(base_of)
        method_out: dict = {}
        plain_out: dict = {}
        per_layer: dict = {kind: [] for kind in (*POSITION_KINDS, "neuron_sum", "neuron_last", "head_total", "head_star", "head_linear")}
        for layer in range(n_layers):
            def g(site: str, layer: int = layer) -> Any:
                return grads[(site, layer)][:, base_index].double()

            for kind in POSITION_KINDS:
                per_layer[kind].append(torch.einsum("std,vstd->vt", deltas[(kind, layer)], g(kind)) / setup.samples)
            products = torch.einsum("stm,vstm->vstm", deltas[("neuron", layer)], g("neuron"))
            per_layer["neuron_sum"].append(products.sum(2).mean(1))
            per_layer["neuron_last"].append(products[:, :, -1].mean(1))
            g_z = g("z")
            per_layer["head_total"].append(torch.einsum("sqhd,vsqhd->vh", deltas[("z", layer)], g_z) / setup.samples)
            per_layer["head_star"].append(torch.einsum("tsqhd,vsqhd->vht", dz_star[layer], g_z) / setup.samples)
            per_layer["head_linear"].append(torch.einsum("tsqhd,vsqhd->vht", dz_linear[layer], g_z) / setup.samples)
        stacked = {kind: torch.stack(parts, dim=1).cpu().numpy() for kind, parts in per_layer.items()}
        for kind in (*POSITION_KINDS, "neuron_sum", "neuron_last", "head_total"):
            method_out[kind] = plain_out[kind] = stacked[kind]
        method_out["head"] = stacked["head_star"] if method == "atp_star" else stacked["head_linear"]
        plain_out["head"] = stacked["head_linear"]
        return method_out, plain_out

    report(2, steps, "estimates")
    method_est, plain_est = estimates(plain_grads, 1)
    scores.estimate = {kind: values[0] for kind, values in method_est.items()}
    scores.atp = {kind: values[0] for kind, values in plain_est.items()}
    if use_graddrop:
        totals = {kind: np.zeros_like(values) for kind, values in scores.estimate.items()}
        layers = list(range(n_layers))
        for start in range(0, n_layers, variant_chunk):
            chunk = layers[start : start + variant_chunk]
            report(3 + start, steps, f"GradDrop layers {chunk[0]}-{chunk[-1]}")
            dropped, _ = estimates(gradients(model, setup, [layer + 1 for layer in chunk], cancel), len(chunk))
            for kind, values in dropped.items():
                totals[kind] += np.abs(values).sum(0)
        scores.graddrop = {kind: values / (n_layers - 1) for kind, values in totals.items()}
    report(steps, steps, "node scores done")
    return scores, base, source
