"""Typed charts (analyses/core/charts.py): a SPEC refuses charts that read undeclared tables or
columns, with a one-line error naming the chart and the column; the renderer writes the SQL from
the data, identifiers quoted, and a table chart's rows come back in the declared order."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from analyses.core.contract import AnalysisSpec, Chart, Filter, Heatmap, Line, Mark, Order, ResultTable, RunValue, Table, columns
from analyses.core.errors import BadInput
from app import charts
from tests.helpers.fakes import seed_lens_run

SCORES = ResultTable("scores", columns("input_id:INTEGER", "layer:INTEGER", "pos:INTEGER", "kl:DOUBLE", "label:VARCHAR"))
SPANS = ResultTable("spans", columns("input_id:INTEGER", "start:INTEGER", "stop:INTEGER"))


def spec(*chart_list: Chart) -> AnalysisSpec:
    return AnalysisSpec("demo", "Demo", "A demo.", ("prompt",), (SCORES, SPANS), tuple(chart_list))


def refused(chart: Chart) -> str:
    with pytest.raises(BadInput) as error:
        spec(chart)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"demo: chart {chart.title!r}")
    return message


def test_well_formed_charts_are_accepted():
    built = spec(
        Heatmap("kl map", "scores", "kl", mark=Mark("spans", "start", "stop"), filters=(Filter("layer", "in", (0, 1)),)),
        Line("kl curve", "scores", "kl", x="layer", series="label", last_pos=True),
        Table("worst", "scores", "kl", per_input=False, order=(Order("kl", descending=True), Order("run_id")), limit=5,
              filters=(Filter("pos", "=", RunValue("stop", "spans", (Filter("start", ">=", 0),))),)),
        Line("tokens", "tokens", "token_id", x="pos"),
    )
    assert [chart.kind for chart in built.charts] == ["heatmap", "line", "table", "line"]


def test_an_order_on_an_undeclared_column_is_refused():
    message = refused(Table("worst", "scores", "kl", order=(Order("kl", descending=True), Order("damage"))))
    assert "order column 'damage' is not a column of 'scores'" in message


def test_a_value_not_in_the_charts_table_is_refused():
    message = refused(Heatmap("starts", "scores", "start"))
    assert "value column 'start' is not a column of 'scores'" in message


@pytest.mark.parametrize("chart, expected", [
    (Heatmap("h", "scores", "kl", y="head"), "y column 'head'"),
    (Line("l", "scores", "kl", x="layer", series="site"), "series column 'site'"),
    (Line("l", "scores", "kl", facet="site"), "facet column 'site'"),
    (Line("l", "scores", "kl", filters=(Filter("site", "=", "mlp"),)), "filter column 'site'"),
    (Table("t", "scores", "kl", filters=(Filter("pos", "=", RunValue("end", "spans")),)), "run value column 'end' is not a column of 'spans'"),
    (Heatmap("h", "scores", "kl", mark=Mark("spans", "start", "end")), "mark end column 'end' is not a column of 'spans'"),
    (Line("l", "spans", "start", x="stop", last_pos=True), "last_pos column 'pos' is not a column of 'spans'"),
])
def test_every_column_a_chart_names_is_checked(chart, expected):
    assert expected in refused(chart)


def test_an_undeclared_table_is_refused():
    assert "reads table 'score', which the SPEC does not declare" in refused(Line("l", "score", "kl"))
    assert "reads table 'missing'" in refused(Table("t", "scores", "kl", filters=(Filter("pos", "=", RunValue("pos", "missing")),)))


def test_untyped_charts_and_sql_orders_are_refused():
    assert "a chart is one of Heatmap, Line, Table, Graph" in refused(Chart("heatmap", "scores", "kl"))
    assert "order takes a tuple of Order" in refused(Table("t", "scores", "kl", order="kl DESC"))
    with pytest.raises(BadInput, match="op 'like' is not one of"):
        Filter("label", "like", "%a%")


def test_order_is_written_with_quoted_identifiers():
    """The SQL comes from the data: ORDER BY names quoted columns, in the declared order and direction."""
    issued = []

    def query(sql, values=()):
        issued.append(sql)
        return SimpleNamespace(rows=[], columns=[], types=[])

    store = SimpleNamespace(query=query, first_input_id=lambda run_id: 0)
    chart = Table("t", "scores", "kl", per_input=False, order=(Order("kl", descending=True), Order("layer")), limit=3)
    assert charts.load_chart(store, chart, 1) is None
    assert issued == ['SELECT * EXCLUDE (run_id) FROM "scores" t WHERE t.run_id = ? ORDER BY t."kl" DESC, t."layer" LIMIT 3']
    assert charts.quoted('a"b') == '"a""b"'


def test_a_table_chart_returns_rows_in_the_declared_order(store):
    run_id = seed_lens_run(store)
    chart = Table("top", "logit_lens", "top_prob", per_input=False, order=(Order("top_prob", descending=True), Order("layer"), Order("pos")), limit=7)
    data = charts.load_chart(store, chart, run_id)
    expected = store.query("SELECT layer, pos, top_prob FROM logit_lens WHERE run_id = ? ORDER BY top_prob DESC, layer, pos LIMIT 7", [run_id]).rows
    at = [data.columns.index(name) for name in ("layer", "pos", "top_prob")]
    assert [tuple(row[i] for i in at) for row in data.rows] == expected
    probs = [row[2] for row in expected]
    assert probs == sorted(probs, reverse=True) and len(set(probs)) > 1
