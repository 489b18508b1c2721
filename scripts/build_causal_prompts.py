"""Build the shipped causal-tracing prompt set: keep the candidates whose expected answer's first
token is the model's top-1 next token (and whose subject can be traced), and record in the file's
header how many were dropped and why.

    PYTHONPATH=. python scripts/build_causal_prompts.py [--model smollm2-135m]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
CANDIDATES = HERE / "causal_prompt_candidates.jsonl"
TARGET = HERE.parent / "analyses" / "data" / "causal_prompts.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default=str(TARGET))
    args = parser.parse_args()

    import torch

    from analyses import causal_trace
    from analyses.core.errors import BadInput
    from analyses.inputs.corpus import load_prompt_set
    from analyses.model.loading import load_model

    model = load_model(args.model, device="cpu", dtype="float32")
    params = causal_trace.Params()
    kept, dropped = [], Counter()
    for item in load_prompt_set(str(CANDIDATES)):
        try:
            where = causal_trace.locate(model, item, params)
        except BadInput as error:
            print(f"drop (subject): {item.text!r}: {error}")
            dropped[item.meta["category"]] += 1
            continue
        with torch.inference_mode():
            top_id = int(model.bridge(torch.tensor([where.ids]))[0, -1].argmax())
        expected = model.tokenizer.encode(item.meta["answer"], add_special_tokens=False)[0]
        if top_id != expected:
            print(f"drop (answer): {item.text!r}: top-1 {model.token_strings([top_id])[0]!r}, expected {item.meta['answer']!r}")
            dropped[item.meta["category"]] += 1
            continue
        kept.append({"prompt": item.text, **item.meta})
    kept_by = Counter(row["category"] for row in kept)
    categories = sorted(set(kept_by) | set(dropped))
    summary = ", ".join(f"{c}: kept {kept_by[c]}, dropped {dropped[c]}" for c in categories)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write("# Causal-tracing prompt set (prompt, subject, answer, category), built by scripts/build_causal_prompts.py\n")
        handle.write(f"# from {CANDIDATES.name}: kept {len(kept)} of {len(kept) + sum(dropped.values())} candidates whose expected answer is {args.model}'s top-1 ({summary}).\n")
        for row in kept:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"kept {len(kept)}, dropped {sum(dropped.values())} ({summary}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
