"""Labels that shorten instead of vanishing: chart titles, token ticks and category ticks (the
causal-trace buckets), in the one renderer the CLI and the TUI share."""
from __future__ import annotations

import pytest

from analyses.causal_trace.tables import BUCKETS
from analyses.core.charts import Heatmap
from app import charts


@pytest.mark.parametrize("canvas", [30, 52, 74, 150])
def test_bucket_labels_stay_distinct_and_keep_their_ends(canvas):
    ticks, labels = charts.x_axis_labels(list(BUCKETS), canvas, keep_ends=True)
    assert ticks == list(range(len(BUCKETS)))  # six buckets: every one labelled
    assert len(set(labels)) == len(labels)
    for bucket, label in zip(BUCKETS, labels):
        assert label == bucket or (label[:2] == bucket[:2] and "…" in label and bucket.endswith(label.split("…")[1]))
    # what the issue saw: every label of a narrow chart reading the same start
    assert len({label[:7] for label in labels}) > 3


@pytest.mark.parametrize("width", [20, 40, 60, 80])
def test_titles_shorten_and_never_vanish(width):
    title = "Mean restoration by bucket, hidden"
    shown = charts.fit_title(title, "run 12, input 3, category known", width)
    assert shown and len(shown) <= width - 2
    assert shown.startswith(title[: min(len(title), width - 3)])


def wide_heatmap(columns: int = 526) -> charts.ChartData:
    return charts.ChartData(Heatmap("Logit lens: probability of the top token", "logit_lens", "top_prob"), subtitle="run 1, input 0",
                            matrix=[[(row * columns + col) % 7 / 6 for col in range(columns)] for row in range(4)],
                            x_values=list(range(columns)), x_labels=[f" word{i}" for i in range(columns)], y_values=list(range(4)))


def test_a_526_token_heatmap_in_the_cli_has_no_bare_ellipsis_labels():
    text = charts.render_text(wide_heatmap(), 100, 14, use_colour=False)
    lines = text.splitlines()
    assert lines[0].strip().startswith("Logit lens: probability of the top token")
    border = max(i for i, line in enumerate(lines) if "└" in line)
    labels = lines[border + 1].split()
    assert labels and all(len(label.rstrip("…")) >= 4 for label in labels)
    assert "shade: top_prob" in text


def test_a_window_keeps_the_whole_charts_colour_scale_and_says_where_it_is():
    data = wide_heatmap()
    part = data.window(1, 3, 100, 160)
    assert part.matrix == [row[100:160] for row in data.matrix[1:3]]
    assert part.x_labels == data.x_labels[100:160] and part.y_values == [1, 2]
    assert part.value_range() == data.value_range()
    assert "layer 1-2 of 4" in part.subtitle and "pos 100-159 of 526" in part.subtitle
