"""Compare two stored runs of one analysis, chart by chart, on their shared axes.

Runs are aligned by layer (and any other axis by its shared values) and by position only as far
as their tokens match. A heatmap becomes the difference B - A; curves of both runs go on one chart.
What cannot be aligned (different analyses, layer counts, token axes) is said, not drawn.

Runs of models of different depth compare on relative depth (``relative_depth``): each run's layers
become 0..1 (first to last layer); heatmap rows are the shallower run's depths, the deeper run's
values linearly interpolated between its two nearest layers; curves over layers are drawn over
relative depth, each run at its own layers.
Reads the store only; no Textual, no torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from analyses.core.charts import Graph
from analyses.core.contract import Chart, Heatmap, Table
from analyses.core.errors import BadInput
from analyses.core.registry import get_analysis
from app import charts


class CompareError(BadInput):
    """The two runs cannot be compared (exit 2 in the CLI, a message in the TUI)."""

    title = "Cannot compare"


class _Unaligned(Exception):
    """One chart of the two runs has no shared axes."""


@dataclass(frozen=True)
class Comparison:
    run_a: int
    run_b: int
    analysis: str
    differences: tuple[str, ...]
    charts: tuple[charts.ChartData, ...]
    skipped: tuple[str, ...]
    relative_depth: bool = False

    @property
    def heading(self) -> str:
        # A then B: the order of the TUI's run-id fields and of `iwb compare A B` (heatmaps: B - A).
        return f"run {self.run_a} vs run {self.run_b} ({self.analysis}{', by relative depth' if self.relative_depth else ''})"


DEPTH = "relative depth"


def compare_runs(store: Any, run_a: int, run_b: int, table: str | None = None, input_id: int | None = None,
                 relative_depth: bool = False) -> Comparison:
    """The aligned charts of two done runs of one analysis (of one result table when given); with
    ``relative_depth``, layers are aligned as fractions of each model's depth."""
    row_a, row_b = _done_run(store, run_a), _done_run(store, run_b)
    if row_a["analysis"] != row_b["analysis"]:
        raise CompareError(f"run {run_a} is {row_a['analysis']} and run {run_b} is {row_b['analysis']}: runs of different analyses cannot be aligned")
    spec = get_analysis(row_a["analysis"]).spec
    # A table or a circuit has no axes to align: compare those with `iwb sql`.
    chosen = [chart for chart in spec.charts if not isinstance(chart, (Table, Graph)) and (table is None or chart.table == table)]
    if table is not None and table not in [t.name for t in spec.tables]:
        raise CompareError(f"{spec.name} has no table {table!r}; it has {', '.join(t.name for t in spec.tables)}")
    if not chosen:
        raise CompareError(f"{spec.name} draws no heatmap or curve from {table or 'its tables'}; compare it with `iwb sql`")
    input_a = _input_of(store, run_a, input_id)
    input_b = _input_of(store, run_b, input_id)
    tokens_a, tokens_b = _tokens(store, run_a, input_a), _tokens(store, run_b, input_b)
    drawn, skipped = [], []
    for chart in chosen:
        loaded_a = {data.facet_value: data for data in charts.load_charts(store, chart, run_a, input_a)}
        loaded_b = {data.facet_value: data for data in charts.load_charts(store, chart, run_b, input_b)}
        shared = [facet for facet in loaded_a if facet in loaded_b]
        if not shared:
            skipped.append(f"{chart.title}: no data shared by both runs")
        for facet in shared:
            try:
                drawn.append(_align(chart, loaded_a[facet], loaded_b[facet], run_a, run_b, tokens_a, tokens_b, relative_depth))
            except _Unaligned as reason:
                skipped.append(f"{loaded_a[facet].label}: {reason}")
    if not drawn:
        raise CompareError(f"runs {run_a} and {run_b} cannot be aligned: {skipped[0] if skipped else 'nothing to draw'}")
    differences = _differences(store, row_a, row_b, input_a, input_b)
    return Comparison(run_a, run_b, spec.name, differences, tuple(drawn), tuple(skipped), relative_depth)


