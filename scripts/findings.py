"""The conclusions the README and docs/findings.md quote, written from runs this script makes:
it runs each analysis below on a model (the embedded one by default) into a store, reads the
stored tables back and writes their summary lines between the markers
``<!-- findings:NAME -->`` and ``<!-- /findings:NAME -->`` of every file that has them. Nothing
between the markers is typed by hand, so the quoted numbers cannot go stale without `--check`
(and tests/test_findings.py) saying so.

    python scripts/findings.py [--only logit-lens,first-layer-heads,fact-lookup,...] [--db FILE] [--check]

--check renders and compares without writing (exit 1 when a block differs). With --db FILE and
--runs NAME=RUN_ID,... the blocks are rendered from runs already stored there, without a model
(a finding made of several runs takes RUN_ID+RUN_ID). A finding that names its own model (the
Gemma 3 blocks) is run on that model, whatever --model says.
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


Read = Callable[[str], list[dict]]


@dataclass(frozen=True)
class Finding:
    """One block: the analysis, the command a reader can type for the same runs, how to make each
    run's inputs and params (one pair per run), how to write its lines from the stored tables of
    those runs (one reader each, in order), and the model when it is not the script's --model."""

    name: str
    analysis: str
    command: str
    make: Callable[[Any], list[tuple[list, dict]]]
    render: Callable[[list[Read]], list[str]]
    model: str | None = None


def _lens_run(model: Any) -> list[tuple[list, dict]]:
    from analyses.inputs.corpus import prompt_inputs

    return [(prompt_inputs(PROMPT), {"target": TARGET})]


def corpus_documents(start: int, count: int, max_tokens: int) -> list:
    """Documents start..start+count-1 of the shipped corpus as inputs, max_tokens each."""
    import itertools

    from analyses.inputs.corpus import corpus_source, iter_records, record_input

    source = corpus_source(None)
    records = [record for record in itertools.islice(iter_records(source), start + count) if record is not None][start:]
    return [record_input(i, record, source, max_tokens) for i, record in enumerate(records)]


def _heads_run(model: Any) -> list[tuple[list, dict]]:
    return [(corpus_documents(0, HEAD_DOCS, HEAD_TOKENS), {})]


def two_sample_runs(docs: int = HEAD_DOCS, max_tokens: int = HEAD_TOKENS) -> Callable[[Any], list[tuple[list, dict]]]:
    """first-layer-heads with its default params on documents 0..docs-1 and docs..2*docs-1 (disjoint samples)."""
    return lambda model: [(corpus_documents(start, docs, max_tokens), {}) for start in (0, docs)]


def _fact_run(model: Any) -> list[tuple[list, dict]]:
    """fact-lookup on the shipped table, FACT_PARAMS."""
    from analyses.inputs.entities import entity_inputs, load_entities

    return [(entity_inputs(load_entities(None)), dict(FACT_PARAMS))]


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


def two_sample_lines(reads: list[Read], docs: int = HEAD_DOCS) -> list[str]:
    """Per head, its class in each sample, whether it holds (the same class, or uncertain in one),
    and per sample its margin, runner-up and every class score with its 95% interval over documents."""
    from analyses.first_layer_heads import SCORE_COLUMNS

    samples = [{(row["layer"], row["head"]): row for row in read("first_layer_heads_class")} for read in reads]
    labels = [f"docs {index * docs}-{(index + 1) * docs - 1}" for index in range(len(samples))]
    lines, holding = [], 0
    for key in sorted(samples[0]):
        classes = [sample[key]["class"] for sample in samples]
        holds = len(set(classes)) == 1 or "uncertain" in classes
        holding += holds
        lines.append(f"head {key[0]}.{key[1]}: {' / '.join(classes)}  {'holds' if holds else 'FLIPS'}")
        for label, sample in zip(labels, samples):
            row = sample[key]
            margin = f"margin {row['margin']:.2f}" if row["margin"] is not None and row["margin"] == row["margin"] else "no class cleared"
            runner = f", runner-up {row['runner_up']} ({row['runner_up_margin']:.2f})" if row["runner_up"] else ""
            scores = ", ".join(f"{name} {row[f'{name}_score']:.3g} [{row[f'{name}_low']:.3g}, {row[f'{name}_high']:.3g}]" for name in SCORE_COLUMNS)
            lines.append(f"  {label} ({row['n_docs']} docs): {row['class']}, {margin}{runner}; {scores}")
    lines.append(f"{holding} of {len(samples[0])} heads keep their class or are uncertain in one sample")
    return lines


