"""The naive reference for causal tracing: one hooked forward per (kind, token, layer) cell, the
noise samples as the batch. Used by the tests and benchmarks/causal_trace.py; never by a run."""
from __future__ import annotations

from analyses.causal_trace.engine import HOOK_OF_KIND, TraceOutput, TraceSetup, corrupt, window_range
from analyses.core.contract import CancelEvent, Progress, check_cancel, no_progress


def trace_naive(model, setup: TraceSetup, kinds: tuple[str, ...], window: int, progress: Progress = no_progress, cancel: CancelEvent | None = None) -> TraceOutput:
    """The reference: one hooked forward per (kind, token, layer) cell, the samples as the batch."""
    import numpy as np
    import torch

    bridge, tokens = model.bridge, setup.tokens
    seq_len, n_layers, samples = tokens.shape[1], model.n_layers, setup.noise.shape[0]
    batch = tokens.expand(samples, -1)

    def add_noise(embed, hook):
        return corrupt(embed[:1], setup.noise, setup.subject_range)

    def answer_mean(logits) -> float:
        return float(torch.softmax(logits[:, -1].float(), dim=-1)[:, setup.answer_id].double().mean())

    def restore(value, t):
        def hook_fn(tensor, hook):
            tensor[:, t] = value
            return tensor

        return hook_fn

    with torch.inference_mode():
        names = [f"blocks.{layer}.{hook}" for layer in range(n_layers) for hook in ("hook_resid_post", "hook_mlp_out", "hook_attn_out")]
        clean_logits, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name in set(names))
        high = answer_mean(clean_logits)
        low = answer_mean(bridge.run_with_hooks(batch, fwd_hooks=[("hook_embed", add_noise)]))
        probs = {kind: np.zeros((seq_len, n_layers)) for kind in kinds}
        done, total = 0, len(kinds) * seq_len
        for kind in kinds:
            for t in range(seq_len):
                check_cancel(cancel)
                progress(done, total, f"{kind} token {t + 1}/{seq_len}")
                done += 1
                for layer in range(n_layers):
                    if kind == "resid":
                        patched = [layer]
                        hook_name = "hook_resid_post"
                    else:
                        patched = list(window_range(layer, n_layers, window))
                        hook_name = HOOK_OF_KIND[kind]
                    hooks = [("hook_embed", add_noise)]
                    hooks += [(f"blocks.{p}.{hook_name}", restore(cache[f"blocks.{p}.{hook_name}"][0, t], t)) for p in patched]
                    probs[kind][t, layer] = answer_mean(bridge.run_with_hooks(batch, fwd_hooks=hooks))
    return TraceOutput(probs, high, low)
