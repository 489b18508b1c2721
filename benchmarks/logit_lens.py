"""Logit lens: the batched path against the naive reference loop on the same prompt.

Naive: a full run_with_cache, then one final-norm + unembedding + softmax per (layer, position).
Fast: analyses.logit_lens.run (names-filtered cache, chunks of layers x positions at once).
Prints the agreement, (layer, position) cells per second for both and the ratio; exits 1 on
disagreement. Usage: python benchmarks/logit_lens.py [--tokens 64] [--model smollm2-135m]
"""
from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXT = (
    "The Eiffel Tower is located in the city of Paris, which is the capital of France. "
    "It was built for the 1889 World's Fair and was at first criticised by artists and "
    "intellectuals, but it became a global icon of France and one of the most visited "
    "monuments in the world, with millions of people climbing it every single year."
)


def naive(model, tokens):
    import torch

    _, cache = model.bridge.run_with_cache(tokens)
    n_layers = model.n_layers
    residuals = [cache[f"blocks.{layer}.hook_resid_pre"][0] for layer in range(n_layers)]
    residuals.append(cache[f"blocks.{n_layers - 1}.hook_resid_post"][0])
    positions = tokens.shape[1]
    final = [torch.log_softmax(model.bridge.unembed(model.bridge.ln_final(residuals[-1][pos][None, None])).float()[0, 0], -1) for pos in range(positions)]
    entropy = torch.zeros(n_layers + 1, positions)
    kl = torch.zeros(n_layers + 1, positions)
    top = torch.zeros(n_layers + 1, positions, dtype=torch.long)
    for layer, residual in enumerate(residuals):
        for pos in range(positions):
            logp = torch.log_softmax(model.bridge.unembed(model.bridge.ln_final(residual[pos][None, None])).float()[0, 0], -1)
            p = logp.exp()
            entropy[layer, pos] = -(p * logp).sum() / math.log(2)
            kl[layer, pos] = (final[pos].exp() * (final[pos] - logp)).sum()
            top[layer, pos] = p.argmax()
    return entropy.numpy(), kl.numpy(), top.numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    from analyses import logit_lens
    from analyses.core.contract import Input, no_progress
    from analyses.model.loading import load_model

    model = load_model(args.model)
    tokens = model.to_tokens(TEXT * 4, max_tokens=args.tokens)
    text = model.tokenizer.decode(tokens[0, 1:].tolist())
    tokens = model.to_tokens(text)
    cells = (model.n_layers + 1) * tokens.shape[1]
    with torch.inference_mode():
        model.bridge(tokens)  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            entropy, kl, top = naive(model, tokens)
        naive_s = (time.perf_counter() - start) / args.repeats
        start = time.perf_counter()
        for _ in range(args.repeats):
            result = logit_lens.ANALYSIS.run(model, [Input(0, "prompt", text)], logit_lens.Params(), no_progress, threading.Event())
        fast_s = (time.perf_counter() - start) / args.repeats
    table = result.tables["logit_lens"].to_pandas().sort_values(["layer", "pos"])
    shape = entropy.shape
    entropy_diff = np.abs(table["entropy_bits"].to_numpy().reshape(shape) - entropy).max()
    kl_diff = np.abs(table["kl_to_final"].to_numpy().reshape(shape) - kl).max()
    top_agree = (table["top_token_id"].to_numpy().reshape(shape) == top).mean()
    print(f"model {args.model}, {tokens.shape[1]} tokens, {cells} (layer, position) cells, device {model.device}, torch threads {torch.get_num_threads()}")
    print(f"agreement: max |entropy diff| {entropy_diff:.2e} bits, max |KL diff| {kl_diff:.2e} nats, top-token agreement {top_agree:.4f}")
    print(f"naive: {naive_s:.3f} s  ({cells / naive_s:,.0f} cells/s)")
    print(f"fast:  {fast_s:.3f} s  ({cells / fast_s:,.0f} cells/s)")
    print(f"ratio: {naive_s / fast_s:.1f}x")
    ok = entropy_diff <= 1e-3 and kl_diff <= 1e-3 and top_agree >= 0.999
    print("AGREE" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
