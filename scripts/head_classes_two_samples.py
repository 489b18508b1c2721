"""first-layer-heads on two disjoint samples of the shipped corpus (documents 0-15 and 16-31 by
default), printing every layer-0 head's class with its scores and 95% intervals in both, and
whether each head keeps its class or is uncertain in one (issue 24: classes that hold up).

The runs are stored in a temporary store and the lines written from the stored tables by
scripts/findings.py's two_sample_lines, the same lines its first-layer-heads-two-samples blocks in
docs/findings.md hold (`scripts/findings.py --only first-layer-heads-two-samples` writes them).

Usage: python scripts/head_classes_two_samples.py [--model smollm2-135m] [--docs 16] [--max-tokens 512]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import findings

    from analyses.model.loading import load_model
    from store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--docs", type=int, default=findings.HEAD_DOCS)
    parser.add_argument("--max-tokens", type=int, default=findings.HEAD_TOKENS)
    args = parser.parse_args()
    finding = next(item for item in findings.FINDINGS if item.name == "first-layer-heads-two-samples")
    finding = replace(finding, make=findings.two_sample_runs(args.docs, args.max_tokens))
    model = load_model(args.model, device="cpu", dtype="float32")
    with tempfile.TemporaryDirectory() as folder:
        store = Store(str(Path(folder) / "heads.duckdb"))
        runs = findings.run_finding(store, model, finding)
        lines = findings.two_sample_lines([findings.reader(store, run_id) for run_id in runs], args.docs)
    print(f"{args.model}, layer 0, params defaults, {args.max_tokens} tokens per document; score = estimate [2.5%, 97.5%] over documents")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
