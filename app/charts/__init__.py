"""The one chart renderer, shared by `iwb run`, `iwb show` and the TUI.

Charts are declared once in each analysis' SPEC, as typed data (analyses/core/charts.py:
Heatmap, Line, Table). ``load_chart`` reads what a chart needs from the store, with SQL written
here from that data (identifiers quoted); ``draw`` paints it onto a plotext figure (plotext's own,
or textual-plotext's ``PlotextPlot.plt``); plotting never runs a model.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from analyses.core.charts import Chart, Filter, Graph, Heatmap, Line, RunValue, Table

# Viridis at ten even steps, low to high: perceptually uniform and ordered by lightness, so that
# brighter always means more (also once a monochrome filter turns it grey).
COLORMAP = [(68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
            (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37)]
# Where colours cannot be trusted (NO_COLOR, a 16-colour terminal), a cell's value is its shade.
SHADES = " ░▒▓█"
MISSING_SHADE = "·"
ZOOM_WIDTHS = (1, 2, 3, 4, 6, 8, 12)
"""Characters per heatmap column, zooming in (the first, 1, is as far out as a window goes)."""
ZOOM_HEIGHTS = (1, 2, 3, 4, 6)
"""Lines per heatmap row, zooming in."""
PLAIN_MARKERS = ("x", "o", "+", "*")
CONTROL_PICTURES = {code: 0x2400 + code for code in range(32)} | {127: 0x2421}
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
LOG_FLOOR = 1e-20


@dataclass
class ChartData:
    chart: Chart
    subtitle: str = ""
    facet_value: Any = None
    matrix: list[list[float | None]] = field(default_factory=list)
    x_values: list[Any] = field(default_factory=list)
    x_labels: list[str] = field(default_factory=list)
    y_values: list[Any] = field(default_factory=list)
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    sql: str = ""
    """The query behind the chart, with its values written in, to refine in the SQL console."""
    details: dict[tuple[int, int], tuple[tuple[str, Any], ...]] = field(default_factory=dict)
    """Heatmaps: the other columns of each cell's row (e.g. the logit lens' top token), by (row, col)."""
    full_ranges: dict[bool, tuple[float, float]] = field(default_factory=dict)
    """A window of rows keeps the colour scale of the whole heatmap (by log_scale)."""
    circuit: Any = None
    """Graph charts: the nodes and edges (app.charts.graph.Circuit); ``rows`` are the edges as stored."""

    @property
    def label(self) -> str:
        """The chart's title, with its facet value when it is one of several."""
        return self.chart.title if self.facet_value is None else f"{self.chart.title} · {self.facet_value}"

    def cell(self, row: int, col: int) -> tuple[Any, str, float | None]:
        """(y value, x label, value) of a heatmap cell: what a cursor shows."""
        return self.y_values[row], self.x_labels[col], self.matrix[row][col]

    def value_range(self, log_scale: bool = False) -> tuple[float, float]:
        """The colour scale's ends; on a log scale the data's own ends (a fixed 0 has no logarithm)."""
        if log_scale in self.full_ranges:
            return self.full_ranges[log_scale]
        values = [scaled(v, log_scale) for row in self.matrix for v in row if v is not None and not math.isnan(v)]
        vmin, vmax = (self.chart.vmin, self.chart.vmax) if isinstance(self.chart, Heatmap) else (None, None)
        low = vmin if vmin is not None and not log_scale else (min(values) if values else 0.0)
        high = vmax if vmax is not None and not log_scale else (max(values) if values else 1.0)
        return low, (high if high > low else low + 1e-9)

    @property
    def can_log(self) -> bool:
        """A log scale makes sense when no value is negative (probabilities, norms, counts)."""
        values = [v for row in self.matrix for v in row] + [y for _, ys in self.series.values() for y in ys]
        present = [v for v in values if v is not None and not math.isnan(v)]
        return bool(present) and min(present) >= 0

    def rows_window(self, start: int, stop: int) -> ChartData:
        """The heatmap's rows start..stop-1 only (colours keep the whole chart's scale)."""
        return self.window(start, stop, 0, len(self.x_values))

    def window(self, row_start: int, row_stop: int, col_start: int, col_stop: int) -> ChartData:
        """The heatmap's rows row_start..row_stop-1 and columns col_start..col_stop-1 (colours keep
        the whole chart's scale; the subtitle says which part of each axis is shown)."""
        assert isinstance(self.chart, Heatmap)
        notes = []
        if row_stop - row_start < len(self.y_values):
            notes.append(f"{self.chart.y} {self.y_values[row_start]}-{self.y_values[row_stop - 1]} of {len(self.y_values)}")
        if col_stop - col_start < len(self.x_values):
            notes.append(f"{self.chart.x} {self.x_values[col_start]}-{self.x_values[col_stop - 1]} of {len(self.x_values)}")
        details = {(row - row_start, col - col_start): value for (row, col), value in self.details.items()
                   if row_start <= row < row_stop and col_start <= col < col_stop}
        return replace(self, matrix=[row[col_start:col_stop] for row in self.matrix[row_start:row_stop]],
                       y_values=self.y_values[row_start:row_stop], x_values=self.x_values[col_start:col_stop],
                       x_labels=self.x_labels[col_start:col_stop], details=details,
                       subtitle=", ".join([self.subtitle, *notes]) if self.subtitle else ", ".join(notes),
                       full_ranges={scale: self.value_range(scale) for scale in (False, True)})

    def points_at(self, index: int) -> tuple[Any, list[tuple[str, float]]]:
        """A line chart's x value at ``index`` of all its x values, and each curve's value there."""
        xs = self.line_xs()
        x = xs[index]
        found = []
        for name, (series_x, series_y) in self.series.items():
            for point_x, point_y in zip(series_x, series_y):
                if point_x == x:
                    found.append((name, point_y))
                    break
        return x, found

    def line_xs(self) -> list[Any]:
        """Every x value of a line chart's curves, in order."""
        return sorted({x for xs, _ in self.series.values() for x in xs}, key=_sort_key)


