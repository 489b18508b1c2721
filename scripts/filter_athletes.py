"""Keep the athletes a model gets right, asked with the prompt fact-lookup would choose: the
candidate prompt (analyses.fact_lookup.prompts) with the highest probability on the answer set,
then per athlete whether the model's own top-1 over the whole vocabulary is the right sport's
answer token (--criterion vocab, the default) or only the best among the answer tokens
(--criterion answers, the old, weaker filter). Writes analyses/data/athletes_known.csv (the table
fact-lookup uses by default) and prints the prompts' measures and how many were kept per sport. A
sport with fewer than --min-per-value kept athletes is dropped from the output (a k-fold probe
cannot use it), and the script says so.

    python scripts/filter_athletes.py [--model smollm2-135m] [--table FILE] [--out FILE] [--prompt auto]
"""
from __future__ import annotations

import argparse
import csv
import sys
import threading
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from analyses.fact_lookup import Params, engine, prompts
    from analyses.inputs.entities import ALL_ATHLETES, KNOWN_ATHLETES, load_entities
    from analyses.model.loading import load_model
    from analyses.model.tokens import pad_id

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--table", default=str(ALL_ATHLETES))
    parser.add_argument("--out", default=str(KNOWN_ATHLETES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prompt", default="auto", choices=prompts.CHOICES)
    parser.add_argument("--prompt-entities", type=int, default=48, help="entities measuring each candidate prompt (0 = all)")
    parser.add_argument("--criterion", default="vocab", choices=("vocab", "answers"))
    parser.add_argument("--min-per-value", type=int, default=5, help="drop sports with fewer kept athletes than this")
    args = parser.parse_args(argv)

    model = load_model(args.model, device="cpu", dtype="float32")
    entities = load_entities(args.table)
    values = sorted({entity.value for entity in entities})
    answer_ids = engine.answer_token_ids(model.tokenizer, values)
    params = Params(prompt=args.prompt, prompt_entities=args.prompt_entities, batch_size=args.batch_size)
    cancel = threading.Event()
    choice = prompts.choice_state(model, entities, params, cancel)
    for measure in prompts.measures_of_state(choice):
        print(f"prompt {measure.name}: answer set p {measure.answer_set_prob:.3f} [{measure.answer_set_low:.3f}, {measure.answer_set_high:.3f}], "
              f"top-1 in the set {measure.top1_in_set:.2f} over {measure.n_entities}")
    chosen = str(choice["prompt"])
    bos = model.bos(params.prepend_bos)
    asked = prompts.prompted(chosen, entities, model.tokenizer, bos.prepend)
    encoded = engine.encode(model.tokenizer, [e.prompt for e in asked], [e.name_span for e in asked], bos.token_id if bos.prepend else None)
    batches = engine.make_batches(encoded, list(range(len(entities))), args.batch_size, pad_id(model), model.device)
    top1: list = []
    logprobs = engine.run_batches(model, batches, lambda batch: [], answer_ids, cancel, lambda: None, top1=top1)
    if args.criterion == "vocab":
        guesses = torch.cat([ids for ids, _ in top1]).tolist()
        right = [guess == answer_ids[values.index(entity.value)] for entity, guess in zip(entities, guesses)]
    else:
        right = [values[guess] == entity.value for entity, guess in zip(entities, logprobs.argmax(-1).tolist())]
    kept = [entity for entity, ok in zip(entities, right) if ok]
    totals, kept_counts = Counter(e.value for e in entities), Counter(e.value for e in kept)
    scarce = {value for value in values if kept_counts[value] < args.min_per_value}
    written = [entity for entity in kept if entity.value not in scarce]
    how = "the model's top-1 over the vocabulary is the sport" if args.criterion == "vocab" else "top-1 among the sports' answer tokens"
    out = Path(args.out)
    with out.open("w", newline="", encoding="utf-8") as handle:
        handle.write(f"# The athletes of {Path(args.table).name} that {args.model} gets right ({how}; prompt {chosen}), from scripts/filter_athletes.py.\n")
        writer = csv.writer(handle)
        writer.writerow(["entity", "attribute"])
        writer.writerows((entity.name, entity.value) for entity in written)
    print(f"prompt used: {chosen}; criterion: {how}")
    for value in values:
        dropped = f" (fewer than {args.min_per_value}: left out of {out.name})" if value in scarce else ""
        print(f"{value}: kept {kept_counts[value]} of {totals[value]}{dropped}")
    print(f"all: kept {len(kept)} of {len(entities)}; wrote {len(written)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
