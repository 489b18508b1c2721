"""generate: per-token time with the lens and one steering vector against Hugging Face `generate`
with its KV cache, side by side on the same machine, prompt and number of tokens.

HF: the model's own folder loaded by transformers alone (its default attention), greedy
``generate(max_new_tokens=N, min_new_tokens=N)``. Ours: analyses.generation.generate, greedy, the
lens at every step for every layer (final norm + unembedding per layer, top-k and the chosen
token's probability), plus, for the timed run, a steering vector (contrast pair " Love| Hate",
coefficient 4, at a quarter of the depth) added at every position. Agreement: our unsteered
greedy tokens equal HF's (exits 1 otherwise). Per-token time = the whole generation (prompt
forward included) / N, median over --repeats alternating runs; CPU time (this process, all
threads) beside the wall time, since the machine may be shared. Prints tokens/s for both and the
ratio. Usage: python benchmarks/generation.py [--tokens 32] [--models smollm2-135m,gemma3-270m]
[--device cpu] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "I think that you are"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(name: str, tokens: int, device: str, repeats: int) -> dict | None:
    import torch
    from transformers import AutoModelForCausalLM

    from analyses.core.errors import BadInput
    from analyses.generation import Params, build_plan, generate
    from analyses.model.loading import load_model

    try:
        model = load_model(name, device=device, dtype="float32")
    except BadInput as error:
        print(f"{name}: skipped ({error})")
        return None
    hf = AutoModelForCausalLM.from_pretrained(model.location, dtype=torch.float32).to(model.device).eval()
    ids = model.to_tokens(PROMPT)
    plain = Params(max_new_tokens=tokens, stop_at_eos=False)
    steered = Params(max_new_tokens=tokens, stop_at_eos=False, steer=" Love| Hate", steer_coef=4.0)
    plain_plan, _ = build_plan(model, plain)
    steer_plan, record = build_plan(model, steered)

    def run_hf() -> list[int]:
        with torch.inference_mode():
            out = hf.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=model.tokenizer.eos_token_id)
        return out[0, ids.shape[1]:].tolist()

    def run_ours(params: Params, plan) -> list[int]:
        return generate(model, ids, params, plan).new_ids

    # Warm-up, and the agreement check: unsteered greedy tokens equal HF's.
    hf_tokens = run_hf()
    ours_tokens = run_ours(plain, plain_plan)
    agree = hf_tokens == ours_tokens
    times: dict[str, list[float]] = {"hf": [], "ours": []}
    cpu: dict[str, list[float]] = {"hf": [], "ours": []}
    for _ in range(repeats):
        for key, call in (("hf", run_hf), ("ours", lambda: run_ours(steered, steer_plan))):
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            _sync(device)
            times[key].append((time.perf_counter() - start) / tokens)
            cpu[key].append((time.process_time() - start_cpu) / tokens)
    hf_t, ours_t = statistics.median(times["hf"]), statistics.median(times["ours"])
    hf_c, ours_c = statistics.median(cpu["hf"]), statistics.median(cpu["ours"])
    return {"model": name, "vocab": model.d_vocab, "layers": model.n_layers, "device": str(model.device), "hf_ms": 1000 * hf_t,
            "ours_ms": 1000 * ours_t, "ratio": ours_t / hf_t, "hf_cpu_ms": 1000 * hf_c, "ours_cpu_ms": 1000 * ours_c,
            "cpu_ratio": ours_c / hf_c, "agree": agree, "steer_layer": record["steer"]["layer"],
            "wall": times, "cpu": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is steadier on a shared machine")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch threads {torch.get_num_threads()}, {args.tokens} new tokens, prompt {PROMPT!r}, median of {args.repeats}")
    print(f"{'model':<14} {'device':<7} {'vocab':>7} {'HF ms/tok':>10} {'HF tok/s':>9} {'ours ms/tok':>12} {'ours tok/s':>11} {'ratio':>6} "
          f"{'HF cpu ms':>10} {'ours cpu ms':>12} {'cpu ratio':>9}  greedy tokens agree", flush=True)
    rows = []
    for name in args.models.split(","):
        row = bench(name.strip(), args.tokens, args.device, args.repeats)
        if row is None:
            continue
        rows.append(row)
        print(f"{row['model']:<14} {row['device']:<7} {row['vocab']:>7} {row['hf_ms']:>10.1f} {1000 / row['hf_ms']:>9.1f} {row['ours_ms']:>12.1f} "
              f"{1000 / row['ours_ms']:>11.1f} {row['ratio']:>5.2f}x {row['hf_cpu_ms']:>10.1f} {row['ours_cpu_ms']:>12.1f} "
              f"{row['cpu_ratio']:>8.2f}x  {row['agree']}", flush=True)
        for key in ("hf", "ours"):
            print(f"  {key:<4} each repeat, ms/token wall: {' '.join(f'{1000 * t:.1f}' for t in row['wall'][key])}; "
                  f"cpu: {' '.join(f'{1000 * t:.1f}' for t in row['cpu'][key])}", flush=True)
    print("ours = lens at every layer and step (top-k + chosen token) + one steering vector (' Love| Hate', coef 4, layer n/4)")
    return 0 if all(row["agree"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
