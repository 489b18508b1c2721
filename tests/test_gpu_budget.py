"""The CUDA token budget (tokens per forward, from free memory) must leave room for the logits a
full forward returns: found on an H200, where a full batch under the old budget asked for 217 GiB
of logits. CPU-runnable: the free memory is faked; the CPU budget stays the fixed default."""
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
