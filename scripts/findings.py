"""The conclusions the README and docs/findings.md quote, written from runs this script makes:
it runs each analysis below on a model (the embedded one by default) into a store, reads the
stored tables back and writes their summary lines between the markers
``<!-- findings:NAME -->`` and ``<!-- /findings:NAME -->`` of every file that has them. Nothing
between the markers is typed by hand, so the quoted numbers cannot go stale without `--check`
(and tests/test_findings.py) saying so.

    python scripts/findings.py [--only logit-lens,first-layer-heads,fact-lookup] [--db FILE] [--check]

--check renders and compares without writing (exit 1 when a block differs). With --db FILE and
--runs NAME=RUN_ID,... the blocks are rendered from runs already stored there, without a model.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FILES = (ROOT / "README.md", ROOT / "docs" / "findings.md")
MODEL = "smollm2-135m"
PROMPT = "The Eiffel Tower is located in the city of"
TARGET = " Paris"
HEAD_DOCS, HEAD_TOKENS = 16, 512
FACT_PARAMS = {"layer_stride": 10, "intervention_entities": 16, "concat_layer": 3}


@dataclass(frozen=True)
class Finding:
    """One block: the analysis, the command a reader can type for the same run, how to make the
    run's inputs and params, and how to write its lines from the stored tables."""

    name: str
    analysis: str
    command: str
    make: Callable[[Any], tuple[list, dict]]
    render: Callable[[Callable[[str], list[dict]]], list[str]]


def _lens_run(model: Any) -> tuple[list, dict]:
    from analyses.inputs.corpus import prompt_inputs

    return prompt_inputs(PROMPT), {"target": TARGET}


def _heads_run(model: Any) -> tuple[list, dict]:
    from analyses.inputs.corpus import corpus_source, iter_records, record_input

    source = corpus_source(None)
    records = [record for _, record in zip(range(HEAD_DOCS), iter_records(source)) if record is not None]
    return [record_input(i, record, source, HEAD_TOKENS) for i, record in enumerate(records)], {}


def _fact_run(model: Any) -> tuple[list, dict]:
    from analyses.inputs.entities import entity_inputs, load_entities

    return entity_inputs(load_entities(None)), dict(FACT_PARAMS)


def lens_lines(read: Callable[[str], list[dict]]) -> list[str]:
    """The last position's lens from the stored logit_lens rows (one prompt: a deterministic forward, no interval)."""
    rows = read("logit_lens")
    last = max(row["pos"] for row in rows)
    by_layer = sorted((row for row in rows if row["pos"] == last and row["input_id"] == 0), key=lambda row: row["layer"])
    final = by_layer[-1]
    target_top = [row["layer"] for row in by_layer if row["top_token"] == TARGET]
    since = next((layer for layer in target_top if all(row["top_token"] == TARGET for row in by_layer if row["layer"] >= layer)), None)
    peak = max(by_layer, key=lambda row: row["entropy_bits"])
    tail = ", ".join(f"{row['target_prob']:.3g}" for row in by_layer[-4:])
    return [
        f"final top token {final['top_token']!r}, p = {final['top_prob']:.2f}; {TARGET!r} p = {final['target_prob']:.2f}",
        f"{TARGET!r} over the last four rows (layers {by_layer[-4]['layer']}-{final['layer']}): {tail}",
        f"{TARGET!r} is the top token from layer {since} on" if since is not None else f"{TARGET!r} is never the final top token",
        f"entropy at the last position peaks at {peak['entropy_bits']:.1f} bits at layer {peak['layer']}",
    ]


def head_lines(read: Callable[[str], list[dict]]) -> list[str]:
    """Per head its class and every class score with its 95% interval over documents."""
    from analyses.first_layer_heads import SCORE_COLUMNS

    lines = []
    for row in sorted(read("first_layer_heads_class"), key=lambda row: (row["layer"], row["head"])):
        scores = ", ".join(f"{name} {row[f'{name}_score']:.3g} [{row[f'{name}_low']:.3g}, {row[f'{name}_high']:.3g}]" for name in SCORE_COLUMNS)
        lines.append(f"head {row['layer']}.{row['head']} {row['class']} ({row['n_docs']} docs): {scores}")
    return lines


