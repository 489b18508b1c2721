"""first-layer-heads on two disjoint samples of the shipped corpus (documents 0-15 and 16-31 by
default), printing every layer-0 head's class with its scores and 95% intervals in both, and
whether each head keeps its class or is uncertain in one (issue 24: classes that hold up).

Usage: python scripts/head_classes_two_samples.py [--model smollm2-135m] [--docs 16] [--max-tokens 512]
"""
from __future__ import annotations

import argparse
import itertools
import threading


def documents(start: int, count: int, max_tokens: int) -> list:
    from analyses.inputs.corpus import corpus_source, iter_records, record_input

    source = corpus_source(None)
    records = [record for record in itertools.islice(iter_records(source), start + count) if record is not None][start:]
    return [record_input(i, record, source, max_tokens) for i, record in enumerate(records)]


def main() -> None:
    from analyses import first_layer_heads as flh
    from analyses.core.contract import no_progress
    from analyses.model.loading import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512)
    args = parser.parse_args()
    model = load_model(args.model, device="cpu", dtype="float32")
    params = flh.Params()
    runs = []
    for start in (0, args.docs):
        inputs = documents(start, args.docs, args.max_tokens)
        flh.ANALYSIS.check(model, inputs, params)
        result = flh.ANALYSIS.run(model, inputs, params, no_progress, threading.Event())
        runs.append((f"docs {start}-{start + args.docs - 1}", {row["head"]: row for row in result.tables["first_layer_heads_class"].to_pylist()}))
    names = flh.SCORE_COLUMNS
    print(f"{args.model}, layer 0, params defaults; score = estimate [2.5%, 97.5%] over documents")
    stable = 0
    for head in sorted(runs[0][1]):
        classes = [table[head]["class"] for _, table in runs]
        holds = len(set(classes)) == 1 or "uncertain" in classes
        stable += holds
        print(f"head {head}: {' / '.join(classes)}  {'holds' if holds else 'FLIPS'}")
        for label, table in runs:
            row = table[head]
            scores = "  ".join(f"{name} {row[f'{name}_score']:.3g} [{row[f'{name}_low']:.3g}, {row[f'{name}_high']:.3g}]" for name in names)
            margin = f"margin {row['margin']:.2f}" if row["margin"] == row["margin"] else "no class cleared"
            runner = f", runner-up {row['runner_up']} ({row['runner_up_margin']:.2f})" if row["runner_up"] else ""
            print(f"  {label} ({row['n_docs']} docs): {row['class']}, {margin}{runner}")
            print(f"    {scores}")
    print(f"{stable} of {len(runs[0][1])} heads keep their class or are uncertain in one sample")


if __name__ == "__main__":
    main()
