"""Device bugs found on an H200, each checked here without a GPU. The CUDA token budget (tokens
per forward, from free memory) must leave room for the logits a full forward returns (a full batch
under the old budget asked for 217 GiB of logits): the free memory is faked, the CPU budget stays
the fixed default. AtP's QK pass from the caches must build its masks on the caches' device: the
caches are moved to the meta device, which fails on a CPU tensor as cuda:0 did."""
from __future__ import annotations

import dataclasses


def test_cuda_budget_fits_a_full_batch_of_logits(tiny_model, monkeypatch):
    import torch

    from analyses.causal_trace.engine import batch_tokens_limit
    from analyses.model.hooks import batch_token_budget
    from analyses.model.tokens import CPU_BATCH_TOKENS

    free = 8 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    gpu = dataclasses.replace(tiny_model, device="cuda")
    for budget in (batch_tokens_limit(gpu, 10), batch_token_budget(gpu, [10, 200])):
        # float32 logits of every token of a full batch, with a softmax beside them, in the free memory
        assert 256 <= budget and budget * gpu.d_vocab * 4 * 2 <= free
    assert batch_tokens_limit(tiny_model, 10) == CPU_BATCH_TOKENS


def test_the_qk_pass_from_the_caches_builds_its_masks_beside_the_caches(tiny_model):
    # On an H200 the QK pass from the caches failed: its position mask was made on the CPU while the
    # caches lay on cuda:0. Here the caches are moved to the "meta" device (no data; mixing it with
    # a CPU tensor fails the same way), so the check runs on a machine without a GPU.
    import numpy as np
    import torch

    from analyses.attribution_patching import engine

    tokens = tiny_model.to_tokens("The Eiffel Tower is located in the city of", prepend_bos="auto")
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, tiny_model.d_model)))
    setup = engine.Setup(engine.RunInput(tokens), engine.RunInput(tokens, noise, (1, 4)), engine.Metric("logprob", 0))
    base, _ = engine.capture(tiny_model, setup.base)
    source, _ = engine.capture(tiny_model, setup.source)
    scales = engine.qk_scales(tiny_model, base, source)
    assert scales is not None
    on_meta = [{key: value.to("meta") for key, value in cache.items()} for cache in (base, source)]
    star, linear = engine._qk_from_cache(tiny_model, setup, *on_meta, scales)
    assert {t.device.type for t in (*star.values(), *linear.values())} == {"meta"}


def _to_meta(value):
    """A weights dataclass (nested) with every tensor on the meta device."""
    import dataclasses

    import torch

    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _to_meta(getattr(value, f.name)) for f in dataclasses.fields(value)})
    return value


def test_attention_scores_from_weights_follow_the_residual_device(tiny_model):
    # first-layer-heads failed on an H200: attention_scores made its positions with a CPU arange
    # while the residual and weights were on cuda:0 (rotate's angles, then the causal mask).
    import torch

    from analyses.model.weights import attention_scores, model_weights, rotate

    layer = _to_meta(model_weights(tiny_model).layers[0])
    scores, allowed = attention_scores(layer, torch.zeros(5, tiny_model.d_model, device="meta"))
    assert scores.device.type == allowed.device.type == "meta" and tuple(scores.shape) == (layer.n_heads, 5, 5)
    # rotate with CPU positions (contextual-neurons passes a CPU arange) on meta queries
    query = torch.zeros(3, layer.rotary.dim, device="meta")
    assert rotate(query, torch.arange(3), layer.rotary).device.type == "meta"