def fact_lines(read: Callable[[str], list[dict]]) -> list[str]:
    """fact-lookup's own summary lines (what its summary table holds), written from the stored tables."""
    from analyses.fact_lookup.summaries import summary_lines, wrapped
    from analyses.fact_lookup.tables import TABLES

    return wrapped(summary_lines({table.name: read(table.name) for table in TABLES}))


FINDINGS = (
    Finding("logit-lens", "logit-lens", f'iwb run logit-lens --prompt "{PROMPT}" --param target="{TARGET}"', _lens_run, lens_lines),
    Finding("first-layer-heads", "first-layer-heads", f"first-layer-heads on documents 0-{HEAD_DOCS - 1} of the shipped corpus, {HEAD_TOKENS} tokens each, default params", _heads_run, head_lines),
    Finding("fact-lookup", "fact-lookup", "iwb run fact-lookup " + " ".join(f"--param {k}={v}" for k, v in FACT_PARAMS.items()), _fact_run, fact_lines),
)


def reader(store: Any, run_id: int) -> Callable[[str], list[dict]]:
    def read(table: str) -> list[dict]:
        result = store.query(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?", [run_id])
        return [dict(zip(result.columns, row)) for row in result.rows]
    return read


def render(finding: Finding, lines: list[str], model_name: str, versions: dict) -> str:
    """A block's text between its markers."""
    libraries = ", ".join(f"{name} {versions[name]}" for name in sorted(versions))
    body = "\n".join(lines)
    return (f"\nGenerated by `scripts/findings.py` from `{finding.command}` on {model_name} ({libraries}):\n\n"
            f"```text\n{body}\n```\n")


def block_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- findings:{re.escape(name)} -->)(.*?)(<!-- /findings:{re.escape(name)} -->)", re.S)


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """text with every marked block named in blocks replaced (blocks not in text are left alone)."""
    for name, body in blocks.items():
        text = block_pattern(name).sub(lambda match, body=body: match.group(1) + body + match.group(3), text)
    return text


def blocks_in(text: str) -> dict[str, str]:
    """The marked blocks of a text, name -> body."""
    return {match.group(1): match.group(2) for match in re.finditer(r"<!-- findings:([\w-]+) -->(.*?)<!-- /findings:\1 -->", text, re.S)}


def run_finding(store: Any, model: Any, finding: Finding) -> int:
    from analyses.core.contract import no_progress
    from analyses.core.registry import get_analysis
    from app.run.runner import Prepared, execute

    analysis = get_analysis(finding.analysis)
    inputs, values = finding.make(model)
    return execute(store, model, Prepared(analysis, analysis.Params(**values), tuple(inputs)), no_progress)


def rendered(store: Any, runs: dict[str, int], model_name: str) -> dict[str, str]:
    from analyses.model.fidelity import library_versions

    versions = library_versions()
    return {finding.name: render(finding, finding.render(reader(store, runs[finding.name])), model_name, versions)
            for finding in FINDINGS if finding.name in runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--only", default=",".join(finding.name for finding in FINDINGS))
    parser.add_argument("--db", help="store to run into (default: a temporary one)")
    parser.add_argument("--runs", help="NAME=RUN_ID,... already stored in --db: render them, run nothing")
    parser.add_argument("--check", action="store_true", help="compare the files' blocks with the rendering; write nothing")
    args = parser.parse_args(argv)

    from store import Store

    names = [name for name in args.only.split(",") if name]
    unknown = set(names) - {finding.name for finding in FINDINGS}
    if unknown:
        parser.error(f"unknown findings: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as folder:
        store = Store(args.db or str(Path(folder) / "findings.duckdb"))
        if args.runs:
            runs = {name: int(run_id) for name, run_id in (item.split("=") for item in args.runs.split(","))}
        else:
            from analyses.model.loading import load_model

            model = load_model(args.model, device="cpu", dtype="float32")
            runs = {finding.name: run_finding(store, model, finding) for finding in FINDINGS if finding.name in names}
            for name, run_id in runs.items():
                print(f"{name}: run {run_id}", file=sys.stderr)
        blocks = rendered(store, {name: runs[name] for name in names if name in runs}, args.model)
    differ = 0
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        new = replace_blocks(text, blocks)
        if new != text:
            differ += 1
            print(f"{path.relative_to(ROOT)}: {'differs' if args.check else 'written'}")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for name, body in blocks.items():
        print(f"<!-- findings:{name} -->{body}<!-- /findings:{name} -->")
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
