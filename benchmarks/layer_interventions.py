"""Layer interventions: naive (a full bridge forward with hooks per intervention) vs fast (resume
from the clean run's cached residuals, run only the later blocks) on the same batches.

Prints agreement (max relative difference of the mean KL), tokens x interventions per second
for both and their ratio; exits 1 when the two disagree by more than --tolerance.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PILE = ROOT / "tests" / "data" / "pile_sample.jsonl"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pile", default=str(DEFAULT_PILE), help="Pile-format .jsonl corpus")
    parser.add_argument("--n-docs", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per document (BOS included)")
    parser.add_argument("--interventions", default="block,swap", help="comma list of kinds")
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max relative difference of the mean KL")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    import torch

    from analyses import layer_interventions as li
    from analyses.inputs.corpus import sample_documents
    from analyses.layer_interventions.reference import naive_batch_sums
    from analyses.model.adapters import adapter_for
    from analyses.model.loading import load_model
    from analyses.model.tokens import pad_id

    torch.set_grad_enabled(False)
    model = load_model(args.model, device=args.device)
    inputs, _ = sample_documents(args.pile, args.n_docs, seed=0)
    rows = [model.to_tokens(item.text, prepend_bos=True, max_tokens=args.max_tokens) for item in inputs]
    batches = li.pack_batches(rows, args.batch_tokens, pad_id(model))
    interventions = li.list_interventions(model.n_layers, li.kinds_of(args.interventions))
    n_tokens = sum(row.shape[-1] for row in rows)
    work = n_tokens * len(interventions)
    print(f"{model.name} on {model.device}, {torch.get_num_threads()} threads: {len(inputs)} documents, {n_tokens} tokens, "
          f"{len(batches)} batches, {len(interventions)} interventions ({args.interventions})")

    def timed(fn):
        if model.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            sums = sum(fn(batch) for batch in batches)
        sums = sums.cpu()
        return sums, time.perf_counter() - start

    decoder = adapter_for(model)
    with torch.inference_mode():
        li.fast_batch_sums(decoder, batches[-1], interventions[:1])
    fast, fast_s = timed(lambda batch: li.fast_batch_sums(decoder, batch, interventions))
    naive, naive_s = timed(lambda batch: naive_batch_sums(model, batch, interventions))
    fast_table = li.summarise(fast, interventions, model.n_layers).to_pydict()
    naive_table = li.summarise(naive, interventions, model.n_layers).to_pydict()
    relative = max(
        abs(a - b) / max(abs(b), 1e-12) for a, b in zip(fast_table["kl"], naive_table["kl"])
    )
    agreement = max(abs(a - b) for a, b in zip(fast_table["top1_agreement"], naive_table["top1_agreement"]))
    print(f"agreement: max relative difference of mean KL {relative:.3g} (tolerance {args.tolerance:g}); "
          f"max difference of top-1 agreement {agreement:.3g}")
    print(f"naive: {naive_s:.2f} s, {work / naive_s:.1f} token-interventions/s")
    print(f"fast:  {fast_s:.2f} s, {work / fast_s:.1f} token-interventions/s")
    print(f"ratio: {naive_s / fast_s:.2f}x")
    if relative > args.tolerance:
        print("FAIL: fast and naive disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
