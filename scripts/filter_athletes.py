"""Keep the athletes a model gets right: top-1 among the sports' answer tokens at the end of the
one-shot prompt. Writes analyses/data/athletes_known.csv (the table fact-lookup uses by default)
and prints how many were kept per sport. A sport with fewer than --min-per-value kept athletes is
dropped from the output (a k-fold probe cannot use it), and the script says so.

    python scripts/filter_athletes.py [--model smollm2-135m] [--table FILE] [--out FILE]
"""
from __future__ import annotations

import argparse
import csv
import sys
import threading
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from analyses.fact_lookup import engine
    from analyses.inputs.entities import ALL_ATHLETES, KNOWN_ATHLETES, load_entities
    from analyses.model.loading import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--table", default=str(ALL_ATHLETES))
    parser.add_argument("--out", default=str(KNOWN_ATHLETES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--min-per-value", type=int, default=5, help="drop sports with fewer kept athletes than this")
    args = parser.parse_args(argv)

    model = load_model(args.model, device="cpu", dtype="float32")
    entities = load_entities(args.table)
    values = sorted({entity.value for entity in entities})
    answer_ids = engine.answer_token_ids(model.tokenizer, values)
    encoded = engine.encode(model.tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], prepend_bos=False)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    batches = engine.make_batches(encoded, list(range(len(entities))), args.batch_size, pad_id, model.device)
    logprobs = engine.run_batches(model, batches, lambda batch: [], answer_ids, threading.Event(), lambda: None)
    predicted = logprobs.argmax(-1).tolist()
    kept = [entity for entity, guess in zip(entities, predicted) if values[guess] == entity.value]
    totals, kept_counts = Counter(e.value for e in entities), Counter(e.value for e in kept)
    scarce = {value for value in values if kept_counts[value] < args.min_per_value}
    written = [entity for entity in kept if entity.value not in scarce]
    out = Path(args.out)
    with out.open("w", newline="", encoding="utf-8") as handle:
        handle.write(f"# The athletes of {Path(args.table).name} that {args.model} gets right (top-1 among the sports' answer tokens), from scripts/filter_athletes.py.\n")
        writer = csv.writer(handle)
        writer.writerow(["entity", "attribute"])
        writer.writerows((entity.name, entity.value) for entity in written)
    for value in values:
        dropped = f" (fewer than {args.min_per_value}: left out of {out.name})" if value in scarce else ""
        print(f"{value}: kept {kept_counts[value]} of {totals[value]}{dropped}")
    print(f"all: kept {len(kept)} of {len(entities)}; wrote {len(written)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
