"""Fact lookup: the batched capture of the residual stream at the last name token against the
naive loop (one forward per entity per layer, each stopped after that layer, unpadded).

Fast: analyses.fact_lookup.lookup.capture (padded batches, every layer in one pass, written
straight into one [layer, entity, d] tensor). Prints the agreement (max |difference|), the time of
both and the ratio; exits 1 on disagreement.
Usage: python benchmarks/fact_lookup.py [--entities 24] [--model smollm2-135m] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def naive(model, encoded) -> object:
    import torch

    n, n_layers = len(encoded.ids), model.n_layers
    states = torch.zeros(n_layers, n, model.d_model)
    with torch.inference_mode():
        for row, ids in enumerate(encoded.ids):
            tokens = torch.tensor([ids])
            for layer in range(n_layers):
                captured = {}

                def keep(act, hook, row=row, captured=captured):
                    captured["act"] = act[0, encoded.last_name_pos[row]].float().clone()

                hook = (f"blocks.{layer}.hook_resid_post", keep)
                stop = {"stop_at_layer": layer + 1} if layer + 1 < n_layers else {}
                model.bridge.run_with_hooks(tokens, fwd_hooks=[hook], use_cache=False, **stop)
                states[layer, row] = captured["act"]
    return states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=24)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch

    from analyses.fact_lookup import engine
    from analyses.fact_lookup.lookup import capture
    from analyses.inputs.entities import ALL_ATHLETES, load_entities
    from analyses.model.loading import load_model

    torch.set_grad_enabled(False)
    model = load_model(args.model, device="cpu", dtype="float32")
    everyone = load_entities(str(ALL_ATHLETES))
    entities = everyone[:: max(1, len(everyone) // args.entities)][: args.entities]
    encoded = engine.encode(model.tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], False)

    start = time.perf_counter()
    targets, _ = capture(model, encoded, list(range(len(entities))), ("resid_post",), args.batch_size, None, threading.Event(), lambda: None)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = naive(model, encoded)
    naive_s = time.perf_counter() - start

    difference = float((targets["resid_post"] - reference).abs().max())
    scale = float(reference.abs().max())
    print(f"{args.model}: {len(entities)} entities x {model.n_layers} layers, resid_post at the last name token")
    print(f"batched: {fast_s:.2f} s ({-(-len(entities) // args.batch_size)} forwards)   naive: {naive_s:.2f} s ({len(entities) * model.n_layers} forwards)   ratio {naive_s / fast_s:.1f}x")
    print(f"agreement: max |batched - naive| = {difference:.2e} (max |state| {scale:.1f})")
    return 0 if difference <= 1e-4 * max(1.0, scale) else 1


if __name__ == "__main__":
    sys.exit(main())