def scaled(value: float, log_scale: bool) -> float:
    return math.log10(max(value, LOG_FLOOR)) if log_scale else value


def visible(text: str) -> str:
    """Control characters (ESC among them) as their Unicode pictures, so that stored text can never
    drive the terminal it is printed on."""
    return text.translate(CONTROL_PICTURES)


def shortened(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with a final … when it is longer."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…" if width > 0 else ""


def fit_title(title: str, subtitle: str, width: int) -> str:
    """A chart's title for a figure ``width`` wide: the subtitle's parts go from the last, then the
    title shortens with …; it never vanishes (plotext drops a title longer than its figure)."""
    room = max(1, width - 2)
    parts = [part for part in subtitle.split(", ") if part] if subtitle else []
    while parts:
        full = f"{title} ({', '.join(parts)})"
        if len(full) <= room:
            return full
        parts.pop()
    return shortened(title, room)


def label_token(token: str, width: int = 8) -> str:
    shown = visible(token.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "·"))
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bool, int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def inline(sql: str, values: list) -> str:
    """The query with each ? replaced by its value written as SQL (only our own clauses carry ?)."""
    pieces = sql.split("?")
    if len(pieces) != len(values) + 1:
        return sql
    return "".join(piece + (sql_literal(values[i]) if i < len(values) else "") for i, piece in enumerate(pieces))


def quoted(name: str) -> str:
    """A table or column name as a quoted SQL identifier (any name, nothing it can inject)."""
    return '"' + name.replace('"', '""') + '"'


def _order(chart: Table) -> str:
    """A table chart's ORDER BY clause from its Order items (empty without any)."""
    keys = [f"t.{quoted(item.column)}" + (" DESC" if item.descending else "") for item in chart.order]
    return f" ORDER BY {', '.join(keys)}" if keys else ""


def _filters(chart: Chart, run_id: int, input_id: int | None, facet_value: Any = None) -> tuple[str, list]:
    clauses, values = ["t.run_id = ?"], [run_id]
    if chart.facet is not None and facet_value is not None:
        clauses.append(f"t.{quoted(chart.facet)} = ?")
        values.append(facet_value)
    if chart.per_input and input_id is not None:
        clauses.append("t.input_id = ?")
        values.append(input_id)
    for condition in chart.filters:
        clause, clause_values = _condition(chart, condition, "t")
        clauses.append(clause)
        values.extend(clause_values)
    if chart.last_pos:
        clauses.append("t.pos = (SELECT max(k.pos) FROM tokens k WHERE k.run_id = t.run_id AND k.input_id = t.input_id)")
    return " AND ".join(clauses), values


