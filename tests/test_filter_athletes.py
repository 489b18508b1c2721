"""scripts/filter_athletes.py on a few rows with the tiny model: it runs, asks with the chosen
prompt, and keeps exactly the rows whose plain forward answers right (by either criterion)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import filter_athletes
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return filter_athletes


def test_the_filter_keeps_the_rows_a_plain_forward_gets_right(tiny_model, tmp_path, capsys):
    from analyses.fact_lookup import prompts
    from analyses.inputs.entities import ALL_ATHLETES, load_entities

    everyone = load_entities(str(ALL_ATHLETES))
    values = ["baseball", "basketball", "football"]
    rows = [e for value in values for e in [e for e in everyone if e.value == value][:3]]
    table = tmp_path / "few.csv"
    table.write_text("entity,attribute\n" + "".join(f"{e.name},{e.value}\n" for e in rows))
    answers = [tiny_model.tokenizer.encode(" " + value, add_special_tokens=False)[0] for value in values]
    for criterion in ("vocab", "answers"):
        out = tmp_path / f"kept-{criterion}.csv"
        argv = ["--model", str(tiny_model.location), "--table", str(table), "--out", str(out), "--batch-size", "4",
                "--prompt", "few-shot", "--criterion", criterion, "--min-per-value", "0"]
        assert script().main(argv) == 0
        printed = capsys.readouterr().out
        assert "prompt few-shot: answer set p " in printed and "prompt used: few-shot" in printed
        asked = prompts.prompted("few-shot", rows, tiny_model.tokenizer, False)
        expected = []
        for entity, prompt in zip(rows, asked):
            ids = tiny_model.tokenizer(prompt.prompt, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logits = tiny_model.bridge(torch.tensor([ids]), use_cache=False)[0, -1]
            right = answers[values.index(entity.value)]
            if (int(logits.argmax()) == right) if criterion == "vocab" else (int(logits[answers].argmax()) == values.index(entity.value)):
                expected.append([entity.name, entity.value])
        with out.open() as handle:
            lines = list(csv.reader(line for line in handle if not line.startswith("#")))
        assert lines[0] == ["entity", "attribute"] and lines[1:] == expected
    # On a random model the weaker criterion keeps a third or so, the strict one (far) fewer.
    assert 0 < sum(1 for _ in (tmp_path / "kept-answers.csv").open()) - 2
