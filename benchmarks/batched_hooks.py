"""Length-batched hooked forwards (analyses/model/hooks.py run_hooked_batches) against the naive
reference loop (run_hooked_documents: one unpadded forward per document) for the three analyses
that use them: attention-locality (pattern sums), component-norms (output norm sums) and
first-layer-heads (its corpus pass over layer 0), on the same tokens of the shipped corpus, each
document cut to a seeded random length in a range (so that batches are right-padded).

Scenarios (--scenarios): "short" = 32 documents of 8..48 tokens (prompt-like), "long" = 8
documents of 128..512 tokens. Prints documents/s of both paths, the ratio and the worst
difference; exits 1 when the paths disagree (max |fast - naive| over the reported means > 1e-5).
A few minutes on 2 idle CPU cores with the embedded model (the naive loop dominates).
    python benchmarks/batched_hooks.py [--model M] [--device D] [--scenarios short,long] [--threads N]
"""
from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOLERANCE = 1e-5
SCENARIOS = {"short": (32, 8, 48), "long": (8, 128, 512)}


def token_rows(model, n_docs: int, low: int, high: int, seed: int) -> list:
    from analyses.inputs import corpus
    from analyses.model.hooks import document_tokens

    rng = random.Random(seed)
    inputs, _ = corpus.sample_documents(None, n_docs, seed)
    for item in inputs:
        item.meta["max_tokens"] = rng.randint(low, high)
    return document_tokens(model, inputs, "auto")


def locality(model, rows, runner):
    from analyses import attention_locality

    sums = attention_locality.locality_sums(model, rows, 5, no_progress, threading.Event(), runner)
    tables = attention_locality.locality_tables(sums)
    return {name: tables[table][name].to_numpy() for table, name in
            (("attention_locality", "mean_weight"), ("attention_locality_summary", "prev_fraction"), ("attention_locality_summary", "bos_fraction"))}


def norms(model, rows, runner):
    from analyses import component_norms

    sums = component_norms.norm_sums(model, rows, no_progress, threading.Event(), runner)
    table = component_norms.norms_table(sums, sum(row.shape[-1] - 1 for row in rows))
    return {name: table[name].to_numpy() for name in ("attn_out_norm", "mlp_out_norm", "resid_post_norm")}


def first_layer(model, rows, runner):
    import torch

    from analyses.first_layer_heads import engine
    from analyses.model.weights import model_weights

    corpus = engine.collect(model, model_weights(model), rows, ["set"] * len(rows), (0,), 0, no_progress, threading.Event(), runner)[0]
    logz = torch.cat([values.reshape(-1) for _, values in corpus.residual_logz])
    return {"measured_pattern": engine.measured_pattern(corpus).numpy(), "ln_scale_mean": corpus.scale_mean, "residual_logz": logz.numpy()}


def no_progress(done: int, total: int, note: str = "") -> None:
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scenarios", default="short,long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from analyses.model.hooks import batch_token_budget, run_hooked_batches, run_hooked_documents
    from analyses.model.loading import load_model
    from analyses.model.tokens import length_batches

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype="float32")
    with torch.inference_mode():
        model.bridge(torch.tensor([[1, 300, 301]], device=model.device))  # warm-up
    agree = True
    for scenario in args.scenarios.split(","):
        n_docs, low, high = SCENARIOS[scenario]
        rows = token_rows(model, n_docs, low, high, args.seed)
        lengths = [row.shape[-1] for row in rows]
        budget = batch_token_budget(model, lengths)
        batches = length_batches(lengths, budget)
        padding = sum(len(group) * lengths[group[0]] for group in batches) - sum(lengths)
        print(f"{scenario}: model {model.name} on {model.device}, torch threads {torch.get_num_threads()}: {n_docs} documents of "
              f"{min(lengths)}..{max(lengths)} tokens ({sum(lengths)} in all); budget {budget} tokens -> {len(batches)} forwards, "
              f"{padding} pad tokens")
        for name, measure in (("attention-locality", locality), ("component-norms", norms), ("first-layer-heads corpus pass", first_layer)):
            start = time.perf_counter()
            naive = measure(model, rows, run_hooked_documents)
            naive_seconds = time.perf_counter() - start
            start = time.perf_counter()
            fast = measure(model, rows, run_hooked_batches)
            fast_seconds = time.perf_counter() - start
            worst = max(float(np.nanmax(np.abs(np.asarray(fast[key]) - np.asarray(naive[key])))) for key in naive)
            ok = worst <= TOLERANCE
            agree &= ok
            print(f"  {name}: naive {naive_seconds:.2f} s ({n_docs / naive_seconds:.1f} docs/s), batched {fast_seconds:.2f} s "
                  f"({n_docs / fast_seconds:.1f} docs/s); ratio {naive_seconds / fast_seconds:.2f}x; max |batched - naive| = {worst:.1e}"
                  f"{'' if ok else '  DISAGREE'}")
    print("agreement: ok" if agree else "agreement: FAILED")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
