"""Cancel latency: how long after the cancel event is set each analysis raises Cancelled.

For each analysis on the embedded model (default parameters, CPU), a run goes through
app.run.runner (prepare, then execute on a temporary DuckDB store) in a thread; the first progress
report after --after seconds sets the cancel event, and the time until Cancelled comes out of the
thread is the latency. Also shows the longest gap between two progress reports before the cancel
and the note reported last (what a user saw). Prints a table; exits 1 when any latency exceeds
--limit seconds or a run ends without being cancelled.
    python benchmarks/cancel_latency.py [--model M] [--after S] [--limit S] [--only a,b]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "The Eiffel Tower is located in the city of"

# analysis -> (input kind, corpus documents, max tokens per document, parameters). Small inputs
# that still take more than a few seconds on 2 CPU cores with the embedded model.
CASES: dict[str, tuple[str, int, int | None, dict]] = {
    "logit-lens": ("pile", 4, 256, {}),
    "causal-trace": ("prompt", 0, None, {"subject": "The Eiffel Tower"}),
    "truncation": ("pile", 4, 256, {}),
    "layer-interventions": ("pile", 4, 256, {}),
    "attention-locality": ("pile", 16, 512, {}),
    "component-norms": ("pile", 16, 512, {}),
    "neuron-classes": ("weights", 0, None, {}),
    "first-layer-heads": ("pile", 16, 512, {}),
    "contextual-neurons": ("pile", 16, 512, {}),
    "attention-pattern": ("pile-prompts", 16, 512, {"layer": 29}),
    "attribution-patching": ("prompt", 0, None, {"subject": "The Eiffel Tower"}),
    "fact-lookup": ("entities", 0, None, {}),
    "generate": ("prompt", 0, None, {"max_new_tokens": 200, "stop_at_eos": "false"}),
    "neuron-contexts": ("pile", 16, 512, {"layer": 29}),
}


@dataclass
class Outcome:
    analysis: str
    latency: float | None = None
    cancelled_at: float | None = None
    max_gap: float = 0.0
    reports: int = 0
    note: str = ""
    error: str = ""
    seen: list = field(default_factory=list)


def inputs_for(kind: str, n_docs: int, max_tokens: int | None) -> tuple:
    from analyses.core.contract import Input
    from analyses.inputs import corpus

    if kind == "weights":
        return ()
    if kind == "prompt":
        return (Input(0, "prompt", PROMPT),)
    if kind == "entities":  # the shipped table of athletes the embedded model knows
        from analyses.inputs.entities import entity_inputs, load_entities

        return tuple(entity_inputs(load_entities(None)))
    inputs, _ = corpus.sample_documents(None, n_docs, 0, max_tokens=max_tokens)
    if kind == "pile-prompts":  # for an analysis of prompts only: corpus documents as a prompt set
        return tuple(Input(document.input_id, "prompt_set", document.text) for document in inputs)
    return tuple(inputs)


def measure(model, name: str, after: float, folder: Path) -> Outcome:
    from analyses.core.errors import Cancelled
    from app.run.runner import RunRequest, execute, prepare
    from store import Store

    kind, n_docs, max_tokens, params = CASES[name]
    prepared = prepare(RunRequest(name, inputs_for(kind, n_docs, max_tokens), {k: str(v) for k, v in params.items()}))
    store = Store(folder / f"{name}.duckdb")
    cancel = threading.Event()
    outcome = Outcome(name)
    start = time.perf_counter()
    last = [start]

    def progress(done: int, total: int, note: str = "") -> None:
        now = time.perf_counter()
        if not cancel.is_set():
            outcome.max_gap = max(outcome.max_gap, now - last[0])
            outcome.reports += 1
            outcome.note = f"{done}/{total} {note}"
        last[0] = now
        if not cancel.is_set() and now - start >= after:
            outcome.cancelled_at = time.perf_counter()
            cancel.set()

    def work() -> None:
        try:
            execute(store, model, prepared, progress, cancel)
            outcome.error = "finished before the cancel" if outcome.cancelled_at is None else "finished after the cancel"
        except Cancelled:
            if outcome.cancelled_at is not None:
                outcome.latency = time.perf_counter() - outcome.cancelled_at
        except Exception as error:  # noqa: BLE001 - reported in the table
            outcome.error = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=work, name=f"run {name}")
    thread.start()
    thread.join()
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--after", type=float, default=2.0, help="cancel at the first progress report after this many seconds")
    parser.add_argument("--limit", type=float, default=1.0, help="latency above this fails (seconds)")
    parser.add_argument("--only", default="", help="comma list of analyses (default: all)")
    args = parser.parse_args()

    import torch

    from analyses.model.loading import load_model

    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(CASES)
    model = load_model(args.model, device=args.device, dtype="float32")
    print(f"model {model.name} on {model.device}, torch threads {torch.get_num_threads()}; cancel at the first progress report after {args.after:.1f} s")
    failed = False
    rows = []
    with tempfile.TemporaryDirectory(prefix="iwb-cancel-") as tmp:
        for name in names:
            outcome = measure(model, name, args.after, Path(tmp))
            bad = outcome.latency is None or outcome.latency > args.limit
            failed |= bad
            latency = f"{outcome.latency:.3f}" if outcome.latency is not None else "-"
            rows.append((name, latency, f"{outcome.max_gap:.2f}", str(outcome.reports), outcome.error or outcome.note, "FAIL" if bad else "ok"))
            print(f"  {name}: latency {latency} s, {outcome.reports} reports, longest gap {outcome.max_gap:.2f} s: {outcome.error or outcome.note}", flush=True)
    headers = ("analysis", "latency s", "max gap s", "reports", "last progress before the cancel", "")
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    print()
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