def _done_run(store: Any, run_id: int) -> dict:
    row = store.run_row(run_id)
    if row is None:
        raise CompareError(f"run {run_id} does not exist in {store.path}")
    if row["status"] != "done":
        raise CompareError(f"run {run_id} is {row['status']}, not done: it has no results to compare")
    return row


def _input_of(store: Any, run_id: int, input_id: int | None) -> int | None:
    if input_id is None:
        return charts.first_input_id(store, run_id)
    if store.input_text(run_id, input_id, preview=1) is None:
        raise CompareError(f"run {run_id} has no input {input_id}")
    return input_id


def _tokens(store: Any, run_id: int, input_id: int | None) -> list[str]:
    rows = store.query("SELECT token FROM tokens WHERE run_id = ? AND input_id = ? ORDER BY pos", [run_id, input_id]).rows
    return [token for (token,) in rows]


def _matching_positions(tokens_a: list[str], tokens_b: list[str]) -> int:
    shared = 0
    for token_a, token_b in zip(tokens_a, tokens_b):
        if token_a != token_b:
            break
        shared += 1
    return shared


def _shared_axis(name: str, values_a: list, values_b: list, run_a: int, run_b: int, tokens: tuple[list[str], list[str]] | None) -> tuple[list, str]:
    """The axis values both runs have, and a note when that is fewer than either has."""
    if tokens is not None:
        matching = _matching_positions(*tokens)
        if matching == 0:
            raise _Unaligned(f"the token axes differ from the first position ({tokens[0][:1]} vs {tokens[1][:1]})")
        shared = [value for value in values_a if value in set(values_b) and value < matching]
        note = "" if matching == max(len(tokens[0]), len(tokens[1])) else f"positions 0..{matching - 1}, where the tokens match"
        if not shared:
            raise _Unaligned("no position where the tokens match has values in both runs")
        return shared, note
    if name == "layer" and sorted(values_a) != sorted(values_b):
        raise _Unaligned(f"different layer counts: run {run_a} has {len(values_a)}, run {run_b} has {len(values_b)} (compare by relative depth: --relative-depth, or d in the compare view)")
    set_b = set(values_b)
    shared = [value for value in values_a if value in set_b]
    if not shared:
        raise _Unaligned(f"the runs share no {name} value")
    partial = len(shared) < max(len(values_a), len(values_b))
    return shared, (f"the {len(shared)} {name} values both runs have" if partial else "")


def _align(chart: Chart, data_a: charts.ChartData, data_b: charts.ChartData, run_a: int, run_b: int,
           tokens_a: list[str], tokens_b: list[str], relative_depth: bool = False) -> charts.ChartData:
    token_axis = (tokens_a, tokens_b) if chart.x == "pos" and chart.per_input else None
    facet = f", {chart.facet} {data_a.facet_value}" if data_a.facet_value is not None else ""
    if isinstance(chart, Heatmap):
        xs, x_note = _shared_axis(chart.x, data_a.x_values, data_b.x_values, run_a, run_b, token_axis)
        if relative_depth and chart.y == "layer":
            ys, y_note = _depths(data_a.y_values, data_b.y_values), ""
            cols_a, cols_b = {x: i for i, x in enumerate(data_a.x_values)}, {x: i for i, x in enumerate(data_b.x_values)}
            matrix = [[_difference(_at_depth(data_a, depth, cols_a[x]), _at_depth(data_b, depth, cols_b[x])) for x in xs] for depth in ys]
        else:
            ys, y_note = _shared_axis(chart.y, data_a.y_values, data_b.y_values, run_a, run_b, None)
            cells_a, cells_b = _cells(data_a), _cells(data_b)
            matrix = [[_difference(cells_a.get((y, x)), cells_b.get((y, x))) for x in xs] for y in ys]
        extreme = max((abs(value) for row in matrix for value in row if value is not None), default=0.0) or 1e-9
        diff_chart = dataclasses.replace(chart, value=f"{chart.value} (B - A)", vmin=-extreme, vmax=extreme,
                                         y=DEPTH if relative_depth and chart.y == "layer" else chart.y)
        labels = dict(zip(data_a.x_values, data_a.x_labels))
        notes = ", ".join(note for note in (y_note, x_note) if note)
        return charts.ChartData(diff_chart, subtitle=f"run {run_b} - run {run_a}{facet}" + (f"; {notes}" if notes else ""), facet_value=data_a.facet_value,
                                matrix=matrix, x_values=xs, x_labels=[labels[x] for x in xs], y_values=ys)
    xs_a = sorted({x for xs, _ in data_a.series.values() for x in xs}, key=_axis_order)
    xs_b = sorted({x for xs, _ in data_b.series.values() for x in xs}, key=_axis_order)
    by_depth = relative_depth and chart.x == "layer"
    shared, note = (xs_a + xs_b, "") if by_depth else _shared_axis(chart.x, xs_a, xs_b, run_a, run_b, token_axis)
    keep = set(shared)
    shown = dataclasses.replace(chart, x=DEPTH) if by_depth else chart
    data = charts.ChartData(shown, subtitle=f"runs {run_a} and {run_b}{facet}" + (f"; {note}" if note else ""), facet_value=data_a.facet_value)
    for run_id, source in ((run_a, data_a), (run_b, data_b)):
        layers = sorted({x for xs, _ in source.series.values() for x in xs}, key=_axis_order)
        for name, (xs, ys) in source.series.items():
            points = [(_depth_of(x, layers) if by_depth else x, y) for x, y in zip(xs, ys) if x in keep]
            label = f"run {run_id}" if len(source.series) == 1 else f"run {run_id} {name}"
            data.series[label] = ([x for x, _ in points], [y for _, y in points])
    return data