def _condition(chart: Chart, condition: Filter, alias: str, depth: int = 0) -> tuple[str, list]:
    """SQL and values for one Filter on rows aliased ``alias``; RunValue becomes a subquery."""
    column = f"{alias}.{quoted(condition.column)}"
    value = condition.value
    if isinstance(value, RunValue):
        inner = f"s{depth}"
        clauses, values = [f"{inner}.run_id = {alias}.run_id"], []
        for nested in value.filters:
            clause, nested_values = _condition(chart, nested, inner, depth + 1)
            clauses.append(clause)
            values.extend(nested_values)
        table = quoted(value.table or chart.table)
        return f"{column} {condition.op} (SELECT max({inner}.{quoted(value.column)}) FROM {table} {inner} WHERE {' AND '.join(clauses)})", values
    if condition.op == "in":
        items = list(value)
        return f"{column} IN ({', '.join('?' for _ in items)})", items
    return f"{column} {condition.op} ?", [value]


def first_input_id(store, run_id: int) -> int | None:
    return store.first_input_id(run_id)


def table_exists(store, name: str) -> bool:
    """Whether the store has the table: a result table is created by the first run that writes a
    row to it (attribution patching with edges=false never creates atp_edges)."""
    return bool(store.query("SELECT 1 FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [name]).rows)


def load_charts(store, chart: Chart, run_id: int, input_id: int | None = None) -> list[ChartData]:
    """One ChartData per value of the chart's facet column (just one without a facet); none where
    the chart's table does not exist in this store."""
    if not table_exists(store, chart.table):
        return []
    if chart.facet is None:
        data = load_chart(store, chart, run_id, input_id)
        return [data] if data is not None else []
    if input_id is None:
        input_id = first_input_id(store, run_id)
    where, values = _filters(chart, run_id, input_id)
    facet_values = [row[0] for row in store.query(f"SELECT DISTINCT t.{quoted(chart.facet)} FROM {quoted(chart.table)} t WHERE {where} ORDER BY 1", values).rows]
    loaded = [load_chart(store, chart, run_id, input_id, facet_value=value) for value in facet_values]
    return [data for data in loaded if data is not None]


def load_chart(store, chart: Chart, run_id: int, input_id: int | None = None, facet_value: Any = None) -> ChartData | None:
    """The data of one chart for a run (one input for per-input charts, one facet value when
    given; without one a faceted chart averages over all values); None when it has none."""
    if input_id is None:
        input_id = first_input_id(store, run_id)
    where, values = _filters(chart, run_id, input_id, facet_value)
    subtitle = f"run {run_id}" + (f", input {input_id}" if chart.per_input and input_id is not None else "")
    if chart.facet is not None and facet_value is not None:
        subtitle += f", {chart.facet} {facet_value}"
    data = ChartData(chart, subtitle=subtitle, facet_value=facet_value)
    table = quoted(chart.table)
    if isinstance(chart, Table):
        sql = f"SELECT * EXCLUDE (run_id) FROM {table} t WHERE {where}{_order(chart)} LIMIT {int(chart.limit)}"
        result = store.query(sql, values)
        data.columns, data.rows, data.sql = result.columns, result.rows, inline(sql, values)
        return data if data.rows else None
    if isinstance(chart, Graph):
        return _load_graph(store, chart, data, where, values, run_id, input_id)
    value = quoted(chart.value)
    if isinstance(chart, Heatmap):
        sql = f"SELECT t.{quoted(chart.y)}, t.{quoted(chart.x)}, avg(t.{value}) AS {value} FROM {table} t WHERE {where} GROUP BY ALL ORDER BY 1, 2"
        rows = store.query(sql, values).rows
        data.sql = inline(sql, values)
        if not rows or all(r[2] is None for r in rows):
            return None
        ys = sorted({r[0] for r in rows}, key=_sort_key)
        xs = sorted({r[1] for r in rows}, key=_sort_key)
        y_index = {y: i for i, y in enumerate(ys)}
        x_index = {x: i for i, x in enumerate(xs)}
        data.matrix = [[None] * len(xs) for _ in ys]
        for y, x, value in rows:
            data.matrix[y_index[y]][x_index[x]] = value
        data.y_values, data.x_values = ys, xs
        data.x_labels = _x_labels(store, chart, run_id, input_id, xs)
        data.details = _cell_details(store, chart, where, values, y_index, x_index)
        return data
    if not isinstance(chart, Line):
        raise TypeError(f"chart {chart.title!r} is a {type(chart).__name__}: not a Heatmap, Line or Table")
    series_column = f"t.{quoted(chart.series)}" if chart.series else "NULL"
    sql = f"SELECT {series_column} AS series, t.{quoted(chart.x)}, avg(t.{value}) AS {value} FROM {table} t WHERE {where} GROUP BY ALL ORDER BY 1, 2"
    data.sql = inline(sql, values)
    rows = [r for r in store.query(sql, values).rows if r[2] is not None and not (isinstance(r[2], float) and math.isnan(r[2]))]
    if not rows:
        return None
    for series_value, x, y in rows:
        name = chart.value if series_value is None else f"{chart.series}={series_value}"
        xs, ys = data.series.setdefault(name, ([], []))
        xs.append(x)
        ys.append(float(y))
    return data


def _load_graph(store, chart: Graph, data: ChartData, where: str, values: list, run_id: int, input_id: int | None) -> ChartData | None:
    """A graph's edges, strongest first, and its node table's rows for the same run and input."""
    from app.charts.graph import circuit_of

    sql = f"SELECT * EXCLUDE (run_id) FROM {quoted(chart.table)} t WHERE {where} ORDER BY abs(t.{quoted(chart.value)}) DESC"
    result = store.query(sql, values)
    data.columns, data.rows, data.sql = result.columns, result.rows, inline(sql, values)
    if not data.rows:
        return None
    node_rows = None
    if chart.nodes is not None and table_exists(store, chart.nodes):
        node_where, node_values = "t.run_id = ?", [run_id]
        if chart.per_input and input_id is not None:
            node_where, node_values = node_where + " AND t.input_id = ?", [run_id, input_id]
        found = store.query(f"SELECT * EXCLUDE (run_id) FROM {quoted(chart.nodes)} t WHERE {node_where}", node_values)
        node_rows = (found.columns, found.rows)
    data.circuit = circuit_of(data.columns, data.rows, chart, node_rows)
    return data


def _cell_details(store, chart: Heatmap, where: str, values: list, y_index: dict, x_index: dict) -> dict:
    """Each cell's other columns: text first (a top token), then probabilities, then the rest."""
    result = store.query(f"SELECT * EXCLUDE (run_id) FROM {quoted(chart.table)} t WHERE {where}", values)
    keys = {chart.x, chart.y, chart.value, "input_id", chart.facet}
    columns = [(i, name, kind) for i, (name, kind) in enumerate(zip(result.columns, result.types))
               if name not in keys and not name.endswith("_id")]
    columns.sort(key=lambda c: (0 if "VARCHAR" in c[2].upper() else 1 if "prob" in c[1] else 2))
    y_at, x_at = result.columns.index(chart.y), result.columns.index(chart.x)
    details: dict = {}
    for row in result.rows:
        cell = (y_index.get(row[y_at]), x_index.get(row[x_at]))
        if None not in cell and cell not in details:
            details[cell] = tuple((name, row[i]) for i, name, _ in columns)
    return details


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _x_labels(store, chart: Heatmap, run_id: int, input_id: int | None, xs: list) -> list[str]:
    if chart.x != "pos" or input_id is None:
        return [str(x) for x in xs]
    rows = store.query("SELECT pos, token FROM tokens WHERE run_id = ? AND input_id = ?", [run_id, input_id]).rows
    tokens = dict(rows)
    marked: set = set()
    if chart.mark is not None:
        mark = chart.mark
        sql = (f"SELECT k.pos FROM tokens k JOIN {quoted(mark.table)} m ON m.run_id = k.run_id AND m.input_id = k.input_id "
               f"WHERE k.run_id = ? AND k.input_id = ? AND k.pos >= m.{quoted(mark.start)} AND k.pos < m.{quoted(mark.end)}")
        marked = {row[0] for row in store.query(sql, [run_id, input_id]).rows}
    return [("*" if x in marked else "") + (f"{tokens[x]}" if x in tokens else str(x)) for x in xs]


def shade(value: float | None, low: float, high: float) -> str:
    """The shade character of a value on the scale low..high (· where there is none)."""
    if value is None or math.isnan(value):
        return MISSING_SHADE
    return SHADES[min(4, max(0, int((value - low) / (high - low) * 4.999)))]


def colour(value: float | None, low: float, high: float) -> tuple[int, int, int]:
    if value is None or math.isnan(value):
        return (40, 40, 40)
    t = min(1.0, max(0.0, (value - low) / (high - low))) * (len(COLORMAP) - 1)
    i = min(int(t), len(COLORMAP) - 2)
    f = t - i
    a, b = COLORMAP[i], COLORMAP[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))


def draw(plt, data: ChartData, width: int, height: int, cursor: tuple[int, int] | None = None, use_colour: bool = True,
         cell_colour: Any = None, log_scale: bool = False, x_cursor: Any = None) -> None:
    """Paint a heatmap or line chart onto a plotext figure of the given size.

    ``cell_colour(row, col)`` replaces the value colours of heatmap cells (e.g. to find
    where each cell lands on screen, so that a cursor can be drawn without redrawing).
    ``log_scale`` colours a heatmap by log10 of its values, and draws log10 of a line's values.
    Without ``use_colour`` a heatmap cell's value is its shade (`` ░▒▓█``, the legend says so).
    ``x_cursor`` draws a vertical line at that x value of a line chart.
    """
    plt.clear_figure()
    plt.plotsize(width, height)
    chart = data.chart
    plt.title(fit_title(chart.title, data.subtitle, width))
    if isinstance(chart, Heatmap):
        _draw_heatmap(plt, data, width, height, cursor, use_colour, cell_colour, log_scale)
    elif isinstance(chart, Line):
        numeric = all(isinstance(x, (int, float)) for x in data.line_xs())
        for index, (name, (xs, ys)) in enumerate(data.series.items()):
            # Without colour, curves on one chart are told apart by their marker.
            marker = "braille" if use_colour or index == 0 else PLAIN_MARKERS[(index - 1) % len(PLAIN_MARKERS)]
            plt.plot(xs, [scaled(y, log_scale) for y in ys], label=name if len(data.series) > 1 else None, marker=marker)
        if x_cursor is not None and numeric:
            plt.vline(x_cursor)
        plt.xlabel(chart.x)
        plt.ylabel(f"log10 {chart.value}" if log_scale else chart.value)


def heatmap_canvas(data: ChartData, width: int, height: int) -> tuple[int, int, list[int], list[str]]:
    """(canvas columns, canvas lines, y tick rows, y tick labels) of a heatmap at this size.

    plotext's plot area is the figure less the y tick labels and two borders across, and less
    the title, two borders, the x tick labels and the axis labels down.
    """
    rows = len(data.matrix)
    y_step = max(1, math.ceil(rows / max(1, (height - 6) // 2)))
    y_ticks = list(range(0, rows, y_step))
    y_labels = [str(data.y_values[i]) for i in y_ticks]
    return max(1, width - max(len(label) for label in y_labels) - 2), max(1, height - 5), y_ticks, y_labels


def cell_rgb(data: ChartData, row: int, col: int, log_scale: bool = False) -> tuple[int, int, int]:
    """The colour a heatmap cell is painted with."""
    value = data.matrix[row][col]
    low, high = data.value_range(log_scale)
    return colour(None if value is None else scaled(value, log_scale), low, high)


def _draw_heatmap(plt, data: ChartData, width: int, height: int, cursor: tuple[int, int] | None, use_colour: bool,
                  cell_colour: Any = None, log_scale: bool = False) -> None:
    rows, cols = len(data.matrix), len(data.matrix[0])
    low, high = data.value_range(log_scale)
    canvas_w, canvas_h, y_ticks, y_labels = heatmap_canvas(data, width, height)
    # Exactly one point per character of the plot area, so every character shows one cell (when
    # there are more rows than lines, each line shows the nearest row) and nothing is mixed.
    xs, ys, colours, markers = [], [], [], []
    for line in range(canvas_h):
        y = -0.5 + rows * (line / max(1, canvas_h - 1))
        row = min(rows - 1, line * rows // canvas_h)
        for column in range(canvas_w):
            x = -0.5 + cols * (column / max(1, canvas_w - 1))
            col = min(cols - 1, column * cols // canvas_w)
            value = data.matrix[row][col]
            value = None if value is None or math.isnan(value) else scaled(value, log_scale)
            xs.append(x)
            ys.append(y)
            on_cursor = cursor is not None and cursor == (row, col)
            if cell_colour is not None:
                colours.append(cell_colour(row, col))
                markers.append("█")
            elif use_colour:
                colours.append((255, 0, 0) if on_cursor else colour(value, low, high))
                markers.append("█")
            else:
                markers.append("X" if on_cursor else shade(value, low, high))
    if use_colour or cell_colour is not None:
        plt.scatter(xs, ys, marker=markers, color=colours)
    else:
        plt.scatter(xs, ys, marker=markers)
    plt.xlim(-0.5, cols - 0.5)
    plt.ylim(-0.5, rows - 0.5)
    x_ticks, x_tick_labels = x_axis_labels(data.x_labels, canvas_w, keep_ends=data.chart.x != "pos")
    plt.xticks(x_ticks, x_tick_labels)
    plt.yticks(y_ticks, y_labels)
    plt.ylabel(data.chart.y)
    shown = f"log10 {data.chart.value}" if log_scale else data.chart.value
    if use_colour or cell_colour is not None:
        legend = f"colour: {shown} {low:.3g} (dark) .. {high:.3g} (bright)"
    else:
        legend = f"shade: {shown} {low:.3g} '{SHADES}' {high:.3g}"
    # plotext drops an x label that does not fit beside the y label: it shortens instead.
    plt.xlabel(shortened(f"{data.chart.x}   {legend}", max(1, width - len(data.chart.y) - 8)))


def x_axis_labels(labels: list[str], canvas_w: int, keep_ends: bool = False) -> tuple[list[int], list[str]]:
    """Which columns get an x tick label and the label each shows, for a plot area ``canvas_w``
    wide: every column when each label fits its column, else every k-th column with at least 5
    characters of its token (never a row of bare …). Labels that are not tokens (``keep_ends``)
    keep their start and end."""
    cols = max(1, len(labels))
    per_column = canvas_w // cols - 1
    least = 4 if keep_ends else 5
    label_width = max(1, min(12, per_column)) if per_column >= least else max(1, min(least, canvas_w - 1))
    step = max(1, math.ceil(cols * (label_width + 1) / max(1, canvas_w)))
    ticks = list(range(0, len(labels), step))
    chosen = [labels[i] for i in ticks]
    return ticks, end_labels(chosen, label_width) if keep_ends else [label_token(label, label_width) for label in chosen]


def end_labels(labels: list[str], width: int) -> list[str]:
    """Category labels cut to ``width`` keeping their start and their end (causal-trace's buckets
    ``1:subj-first``, ``2:subj-mid``... all read ``1:subj-…``-alike when only the start is kept)."""
    shown = []
    for label in labels:
        whole = visible(label)
        head = max(2, (width - 1) // 3)
        tail = width - 1 - head
        shown.append(whole if len(whole) <= width or tail < 1 else whole[:head] + "…" + whole[-tail:])
    return shown


def fitting_height(data: ChartData, height: int) -> int:
    """A heatmap tall enough for one line per row (a terminal scrolls), else the height given."""
    if not isinstance(data.chart, Heatmap):
        return height
    return max(height, min(len(data.matrix) + 5, 80))


def render_table(data: ChartData, max_width: int = 100) -> str:
    header = [data.chart.title + (f" ({data.subtitle})" if data.subtitle else "")]
    body = format_table(data.columns, data.rows, max_width=max_width)
    return "\n".join(header + [body])


def format_cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return visible(str(value).replace("\n", "⏎"))


def format_table(columns: list[str], rows: list[tuple], max_width: int = 30) -> str:
    """A plain aligned text table (used by `iwb sql`, `iwb runs` and table charts)."""
    cells = [[format_cell(v)[:max_width] for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)
    return "\n".join(lines)


def render_text(data: ChartData, width: int = 100, height: int = 28, use_colour: bool = True) -> str:
    """A chart as terminal text (ANSI colours when asked), for the CLI."""
    if isinstance(data.chart, Table):
        return render_table(data)
    if isinstance(data.chart, Graph):
        from app.charts.graph import render

        return render(data.chart.title + (f" ({data.subtitle})" if data.subtitle else ""), data.circuit, data.columns, data.rows,
                      data.chart.limit, max_width=width)
    from plotext._figure import _figure_class

    figure = _figure_class()
    draw(figure, data, width, height, use_colour=use_colour)
    # plotext caps a figure at the terminal's size; the size asked for wins, as in textual-plotext.
    figure._set_size(width, height)
    if not use_colour:
        figure.theme("clear")
        figure.clear_color()
        # plotext still colours markers and resets styles under the clear theme; NO_COLOR means none.
        return ANSI_ESCAPE.sub("", figure.build())
    return figure.build()
