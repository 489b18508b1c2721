"""first-layer-heads draws its class scores with their intervals: the long table the chart reads
holds exactly the class table's estimates, interval ends and the thresholds, and the chart shows
them as curves per score."""
from __future__ import annotations

import pytest

from analyses.core.contract import no_progress
from tests.helpers.planted import planted_gpt2, word_documents


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_gpt2(tmp_path_factory.mktemp("planted-gpt2-charts"))


def test_the_interval_chart_draws_each_score_estimate_interval_and_threshold(planted, store):
    from analyses import first_layer_heads as flh
    from app import charts
    from app.run.runner import RunRequest, execute, prepare

    params = {"dest_positions": "100", "duplicate_threshold": 2.5}
    run_id = execute(store, planted, prepare(RunRequest("first-layer-heads", tuple(word_documents(4)), params)), no_progress)
    classes = store.query("SELECT * EXCLUDE (run_id) FROM first_layer_heads_class WHERE run_id = ?", [run_id])
    by_head = {row["head"]: row for row in (dict(zip(classes.columns, values)) for values in classes.rows)}
    drawn = {(head, score, curve): value for head, score, curve, value in
             store.query("SELECT head, score, curve, value FROM first_layer_heads_intervals WHERE run_id = ?", [run_id]).rows}
    thresholds = flh.Params(**params).thresholds()
    assert len(drawn) == len(by_head) * len(flh.SCORE_COLUMNS) * 4
    for head, row in by_head.items():
        for score in flh.SCORE_COLUMNS:
            assert drawn[(head, score, "estimate")] == row[f"{score}_score"]
            assert (drawn[(head, score, "low")], drawn[(head, score, "high")]) == (row[f"{score}_low"], row[f"{score}_high"])
            assert drawn[(head, score, "threshold")] == thresholds.of(score)
    assert drawn[(0, "duplicate", "threshold")] == 2.5
    chart = next(chart for chart in flh.SPEC.charts if chart.table == "first_layer_heads_intervals")
    data = charts.load_charts(store, chart, run_id, charts.first_input_id(store, run_id))
    assert len(data) == len(flh.SCORE_COLUMNS)  # one chart per score
    duplicate = next(item for item in data if "duplicate" in (item.subtitle or ""))
    assert set(duplicate.series) == {f"curve={bound}" for bound in ("estimate", "low", "high", "threshold")}
    assert duplicate.series["curve=high"][1][2] == by_head[2]["duplicate_high"]
    assert charts.render_text(duplicate, 100, 24, use_colour=False).strip()