def fact_lines(read: Read) -> list[str]:
    """fact-lookup's own summary lines (what its summary table holds), written from the stored tables."""
    from analyses.fact_lookup.summaries import summary_lines, wrapped
    from analyses.fact_lookup.tables import TABLES

    return wrapped(summary_lines({table.name: read(table.name) for table in TABLES}))


def _first(render: Callable[[Read], list[str]]) -> Callable[[list[Read]], list[str]]:
    return lambda reads: render(reads[0])


GEMMA = "gemma3-270m"
TWO_SAMPLES = f"first-layer-heads on documents 0-{HEAD_DOCS - 1} and {HEAD_DOCS}-{2 * HEAD_DOCS - 1} of the shipped corpus, {HEAD_TOKENS} tokens each, default params"
FACT_COMMAND = "iwb run fact-lookup " + " ".join(f"--param {k}={v}" for k, v in FACT_PARAMS.items())
FINDINGS = (
    Finding("logit-lens", "logit-lens", f'iwb run logit-lens --prompt "{PROMPT}" --param target="{TARGET}"', _lens_run, _first(lens_lines)),
    Finding("first-layer-heads", "first-layer-heads", f"first-layer-heads on documents 0-{HEAD_DOCS - 1} of the shipped corpus, {HEAD_TOKENS} tokens each, default params", _heads_run, _first(head_lines)),
    Finding("first-layer-heads-two-samples", "first-layer-heads", TWO_SAMPLES, two_sample_runs(), two_sample_lines),
    Finding("first-layer-heads-two-samples-gemma3", "first-layer-heads", TWO_SAMPLES, two_sample_runs(), two_sample_lines, model=GEMMA),
    Finding("fact-lookup", "fact-lookup", FACT_COMMAND, _fact_run, _first(fact_lines)),
    Finding("fact-lookup-gemma3", "fact-lookup", FACT_COMMAND.replace("fact-lookup ", f"fact-lookup --model {GEMMA} ", 1), _fact_run, _first(fact_lines), model=GEMMA),
)


def reader(store: Any, run_id: int) -> Read:
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


def run_finding(store: Any, model: Any, finding: Finding) -> tuple[int, ...]:
    """The finding's runs, executed and stored in order: their run ids."""
    from analyses.core.contract import no_progress
    from analyses.core.registry import get_analysis
    from app.run.runner import Prepared, execute

    analysis = get_analysis(finding.analysis)
    return tuple(execute(store, model, Prepared(analysis, analysis.Params(**values), tuple(inputs)), no_progress) for inputs, values in finding.make(model))


RunIds = int | tuple[int, ...]


def rendered(store: Any, runs: dict[str, RunIds], model_name: str) -> dict[str, str]:
    """Each named finding's block from its stored runs (a run id, or a tuple for several runs)."""
    from analyses.model.fidelity import library_versions

    versions = library_versions()
    blocks = {}
    for finding in FINDINGS:
        if finding.name in runs:
            ids = runs[finding.name]
            reads = [reader(store, run_id) for run_id in ((ids,) if isinstance(ids, int) else ids)]
            blocks[finding.name] = render(finding, finding.render(reads), finding.model or model_name, versions)
    return blocks


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
        runs: dict[str, RunIds]
        if args.runs:
            runs = {name: tuple(int(run_id) for run_id in ids.split("+")) for name, ids in (item.split("=") for item in args.runs.split(","))}
        else:
            from analyses.model.loading import load_model

            models: dict[str, Any] = {}
            runs = {}
            for finding in FINDINGS:
                if finding.name in names:
                    wanted = finding.model or args.model
                    if wanted not in models:
                        models[wanted] = load_model(wanted, device="cpu", dtype="float32")
                    runs[finding.name] = run_finding(store, models[wanted], finding)
                    print(f"{finding.name}: runs {runs[finding.name]}", file=sys.stderr)
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
