"""Causal tracing: the naive reference (one hooked forward per cell, samples as the batch) against
the fast exact path, on the same prompts and noise. Prints agreement, cells/s and the ratio;
exits 1 if any cell differs by more than --tolerance in probability.

    PYTHONPATH=. python benchmarks/causal_trace.py [--samples 3] [--kinds resid] [--prompts 1] [--model smollm2-135m]
"""
from __future__ import annotations

import argparse
import sys
import time

PROMPTS = (
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower"),
    ("import numpy as np\nimport matplotlib.pyplot as", "matplotlib"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--kinds", default="resid")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=1, help=f"how many of the {len(PROMPTS)} built-in prompts")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    import numpy as np
    import torch

    from analyses import causal_trace
    from analyses.causal_trace import engine as causal_engine
    from analyses.causal_trace import reference as causal_reference
    from analyses.causal_trace import tables as causal_tables
    from analyses.core.contract import Input
    from analyses.model.loading import load_model

    model = load_model(args.model, device=args.device, dtype="float32")
    kinds = tuple(args.kinds.split(","))
    print(f"model {model.name} on {model.device}, torch threads {torch.get_num_threads()}, samples {args.samples}, kinds {args.kinds}, window {args.window}")
    naive_seconds = fast_seconds = 0.0
    cells = 0
    worst = 0.0
    for index, (text, subject) in enumerate(PROMPTS[: args.prompts]):
        params = causal_trace.Params(subject=subject, samples=args.samples)
        where = causal_trace.locate(model, Input(index, "prompt", text), params)
        sigma, _ = causal_tables.noise_sigma(model, [where], params)
        tokens = torch.tensor([where.ids], device=model.device)
        with torch.inference_mode():
            answer_id = int(model.bridge(tokens)[0, -1].argmax())
        begin, end = where.subject_range
        draws = causal_engine.noise_draws(args.samples, end - begin, model.d_model, True, 0, index)
        setup = causal_engine.TraceSetup(tokens, where.subject_range, answer_id, torch.from_numpy(draws) * 3 * sigma)
        start = time.perf_counter()
        fast = causal_engine.trace_fast(model, setup, kinds, args.window)
        fast_time = time.perf_counter() - start
        start = time.perf_counter()
        naive = causal_reference.trace_naive(model, setup, kinds, args.window)
        naive_time = time.perf_counter() - start
        diff = max(float(np.abs(fast.probs[k] - naive.probs[k]).max()) for k in kinds)
        diff = max(diff, abs(fast.high - naive.high), abs(fast.low - naive.low))
        n_cells = len(kinds) * len(where.ids) * model.n_layers
        print(f"prompt {index}: {len(where.ids)} tokens, subject [{begin}, {end}), high {fast.high:.4f}, low {fast.low:.4f}; "
              f"naive {naive_time:.1f} s, fast {fast_time:.1f} s, max |diff| {diff:.2e}")
        naive_seconds += naive_time
        fast_seconds += fast_time
        cells += n_cells
        worst = max(worst, diff)
    print(f"cells {cells}: naive {cells / naive_seconds:.2f} cells/s, fast {cells / fast_seconds:.2f} cells/s, ratio {naive_seconds / fast_seconds:.2f}x")
    print(f"agreement: max |prob difference| {worst:.2e} (tolerance {args.tolerance:g}): {'ok' if worst <= args.tolerance else 'DISAGREE'}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
