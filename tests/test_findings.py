"""scripts/findings.py: the blocks it writes into README.md and docs/findings.md are rendered from
stored runs (tiny model here; the embedded model's logit-lens block is compared with a fresh run
in the integration test), and only the marked blocks change."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from analyses.core.contract import no_progress

ROOT = Path(__file__).resolve().parents[1]


def script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import findings
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return findings


def test_blocks_are_rendered_from_the_stored_tables_and_only_they_are_replaced(tiny_model, store):
    from analyses.core.registry import get_analysis
    from analyses.first_layer_heads import SCORE_COLUMNS
    from analyses.inputs.corpus import prompt_inputs
    from analyses.inputs.entities import ALL_ATHLETES, entity_inputs, load_entities
    from app.run.runner import Prepared, execute
    from tests.helpers.planted import word_documents

    findings = script()
    everyone = load_entities(str(ALL_ATHLETES))
    table = [e for value in ("baseball", "basketball", "football") for e in [e for e in everyone if e.value == value][:3]]
    settings = {
        "logit-lens": (prompt_inputs(findings.PROMPT), {"target": findings.TARGET}),
        "first-layer-heads": (word_documents(3), {"dest_positions": "100"}),
        "fact-lookup": (entity_inputs(table), {"folds": 3, "intervention_entities": 3, "n_neurons": 1, "n_permutations": 5, "n_bootstrap": 50}),
    }
    runs: dict = {}
    for name, (inputs, values) in settings.items():
        analysis = get_analysis(name)
        runs[name] = execute(store, tiny_model, Prepared(analysis, analysis.Params(**values), tuple(inputs)), no_progress)
    heads = get_analysis("first-layer-heads")
    runs["first-layer-heads-two-samples"] = (runs["first-layer-heads"], execute(
        store, tiny_model, Prepared(heads, heads.Params(dest_positions="100"), tuple(word_documents(3, seed=1))), no_progress))
    runs["fact-lookup-gemma3"] = runs["fact-lookup"]  # a finding that names its own model renders the same lines under that model's name
    blocks = findings.rendered(store, runs, "tiny")
    assert set(blocks) == set(runs)
    assert "` on gemma3-270m (" in blocks["fact-lookup-gemma3"] and "` on tiny (" in blocks["fact-lookup"]
    body = {name: text.split("```text\n")[1].split("\n```")[0].split("\n") for name, text in blocks.items()}
    summary = store.query("SELECT finding FROM fact_lookup_summary WHERE run_id = ? ORDER BY line", [runs["fact-lookup"]]).rows
    assert body["fact-lookup"] == [row[0] for row in summary] == body["fact-lookup-gemma3"]
    classes = store.query("SELECT head, class, previous_low FROM first_layer_heads_class WHERE run_id = ? ORDER BY head", [runs["first-layer-heads"]]).rows
    assert len(body["first-layer-heads"]) == len(classes)
    for line, (head, head_class, previous_low) in zip(body["first-layer-heads"], classes):
        assert line.startswith(f"head 0.{head} {head_class} (3 docs): previous ") and f"[{previous_low:.3g}, " in line
        assert all(f" {score} " in line for score in SCORE_COLUMNS[1:])
    # Two samples: per head its class in each stored run, holds when equal or uncertain in one, and each sample's scores.
    second = dict(store.query("SELECT head, class FROM first_layer_heads_class WHERE run_id = ?", [runs["first-layer-heads-two-samples"][1]]).rows)
    two = body["first-layer-heads-two-samples"]
    assert len(two) == 3 * len(classes) + 1
    for index, (head, head_class, _) in enumerate(classes):
        holds = head_class == second[head] or "uncertain" in (head_class, second[head])
        assert two[3 * index] == f"head 0.{head}: {head_class} / {second[head]}  {'holds' if holds else 'FLIPS'}"
        assert two[3 * index + 1].startswith(f"  docs 0-15 (3 docs): {head_class}, ") and two[3 * index + 2].startswith(f"  docs 16-31 (3 docs): {second[head]}, ")
    held = sum(line.endswith("  holds") for line in two[:-1])
    assert two[-1] == f"{held} of {len(classes)} heads keep their class or are uncertain in one sample"
    lens = store.query("SELECT top_token, top_prob FROM logit_lens WHERE run_id = ? AND pos = (SELECT max(pos) FROM logit_lens WHERE run_id = ?) ORDER BY layer DESC LIMIT 1",
                       [runs["logit-lens"]] * 2).rows[0]
    assert body["logit-lens"][0].startswith(f"final top token {lens[0]!r}, p = {lens[1]:.2f}")
    assert "transformer-lens" in blocks["logit-lens"]

    text = "intro\n<!-- findings:fact-lookup -->\nold lines\n<!-- /findings:fact-lookup -->\nmiddle\n<!-- findings:logit-lens --><!-- /findings:logit-lens -->\nend\n"
    new = findings.replace_blocks(text, blocks)
    assert findings.blocks_in(new) == {"fact-lookup": blocks["fact-lookup"], "logit-lens": blocks["logit-lens"]}
    assert new.startswith("intro\n<!-- findings:fact-lookup -->") and "\nmiddle\n" in new and new.endswith("-->\nend\n")
    assert findings.replace_blocks(new, blocks) == new


def test_the_checked_in_blocks_name_the_script_run():
    findings = script()
    commands = {finding.name: finding.command for finding in findings.FINDINGS}
    found = {}
    for path in findings.FILES:
        for name, body in findings.blocks_in(path.read_text(encoding="utf-8")).items():
            assert name in commands, (path, name)
            if body.strip():  # a block not yet written by the script is empty, never typed by hand
                assert f"from `{commands[name]}` on " in body and "```text\n" in body
                found.setdefault(name, []).append(path.name)
    assert {"logit-lens", "first-layer-heads", "first-layer-heads-two-samples", "fact-lookup", "fact-lookup-gemma3"} <= set(found) and "README.md" in found["logit-lens"]


@pytest.mark.integration
def test_the_logit_lens_blocks_equal_a_fresh_run_on_the_embedded_model(embedded_model, store):
    findings = script()
    lens = next(finding for finding in findings.FINDINGS if finding.name == "logit-lens")
    run_id = findings.run_finding(store, embedded_model, lens)
    block = findings.rendered(store, {"logit-lens": run_id}, findings.MODEL)["logit-lens"]
    for path in findings.FILES:
        assert findings.blocks_in(path.read_text(encoding="utf-8"))["logit-lens"] == block, path
