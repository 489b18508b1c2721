"""Truncation analysis: naive (one forward per (token, k) with the truncated context) vs the
sliding-window fast path, on the same tokens of the shipped corpus.

Prints the agreement (max abs difference in cosine; must be <= 1e-4), tokens/s of both and the
ratio; exits 1 when they disagree. Default size runs in about two minutes on 2 CPU cores.
    python benchmarks/truncation.py [--model M] [--n-docs N] [--max-tokens T] [--k-max K] [--device D]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOLERANCE = 1e-4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-docs", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=22, help="tokens per document, BOS included")
    parser.add_argument("--k-max", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from analyses.inputs import corpus
    from analyses.model.loading import load_model
    from analyses.truncation import Params, analysed_documents, bos_token_id
    from analyses.truncation.engine import full_context_mean, truncated_cosines
    from analyses.truncation.reference import naive_cosines

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype="float32")
    params = Params(k_max=args.k_max, batch_tokens=args.batch_tokens)
    inputs, _ = corpus.sample_documents(None, args.n_docs, args.seed, max_tokens=args.max_tokens)
    docs = [doc for doc in analysed_documents(model, inputs, params) if doc.positions]
    bos_id = bos_token_id(model, params)
    n_tokens = sum(len(doc.positions) for doc in docs)
    print(f"model {model.name} on {model.device}, torch threads {torch.get_num_threads()}: {len(docs)} documents, "
          f"{n_tokens} analysed tokens, k = 1..{args.k_max}, {model.n_layers} layers")
    with torch.inference_mode():
        model.bridge(torch.tensor([[bos_id or 0, 300, 301]], device=model.device))  # warm-up
        start = time.perf_counter()
        naive, naive_mean = naive_cosines(model, docs, args.k_max, bos_id)
        naive_seconds = time.perf_counter() - start
        start = time.perf_counter()
        mean = full_context_mean(model, docs, args.batch_tokens)
        fast = truncated_cosines(model, docs, args.k_max, bos_id, mean, args.batch_tokens)
        fast_seconds = time.perf_counter() - start
    diff = max(float(np.abs(fast[d.input_id] - naive[d.input_id]).max()) for d in docs)
    mean_diff = float((mean - naive_mean).abs().max())
    naive_rate, fast_rate = n_tokens / naive_seconds, n_tokens / fast_seconds
    print(f"agreement: max |cos fast - cos naive| = {diff:.2e} (limit {TOLERANCE:.0e}); max |mean diff| = {mean_diff:.2e}")
    print(f"naive: {naive_seconds:8.2f} s  {naive_rate:8.2f} tokens/s  ({n_tokens * args.k_max + len(docs)} forwards)")
    print(f"fast:  {fast_seconds:8.2f} s  {fast_rate:8.2f} tokens/s")
    print(f"speed-up: {fast_rate / naive_rate:.1f}x")
    return 0 if diff <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
