"""Comparing two stored runs: aligned by layer and by matching tokens, checked against SQL over
the stored rows; real runs of the tiny and the embedded model; `iwb compare` as a user runs it."""
from __future__ import annotations

import math

import pytest

from tests.helpers.cli import assert_bad_input, iwb
from tests.helpers.fakes import seed_lens_run

PROMPT = "The Eiffel Tower is located in the city of"


def heatmap(comparison, value: str):
    return next(data for data in comparison.charts if data.chart.kind == "heatmap" and data.chart.value.startswith(value))


def sql_difference(store, run_a: int, run_b: int, column: str) -> dict:
    """B - A per (layer, pos) straight from the stored rows, joined on layer and position."""
    rows = store.query(
        f"SELECT a.layer, a.pos, b.{column} - a.{column} FROM logit_lens a JOIN logit_lens b USING (layer, pos, input_id) "
        "WHERE a.run_id = ? AND b.run_id = ? AND a.input_id = 0", [run_a, run_b],
    ).rows
    return {(layer, pos): value for layer, pos, value in rows}


def assert_matches(data, expected: dict) -> None:
    found = {(y, x): data.matrix[i][j] for i, y in enumerate(data.y_values) for j, x in enumerate(data.x_values)}
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, abs=1e-9), key


def test_heatmap_is_b_minus_a_and_curves_share_a_chart(store):
    from app.run.compare import compare_runs

    run_a = seed_lens_run(store)
    run_b = seed_lens_run(store, "The Louvre is located in the city of")
    with store.write() as conn:  # make B differ from A by a known, uneven amount
        conn.execute("UPDATE logit_lens SET top_prob = top_prob * 0.5 + 0.01 * pos WHERE run_id = ?", [run_b])
    comparison = compare_runs(store, run_a, run_b)
    assert_matches(heatmap(comparison, "top_prob"), sql_difference(store, run_a, run_b, "top_prob"))
    lines = [data for data in comparison.charts if data.chart.kind == "line"]
    assert lines and all(set(data.series) == {f"run {run_a}", f"run {run_b}"} for data in lines)
    # In the order of the run ids given (A, then B), as the heading names them: A's value first.
    assert comparison.heading.startswith(f"run {run_a} vs run {run_b}")
    assert "input: 'The Eiffel Tower is located in the city of' vs 'The Louvre is located in the city of'" in comparison.differences


def test_positions_align_only_where_the_tokens_match(store):
    from app.run.compare import CompareError, compare_runs

    run_a, run_b = seed_lens_run(store), seed_lens_run(store)
    with store.write() as conn:
        conn.execute("UPDATE tokens SET token = ' Rome' WHERE run_id = ? AND pos = 7", [run_b])
    data = heatmap(compare_runs(store, run_a, run_b), "top_prob")
    assert data.x_values == list(range(7)) and "positions 0..6, where the tokens match" in data.subtitle
    with store.write() as conn:
        conn.execute("UPDATE tokens SET token = 'x' || token WHERE run_id = ?", [run_b])
    comparison = compare_runs(store, run_a, run_b)  # the last-position curves over layers still align
    assert all(data.chart.kind == "line" for data in comparison.charts)
    assert any("token axes differ from the first position" in note for note in comparison.skipped)
    with pytest.raises(CompareError, match="has no input 3"):
        compare_runs(store, run_a, run_b, input_id=3)


def test_runs_that_cannot_be_compared(store):
    from app.run.compare import CompareError, compare_runs

    done, failed = seed_lens_run(store), seed_lens_run(store, status="failed")
    other = store.begin_run("attention-locality", "m", {}, "cpu", "float32", {})
    store.finish_run(other, None, None, {})
    with pytest.raises(CompareError, match="is failed, not done"):
        compare_runs(store, done, failed)
    with pytest.raises(CompareError, match="different analyses cannot be aligned"):
        compare_runs(store, done, other)
    with pytest.raises(CompareError, match="run 99 does not exist"):
        compare_runs(store, done, 99)
    with pytest.raises(CompareError, match="has no table 'nope'"):
        compare_runs(store, done, done, table="nope")


def test_different_layer_counts_are_refused(store):
    from app.run.compare import CompareError, compare_runs

    run_a, run_b = seed_lens_run(store), seed_lens_run(store)
    with store.write() as conn:
        conn.execute("DELETE FROM logit_lens WHERE run_id = ? AND layer = 4", [run_b])
    with pytest.raises(CompareError, match="different layer counts: run 1 has 5, run 2 has 4"):
        compare_runs(store, run_a, run_b)


def test_iwb_compare_prints_both_runs_and_refuses_in_one_line(store, db_path):
    run_a, run_b = seed_lens_run(store), seed_lens_run(store, "The Louvre is located in the city of")
    result = iwb("compare", str(run_a), str(run_b), "--width", "90", "--height", "18", db=db_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"compare run {run_a} vs run {run_b} (logit-lens)")
    assert f"(run {run_b} - run {run_a})" in result.stdout and f"run {run_a}" in result.stdout and "\x1b" not in result.stdout
    failed = seed_lens_run(store, status="failed")
    assert_bad_input(iwb("compare", str(run_a), str(failed), db=db_path), f"run {failed} is failed")
    assert_bad_input(iwb("compare", str(run_a), str(run_b), "--table", "tokens", db=db_path), "has no table 'tokens'")


def _real_run(store, model, analysis: str, prompt: str, **params: str) -> int:
    from analyses.core.contract import Input, no_progress
    from app.run.runner import RunRequest, execute, prepare

    return execute(store, model, prepare(RunRequest(analysis, (Input(0, "prompt", prompt),), params)), no_progress)


def test_real_runs_that_differ_in_a_parameter(store, tiny_model):
    from app.run.compare import compare_runs

    tiny_a = _real_run(store, tiny_model, "logit-lens", PROMPT, target=" Paris")
    tiny_b = _real_run(store, tiny_model, "logit-lens", PROMPT, target=" London")
    comparison = compare_runs(store, tiny_a, tiny_b)
    # The target does not change the forward pass: top-token probabilities agree everywhere.
    assert_matches(heatmap(comparison, "top_prob"), sql_difference(store, tiny_a, tiny_b, "top_prob"))
    assert all(value == pytest.approx(0.0, abs=1e-6) for row in heatmap(comparison, "top_prob").matrix for value in row)
    assert comparison.differences == ("param target: ' Paris' vs ' London'",)


@pytest.mark.integration
def test_real_runs_on_a_shared_prefix_agree_there(store, embedded_model, tiny_model):
    """A causal model sees the same prefix the same way: the difference is zero up to where the
    prompts part, and the comparison stops there."""
    from app.run.compare import CompareError, compare_runs

    run_a = _real_run(store, embedded_model, "logit-lens", PROMPT)
    run_b = _real_run(store, embedded_model, "logit-lens", "The Eiffel Tower is a landmark")
    data = heatmap(compare_runs(store, run_a, run_b), "top_prob")
    shared = store.query(
        "SELECT count(*) FROM tokens a JOIN tokens b USING (pos) WHERE a.run_id = ? AND b.run_id = ? AND a.token = b.token", [run_a, run_b]
    ).rows[0][0]
    assert data.x_values == list(range(shared)) and 1 < shared < 11
    assert len(data.y_values) == 31
    assert max(abs(value) for row in data.matrix for value in row if not math.isnan(value)) < 1e-4
    tiny = _real_run(store, tiny_model, "logit-lens", PROMPT)
    with pytest.raises(CompareError, match="different layer counts: run 3 has 4, run 1 has 31"):
        compare_runs(store, tiny, run_a)