def _depth_of(layer: Any, layers: list) -> float:
    """A layer's place in its model as a fraction: 0 for the first, 1 for the last."""
    return 0.0 if len(layers) < 2 else round(layers.index(layer) / (len(layers) - 1), 3)


def _depths(layers_a: list, layers_b: list) -> list[float]:
    """The shared rows of a relative-depth heatmap: the shallower run's layers as fractions."""
    count = min(len(layers_a), len(layers_b))
    return [0.0] if count < 2 else [round(i / (count - 1), 3) for i in range(count)]


def _at_depth(data: charts.ChartData, depth: float, col: int) -> float | None:
    """A heatmap's value at a relative depth in column ``col``: linear between its two nearest layers."""
    rows = len(data.y_values)
    where = depth * (rows - 1)
    low = min(rows - 1, int(math.floor(where)))
    high = min(rows - 1, low + 1)
    below, above = data.matrix[low][col], data.matrix[high][col]
    if below is None or above is None:
        return None
    return below + (above - below) * (where - low)


def _cells(data: charts.ChartData) -> dict[tuple[Any, Any], float | None]:
    return {(y, x): data.matrix[row][col] for row, y in enumerate(data.y_values) for col, x in enumerate(data.x_values)}


def _axis_order(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _difference(value_a: float | None, value_b: float | None) -> float | None:
    if value_a is None or value_b is None:
        return None
    return value_b - value_a


def _differences(store: Any, row_a: dict, row_b: dict, input_a: int | None, input_b: int | None) -> tuple[str, ...]:
    """What differs between the runs: model, device/dtype, each parameter, the compared input; A's
    value first, as the heading names the runs (run A vs run B) and the run-id fields hold them."""
    found = []
    for key in ("model", "device", "dtype"):
        if row_a[key] != row_b[key]:
            found.append(f"{key}: {row_a[key]} vs {row_b[key]}")
    params_a, params_b = json.loads(row_a["params"] or "{}"), json.loads(row_b["params"] or "{}")
    for key in sorted(set(params_a) | set(params_b)):
        if params_a.get(key) != params_b.get(key):
            found.append(f"param {key}: {params_a.get(key)!r} vs {params_b.get(key)!r}")
    text_a, text_b = (_input_text(store, row["run_id"], input_id) for row, input_id in ((row_a, input_a), (row_b, input_b)))
    if text_a != text_b:
        found.append(f"input: {text_a!r} vs {text_b!r}")
    return tuple(found)


def _input_text(store: Any, run_id: int, input_id: int | None) -> str | None:
    text = store.input_text(run_id, input_id)
    return None if text is None else text[:80]
