"""Comparing runs of models of different depth: layers as fractions of each model's depth, the
deeper run interpolated onto the shallower run's rows, checked against SQL over the stored rows;
`iwb compare --relative-depth` (the compare view's `d` is in tests/tui/test_compare_depth.py)."""
from __future__ import annotations

import pytest

from tests.helpers.cli import assert_bad_input, iwb
from tests.helpers.fakes import seed_lens_run


def two_depths(store) -> tuple[int, int]:
    """Run A over 5 layers (0..4), run B over 9 (0..8): B's layer 2k is A's layer k by depth."""
    run_a = seed_lens_run(store, n_layers=4)
    run_b = seed_lens_run(store, n_layers=8)
    with store.write() as conn:
        conn.execute("UPDATE logit_lens SET top_prob = top_prob * 0.5 + 0.01 * pos + 0.003 * layer WHERE run_id = ?", [run_b])
    return run_a, run_b


def test_heatmap_rows_are_relative_depths_with_the_deeper_run_interpolated(store):
    from app.run.compare import compare_runs

    run_a, run_b = two_depths(store)
    comparison = compare_runs(store, run_a, run_b, relative_depth=True)
    assert "by relative depth" in comparison.heading
    data = next(d for d in comparison.charts if d.chart.kind == "heatmap" and d.chart.value.startswith("top_prob"))
    assert data.chart.y == "relative depth" and data.y_values == [0.0, 0.25, 0.5, 0.75, 1.0]
    rows = store.query("SELECT a.layer, a.pos, b.top_prob - a.top_prob FROM logit_lens a JOIN logit_lens b "
                       "ON b.layer = 2 * a.layer AND b.pos = a.pos AND b.input_id = a.input_id WHERE a.run_id = ? AND b.run_id = ?",
                       [run_a, run_b]).rows
    assert len(rows) == 5 * len(data.x_values)
    for layer, pos, expected in rows:
        assert data.matrix[layer][data.x_values.index(pos)] == pytest.approx(expected, abs=1e-9)


def test_between_two_layers_the_value_is_interpolated(store):
    from app.run.compare import compare_runs

    run_a = seed_lens_run(store, n_layers=2)  # 3 rows: depths 0, 0.5, 1
    run_b = seed_lens_run(store, n_layers=3)  # 4 rows: depth 0.5 lies halfway between layers 1 and 2
    data = next(d for d in compare_runs(store, run_a, run_b, relative_depth=True).charts if d.chart.value.startswith("top_prob"))
    b = {(layer, pos): value for layer, pos, value in store.query(
        "SELECT layer, pos, top_prob FROM logit_lens WHERE run_id = ?", [run_b]).rows}
    a = {(layer, pos): value for layer, pos, value in store.query(
        "SELECT layer, pos, top_prob FROM logit_lens WHERE run_id = ?", [run_a]).rows}
    for col, pos in enumerate(data.x_values):
        assert data.matrix[1][col] == pytest.approx((b[(1, pos)] + b[(2, pos)]) / 2 - a[(1, pos)], abs=1e-9)


def test_curves_over_layers_are_drawn_over_relative_depth_each_run_at_its_own_layers(store):
    from app.run.compare import compare_runs

    run_a, run_b = two_depths(store)
    comparison = compare_runs(store, run_a, run_b, relative_depth=True)
    lines = [d for d in comparison.charts if d.chart.kind == "line"]
    assert lines
    for data in lines:
        assert data.chart.x == "relative depth"
        xs_a, _ = data.series[f"run {run_a}"]
        xs_b, _ = data.series[f"run {run_b}"]
        assert xs_a == [0.0, 0.25, 0.5, 0.75, 1.0] and xs_b == [round(i / 8, 3) for i in range(9)]


def test_without_relative_depth_different_depths_are_refused_with_the_way_out(store, db_path):
    from app.run.compare import CompareError, compare_runs

    run_a, run_b = two_depths(store)
    with pytest.raises(CompareError, match="--relative-depth"):
        compare_runs(store, run_a, run_b)
    assert_bad_input(iwb("compare", str(run_a), str(run_b), db=db_path), "different layer counts")
    result = iwb("compare", str(run_a), str(run_b), "--relative-depth", "--width", "90", "--height", "18", db=db_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"compare run {run_a} vs run {run_b} (logit-lens, by relative depth)")
    assert "relative depth" in result.stdout
