"""The generation lens' fast paths against straightforward computations (tiny model): the
unembedding in vocabulary slices with the softmax's sums taken slice by slice equals one product,
logsumexp and sum(p * logit); the stats' own passes give the same; the bridge's wrappers that
generate bypasses come back afterwards, and a generation is the same with slices of any size."""
from __future__ import annotations

import pytest
import torch

from analyses.generation import Params, _lens_stats, build_plan, engine, generate
from analyses.model.adapters import adapter_for


def _plain(model, rows):
    adapter = adapter_for(model)
    logits = adapter.unembed(adapter.final_norm(rows[None]))[0].float()
    return logits, torch.logsumexp(logits, -1), (torch.softmax(logits, -1) * logits).sum(-1)


@pytest.mark.parametrize("chunk", [7, 1000, 1024, 100_000])
def test_sliced_unembedding_and_sums_equal_one_product(tiny_model, monkeypatch, chunk):
    # 49152 tokens: 7 and 1000 leave a ragged last slice, 100_000 is one slice.
    monkeypatch.setattr(engine, "UNEMBED_CHUNK", chunk)
    rows = torch.randn(5, tiny_model.d_model, generator=torch.Generator().manual_seed(0)) * 4
    with torch.inference_mode():
        got = engine.lens_logits(tiny_model, rows)
        logits, lse, mean_logit = _plain(tiny_model, rows)
        # Same dot products: the logits agree to float32 rounding of the product's blocking.
        torch.testing.assert_close(got.logits, logits, atol=1e-6, rtol=1e-6)
        # The sums in another order: float32 rounding (about 1e-6 relative).
        torch.testing.assert_close(got.lse, lse, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.mean_logit, mean_logit, atol=1e-5, rtol=1e-5)
        # The stats from the slices' sums equal those from their own passes over the logits.
        token = int(logits[-1].argmax())
        fused = _lens_stats(got.logits, token, 3, got.lse, got.mean_logit)
        passes = _lens_stats(logits, token, 3)
        for a, b in zip(fused, passes):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        probs = torch.softmax(logits, -1)
        torch.testing.assert_close(fused[0], probs[:, token], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fused[1], (probs > probs[:, token : token + 1]).sum(-1) + 1)
        entropy = -(probs * probs.log()).nansum(-1) / torch.log(torch.tensor(2.0))
        torch.testing.assert_close(fused[4], entropy, atol=1e-4, rtol=1e-5)


def test_stats_survive_an_infinite_logit():
    logits = torch.tensor([[0.0, 1.0, float("-inf"), 2.0], [3.0, 3.0, 1.0, 0.0]])
    chosen, ranks, top_p, top_ids, entropy = _lens_stats(logits, 1, 2)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(chosen, probs[:, 1])
    assert ranks.tolist() == [2, 1]
    assert torch.isfinite(entropy).all()
    torch.testing.assert_close(entropy, -(probs * probs.log()).nansum(-1) / torch.log(torch.tensor(2.0)))


def test_wrappers_come_back_and_slices_do_not_change_a_generation(tiny_model, monkeypatch):
    adapter = adapter_for(tiny_model)
    before = [(name, child) for parts in adapter.layers for owner in (parts.attn, parts.mlp) for name, child in owner.named_children()]
    assert any("_original_component" in child._modules for _, child in before)  # the bridge wraps the projections
    params = Params(max_new_tokens=5, stop_at_eos=False, steer=" Love| Hate", steer_coef=4.0, ablate="h1.0,n0.3")
    plan, _ = build_plan(tiny_model, params)
    ids = tiny_model.to_tokens("The quick brown fox")
    with torch.inference_mode():
        with engine.bare_blocks(tiny_model):
            inside = [child for parts in adapter.layers for owner in (parts.attn, parts.mlp) for child in owner.children()]
            assert not any("_original_component" in child._modules for child in inside)
        one = generate(tiny_model, ids, params, plan)
        monkeypatch.setattr(engine, "UNEMBED_CHUNK", 7)
        other = generate(tiny_model, ids, params, plan)
    after = [(name, child) for parts in adapter.layers for owner in (parts.attn, parts.mlp) for name, child in owner.named_children()]
    assert [(n, id(c)) for n, c in after] == [(n, id(c)) for n, c in before]
    assert one.new_ids == other.new_ids
    for key in ("chosen_prob", "entropy_bits", "top_prob"):
        assert one.lens[key] == pytest.approx(other.lens[key], abs=1e-5)
    assert one.lens["chosen_rank"] == other.lens["chosen_rank"]
