"""First-layer anatomy, weights-only parts: the vectorised paths against naive per-head,
per-position Python loops on a random model of GPT-2 small's shape (1 layer, d_model 768,
12 heads, n_ctx 1024, the embedded tokenizer's 49152 tokens).

1. Additive positional pattern: fast = engine.additive_scores + softmax for every destination
   0..1023 at once; naive = per head and destination, the linearised query built from the
   weights and one dot product and exp per key, for a few destinations, extrapolated to all.
2. Token contributions of a contextual head to MLP neurons: fast = compute.token_contributions
   over all tokens and neurons; naive = per (neuron, token) the weighted value . W_O . direction
   for a few neurons, extrapolated to all.
Prints the agreement and the ratios; exits 1 on disagreement.
Usage: python benchmarks/first_layer_anatomy.py [--dests 100,250,500,1000] [--neurons 3]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def naive_pattern_row(weights, scale: float, dest_token: int, head: int, dest: int) -> list[float]:
    """One destination row of one head: the linearised ln1, query and key built per position."""
    layer = weights.layers[0]
    ln = layer.ln1

    def linear_ln(row):
        return (row - row.mean()) / scale * ln.weight

    query = (linear_ln(weights.W_E[dest_token]) + linear_ln(weights.W_pos[dest]) + ln.bias) @ layer.W_Q[head] + layer.b_Q[head]
    scores = []
    for key in range(dest + 1):
        key_vector = linear_ln(weights.W_pos[key]) @ layer.W_K[head]
        scores.append(float(query.double() @ key_vector.double()) * layer.attn_scale)
    top = max(scores)
    exps = [math.exp(score - top) for score in scores]
    total = sum(exps)
    return [value / total for value in exps]


def naive_contributions(model_head, directions, neuron: int) -> list[float]:
    """One neuron: per token, its weight times its value through W_O onto the neuron's direction."""
    out_direction = model_head.W_O @ directions.attention[:, neuron]
    return [float(model_head.weight[token] * (model_head.value[token] @ out_direction)) for token in range(model_head.value.shape[0])]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dests", default="100,250,500,1000")
    parser.add_argument("--neurons", type=int, default=3)
    args = parser.parse_args()
    import torch

    from analyses.contextual_neurons import engine as neuron_engine
    from analyses.contextual_neurons.compute import token_contributions
    from analyses.first_layer_heads import engine
    from analyses.model.loading import load_model
    from analyses.model.tiny import build_tiny
    from analyses.model.weights import model_weights, norm_scale

    torch.set_grad_enabled(False)
    folder = Path(tempfile.mkdtemp(prefix="iwb-bench-gpt2-small-"))
    build_tiny("gpt2", folder, n_layers=1, d_model=768, n_heads=12, n_ctx=1024)
    model = load_model(str(folder), device="cpu", dtype="float32")
    weights = model_weights(model)
    scale = float(norm_scale(weights.layers[0].ln1, weights.W_E[:1024] + weights.W_pos).mean())
    dest_token = model.tokenizer.encode(" the", add_special_tokens=False)[0]
    dests = [int(d) for d in args.dests.split(",")]
    n_heads, n_ctx = weights.layers[0].n_heads, weights.W_pos.shape[0]

    start = time.perf_counter()
    split = engine.additive_scores(weights, scale, dest_token, n_ctx)
    pattern = engine.softmax_rows(split.positional, engine.causal_mask(n_ctx, None))
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    worst = 0.0
    for head in range(n_heads):
        for dest in dests:
            row = naive_pattern_row(weights, scale, dest_token, head, dest)
            worst = max(worst, float((pattern[head, dest, : dest + 1] - torch.tensor(row, dtype=torch.float64)).abs().max()))
    naive_seconds = time.perf_counter() - start
    naive_cells = n_heads * sum(dest + 1 for dest in dests) / naive_seconds
    fast_cells = n_heads * n_ctx * (n_ctx + 1) / 2 / fast_seconds
    print(f"positional pattern: fast {n_heads} heads x {n_ctx} destinations in {fast_seconds:.3f} s ({fast_cells:,.0f} (dest, key) cells/s); "
          f"naive {n_heads} heads x destinations {args.dests} in {naive_seconds:.2f} s ({naive_cells:,.0f} cells/s)")
    print(f"  max |fast - naive| = {worst:.2e}; ratio (cells/s) = {fast_cells / naive_cells:,.0f}x")

    heads = [
        neuron_engine.HeadModel(0, torch.exp(torch.randn(weights.W_E.shape[0]) * 0.3),
                                torch.einsum("vd,dh->vh", engine.linear_embeddings(weights, 0, scale)[0], weights.layers[0].W_V[0]),
                                None, weights.layers[0].W_O[0], None)
    ]
    directions = neuron_engine.neuron_directions(weights, scale, None)
    n_neurons = directions.attention.shape[1]
    start = time.perf_counter()
    top_values, top_ids, _, _ = token_contributions(heads, directions, 20, 512, threading.Event())
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    worst = 0.0
    for neuron in range(args.neurons):
        values = torch.tensor(naive_contributions(heads[0], directions, neuron))
        best = values.topk(20)
        worst = max(worst, float((best.values - top_values[neuron]).abs().max()))
        worst = max(worst, float((values[top_ids[neuron]] - top_values[neuron]).abs().max()))
    naive_seconds = time.perf_counter() - start
    fast_rate, naive_rate = n_neurons / fast_seconds, args.neurons / naive_seconds
    print(f"token contributions: fast {n_neurons} neurons x {weights.W_E.shape[0]} tokens in {fast_seconds:.2f} s "
          f"({fast_rate:,.0f} neurons/s); naive {args.neurons} neurons in {naive_seconds:.2f} s ({naive_rate:.2f} neurons/s)")
    print(f"  max |fast - naive| over the top 20 = {worst:.2e}; ratio (neurons/s) = {fast_rate / naive_rate:,.0f}x")
    agree = worst < 1e-3
    print("agreement: ok" if agree else "agreement: FAILED")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
