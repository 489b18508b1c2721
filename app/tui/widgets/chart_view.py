"""One chart drawn by the shared renderer (app.charts.draw), with a keyboard cursor.

Heatmaps scroll and zoom on both axes: a window of rows and columns follows the cursor, ``+`` / ``-``
give each column more or fewer characters (down to one, where a 500-token prompt scrolls sideways
instead of squeezing into … labels), ``*`` / ``/`` give each row more or fewer lines, ``0`` fits
again. The cursor cell is marked with brackets (``◆`` in a one-character cell) as well as colour, so
it shows without colour too. Where colours cannot be trusted (NO_COLOR, or a terminal of 16 colours
or fewer) cells are drawn as shades `` ░▒▓█`` and the legend says so. Line charts get a cursor on
their x values (a vertical line) and the line below reads each curve's value there. Graph charts
(a circuit) are drawn as text (app.charts.graph): left / right walk the nodes, up / down go to the
nearest node a row above or below, the view scrolls to keep the cursor's box (reversed) on screen,
and the line below reads the node's own exact check and its edges.
"""
from __future__ import annotations

import bisect
import math
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.strip import Strip
from textual_plotext import PlotextPlot

from app import charts
from app.charts import graph

CURSOR_STYLE = Style(color="rgb(255,0,0)", bgcolor="rgb(255,0,0)")
CURSOR_MARK_STYLE = Style(color="rgb(255,255,255)", bgcolor="rgb(255,0,0)", bold=True)
SHADE_CURSOR_STYLE = Style(bold=True, reverse=True)
TOKEN_CURSOR_STYLE = Style(color="rgb(255,255,255)", bgcolor="rgb(255,0,0)", bold=True)
FRAME_LINES = 5  # title, two borders, x tick labels, x axis label (see charts.heatmap_canvas)
DRAWN_KEPT = 24  # drawn charts kept, so paging back to a chart does not draw it again
TRUSTED_COLOURS = ("256", "truecolor")
GRAPH_CURSOR_STYLE = Style(reverse=True, bold=True)


def cell_text(data: charts.ChartData, row: int, col: int) -> str:
    """What tokens mode prints in a cell: its first text column (the logit lens' top token), else its value."""
    for _, value in data.details.get((row, col), ()):
        if isinstance(value, str):
            return value
    value = data.matrix[row][col]
    return charts.format_cell(value)


def contrast(rgb: tuple[int, int, int]) -> Style:
    bright = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140
    return Style(color="rgb(0,0,0)" if bright else "rgb(255,255,255)", bgcolor=f"rgb({rgb[0]},{rgb[1]},{rgb[2]})")


class ChartView(PlotextPlot, can_focus=True):
    BINDINGS = [
        Binding("left", "move(0, -1)", "Cursor left", show=False),
        Binding("right", "move(0, 1)", "Cursor right", show=False),
        Binding("up", "move(1, 0)", "Cursor up a layer", show=False),
        Binding("down", "move(-1, 0)", "Cursor down a layer", show=False),
        Binding("pageup", "move(5, 0)", "Cursor up 5 rows", show=False),
        Binding("pagedown", "move(-5, 0)", "Cursor down 5 rows", show=False),
        Binding("shift+left", "page(-1)", "Page left", show=False),
        Binding("shift+right", "page(1)", "Page right", show=False),
        Binding("home", "edge(-1)", "First column", show=False),
        Binding("end", "edge(1)", "Last column", show=False),
        Binding("plus,equals_sign", "zoom_x(1)", "Zoom", tooltip="Heatmaps: wider columns (+), narrower (-); the window scrolls with the cursor"),
        Binding("minus", "zoom_x(-1)", "Zoom out", show=False),
        Binding("asterisk", "zoom_y(1)", "Taller rows", show=False),
        Binding("slash", "zoom_y(-1)", "Shorter rows", show=False),
        Binding("0", "zoom_fit", "Fit", show=False),
        Binding("l", "toggle_log", "Log scale", tooltip="Colour heatmaps by log10 of the value; draw curves of log10 values"),
        Binding("t", "toggle_tokens", "Tokens", tooltip="Heatmaps: print each cell's top token in the cell where it fits"),
    ]

    class CursorMoved(Message):
        def __init__(self, description: Text) -> None:
            super().__init__()
            self.description = description

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data: charts.ChartData | None = None
        self.cursor: tuple[int, int] = (0, 0)
        self.row_offset = 0
        self.col_offset = 0
        self.x_zoom: int | None = None
        """Characters per heatmap column; None fits every column when they fit, else one each."""
        self.y_zoom: int | None = None
        """Lines per heatmap row; None fits every row when they fit, else one line each."""
        self.point = 0
        """The line chart's cursor: an index into its x values."""
        self.log_scale = False
        self.tokens = False
        self.tokens_shown = 0
        self.force_shades: bool | None = None
        """Tests and settings: draw shades (True) or colours (False) whatever the terminal."""
        self._cache_key: tuple | None = None
        self._cache: Any = None
        self._lines: list[Text] = []
        self._line_spans: dict = {}
        self._strips: list[Strip] = []
        self._drawn: dict[tuple, tuple] = {}
        self.painted_cursor: tuple[int, int] | None = None
        self.circuit_layout: graph.Layout | None = None
        self.node = 0
        """The graph's cursor: an index into its layout's node order."""
        self.graph_offset = (0, 0)
        """The graph's first line and column on screen."""

    @property
    def is_heatmap(self) -> bool:
        return self.data is not None and isinstance(self.data.chart, charts.Heatmap) and bool(self.data.matrix)

    @property
    def is_line(self) -> bool:
        return self.data is not None and isinstance(self.data.chart, charts.Line) and bool(self.data.series)

    @property
    def is_graph(self) -> bool:
        return self.data is not None and isinstance(self.data.chart, charts.Graph) and self.data.circuit is not None

    @property
    def shades(self) -> bool:
        """Cells as shade characters: under NO_COLOR, or where the terminal has 16 colours or fewer
        (a colour scale squeezed into those is a handful of unrelated colours)."""
        if self.force_shades is not None:
            return self.force_shades
        return bool(self.app.no_color) or self.app.console.color_system not in TRUSTED_COLOURS

    def show(self, data: charts.ChartData | None) -> None:
        self.data = data
        if self.is_heatmap:
            # Start on the last position of the top row: where the final prediction is.
            self.cursor = (len(data.matrix) - 1, len(data.matrix[0]) - 1)
            self.row_offset, self.col_offset = len(data.matrix), len(data.matrix[0])
        if self.is_line:
            self.point = len(data.line_xs()) - 1
        self.circuit_layout = None
        if self.is_graph:
            # Start on the top node (the logits): where the circuit ends.
            self.circuit_layout = graph.layout(data.circuit, data.chart.limit)
            self.node, self.graph_offset = len(self.circuit_layout.order) - 1, (0, 0)
        self._cache_key = None
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

    def canvas(self) -> tuple[int, int]:
        """(columns, lines) of the heatmap's plot area at this size (see charts.heatmap_canvas)."""
        label = max((len(str(y)) for y in self.data.y_values), default=1)
        return max(1, self.size.width - label - 2), max(1, self.size.height - FRAME_LINES)

    def visible_rows(self) -> int:
        rows = len(self.data.matrix) if self.is_heatmap else 1
        lines = max(1, self.size.height - FRAME_LINES)
        return _shown(rows, lines, self.y_zoom)

    def visible_cols(self) -> int:
        return _shown(len(self.data.matrix[0]), self.canvas()[0], self.x_zoom)

    def row_window(self) -> tuple[int, int]:
        """The heatmap rows on screen (all of them when they fit), keeping the cursor inside."""
        rows = len(self.data.matrix)
        shown = self.visible_rows()
        if rows <= shown or shown < 3 and self.y_zoom is None:
            return 0, rows
        self.row_offset = _follow(self.row_offset, self.cursor[0], rows, shown)
        return self.row_offset, self.row_offset + shown

    def col_window(self) -> tuple[int, int]:
        """The heatmap columns on screen (all when they fit), keeping the cursor inside."""
        cols = len(self.data.matrix[0])
        shown = self.visible_cols()
        if cols <= shown:
            return 0, cols
        self.col_offset = _follow(self.col_offset, self.cursor[1], cols, shown)
        return self.col_offset, self.col_offset + shown

    def describe_cursor(self) -> Text:
        data = self.data
        if data is None:
            return Text("")
        if self.is_graph and self.circuit_layout is not None and self.circuit_layout.order:
            name = self.circuit_layout.order[self.node]
            return Text(f"{graph.describe(data.circuit, name)} · node {self.node + 1}/{len(self.circuit_layout.order)}")
        if not isinstance(data.chart, charts.Heatmap):
            if not self.is_line:
                return Text("")
            xs = data.line_xs()
            x, values = data.points_at(min(self.point, len(xs) - 1))
            parts = [f"{data.chart.x} {x} ({self.point + 1}/{len(xs)})"]
            parts += [f"{name} {charts.format_cell(value)}" for name, value in values]
            return Text(" · ".join(parts) + (" · l: linear scale" if self.log_scale else ""))
        row, col = self.cursor
        y_value, label, value = data.cell(row, col)
        shown = "NULL" if value is None else f"{value:.6g}"
        parts = [f"{data.chart.y} {y_value} · {data.chart.x} {data.x_values[col]} {charts.label_token(label, 16)} · {data.chart.value} = {shown}"]
        for name, detail in data.details.get((row, col), ()):
            parts.append(f"{name} {charts.label_token(detail, 16) if isinstance(detail, str) else charts.format_cell(detail)}")
        if self.size.height:
            start, stop = self.row_window()
            if stop - start < len(data.matrix):
                parts.append(f"rows {data.y_values[start]}-{data.y_values[stop - 1]} of {len(data.matrix)}")
            start, stop = self.col_window()
            if stop - start < len(data.matrix[0]):
                parts.append(f"cols {start}-{stop - 1} of {len(data.matrix[0])}")
        if self.tokens and not self.tokens_shown and self._cache_key is not None:
            parts.append("cells too narrow for tokens (+: zoom)")
        return Text(" · ".join(parts))

    def _moved(self) -> None:
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

    def action_move(self, rows: int, cols: int) -> None:
        data = self.data
        if self.is_graph:
            self._move_node(rows, cols)
            return
        if self.is_line:
            self.point = min(len(data.line_xs()) - 1, max(0, self.point + cols))
            self._moved()
            return
        if not self.is_heatmap:
            return
        row = min(len(data.matrix) - 1, max(0, self.cursor[0] + rows))
        col = min(len(data.matrix[0]) - 1, max(0, self.cursor[1] + cols))
        self.cursor = (row, col)
        self._moved()

    def _move_node(self, rows: int, cols: int) -> None:
        """Along the node order (cols), or to the node nearest the cursor's centre ``rows`` box rows up or down."""
        layout = self.circuit_layout
        if layout is None or not layout.order:
            return
        order = layout.order
        if cols:
            self.node = min(len(order) - 1, max(0, self.node + cols))
        elif rows:
            top, left, right = layout.boxes[order[self.node]]
            tops = sorted({box[0] for box in layout.boxes.values()})
            row = min(len(tops) - 1, max(0, tops.index(top) - rows))  # rows up are smaller line numbers
            centre = (left + right) / 2
            self.node = min((i for i, name in enumerate(order) if layout.boxes[name][0] == tops[row]),
                            key=lambda i: abs((layout.boxes[order[i]][1] + layout.boxes[order[i]][2]) / 2 - centre))
        self._moved()

    def _graph_window(self) -> tuple[int, int]:
        """The first picture line and column on screen, moved as little as keeps the cursor's box in view."""
        layout = self.circuit_layout
        lines = max(1, self.size.height - 1)  # the title takes the first line
        width = max(1, self.size.width)
        if layout is None or not layout.order:
            return 0, 0
        top, left, right = layout.boxes[layout.order[self.node]]
        first, column = self.graph_offset
        height = len(layout.lines)
        first = min(max(0, first), max(0, height - lines))
        if top < first:
            first = top
        elif top + 3 > first + lines:
            first = top + 3 - lines
        if left < column:
            column = left
        elif right > column + width:
            column = right - width
        self.graph_offset = (max(0, first), max(0, column))
        return self.graph_offset

    def _graph_line(self, y: int) -> Strip:
        width = self.size.width
        layout = self.circuit_layout
        if layout is None:
            return Strip.blank(width)
        first, column = self._graph_window()
        if y == 0:
            title = self.data.chart.title if self.data is not None else ""
            rows = len(layout.lines)
            note = f" · lines {first + 1}-{min(rows, first + self.size.height - 1)} of {rows}" if rows > self.size.height - 1 else ""
            return self._strip(Text(charts.shortened(title + note, width), style="bold"))
        index = first + y - 1
        if index >= len(layout.lines):
            return Strip.blank(width)
        line = Text(layout.lines[index][column: column + width])
        if layout.order:
            top, left, right = layout.boxes[layout.order[self.node]]
            if top <= index < top + 3:
                line.stylize(GRAPH_CURSOR_STYLE, max(0, left - column), max(0, right - column))
        return self._strip(line)

    def action_page(self, direction: int) -> None:
        """A window's width of columns left or right (the window follows the cursor)."""
        if self.is_heatmap:
            self.action_move(0, direction * self.visible_cols())
        elif self.is_line:
            self.action_move(0, direction * max(1, len(self.data.line_xs()) // 10))

    def action_edge(self, direction: int) -> None:
        if self.is_graph:
            self._move_node(0, direction * len(self.circuit_layout.order) if self.circuit_layout else 0)
        elif self.is_heatmap:
            self.action_move(0, (len(self.data.matrix[0]) if direction > 0 else -len(self.data.matrix[0])))
        elif self.is_line:
            self.action_move(0, direction * len(self.data.line_xs()))

    def action_zoom_x(self, step: int) -> None:
        if self.is_heatmap:
            self.x_zoom = _zoom(self.x_zoom, step, len(self.data.matrix[0]), self.canvas()[0], charts.ZOOM_WIDTHS)
            self._redraw()

    def action_zoom_y(self, step: int) -> None:
        if self.is_heatmap:
            self.y_zoom = _zoom(self.y_zoom, step, len(self.data.matrix), self.canvas()[1], charts.ZOOM_HEIGHTS)
            self._redraw()

    def action_zoom_fit(self) -> None:
        if self.is_heatmap:
            self.x_zoom = self.y_zoom = None
            self._redraw()

    def _redraw(self) -> None:
        self._cache_key = None
        self._moved()

    def action_toggle_log(self) -> None:
        if self.data is None:
            return
        if not self.log_scale and not self.data.can_log:
            self.notify("This chart has negative values: no log scale.", severity="warning")
            return
        self.log_scale = not self.log_scale
        self._redraw()

    def action_toggle_tokens(self) -> None:
        if not self.is_heatmap:
            return
        self.tokens = not self.tokens
        self._cache_key = None
        self._ensure_drawn()
        self._moved()

    def _build(self, data: charts.ChartData, width: int, height: int, **draw_options: Any) -> Text:
        charts.draw(self.plt, data, width, height, log_scale=self.log_scale, **draw_options)
        return super().render()

    def _cell_positions(self, data: charts.ChartData, width: int, height: int) -> dict[tuple[int, int], list[tuple[int, int]]]:
        """Where each heatmap cell lands in the rendered text: drawn once with a colour per cell."""
        cols = len(data.matrix[0])

        def index_colour(row: int, col: int) -> tuple[int, int, int]:
            index = row * cols + col
            return (index >> 16) & 255, (index >> 8) & 255, index & 255

        text = self._build(data, width, height, cell_colour=index_colour)
        plain = text.plain
        positions: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for span in text.spans:
            color = getattr(span.style, "color", None)
            if color is None or color.triplet is None or not plain[span.start:span.end].strip("█") == "":
                continue
            red, green, blue = color.triplet
            index = (red << 16) | (green << 8) | blue
            positions.setdefault(divmod(index, cols), []).append((span.start, span.end))
        return positions

    def _ensure_drawn(self) -> None:
        width, height = self.size.width, self.size.height
        rows, cols = (self.row_window(), self.col_window()) if self.is_heatmap else ((0, 0), (0, 0))
        point = self.point if self.is_line else None
        key = (width, height, self.app.theme, id(self.data), rows, cols, self.log_scale, self.tokens, self.shades, point)
        if key == self._cache_key:
            return
        if key in self._drawn and self._drawn[key][0] is self.data:
            _, self._cache, self._lines, self._line_spans, self._strips, self.tokens_shown = self._drawn[key]
            self._cache_key = key
            return
        # The chart is drawn once per size, theme, data, window and mode; moving the cursor only restyles its cell.
        data = self.data
        if self.is_heatmap and (rows[1] - rows[0] < len(data.matrix) or cols[1] - cols[0] < len(data.matrix[0])):
            data = data.window(*rows, *cols)
        positions = self._cell_positions(data, width, height) if self.is_heatmap else {}
        x_cursor = self.data.line_xs()[self.point] if self.is_line and self.point < len(self.data.line_xs()) else None
        self._cache = self._build(data, width, height, use_colour=not self.shades, x_cursor=x_cursor)
        self._cache_key = key
        self._lines = self._cache.split("\n", allow_blank=True)
        starts, offset = [], 0
        for line in self._lines:
            starts.append(offset)
            offset += len(line) + 1
        self._line_spans = {}
        for (row, col), spans in positions.items():
            for span_start, span_end in spans:
                line = bisect.bisect_right(starts, span_start) - 1
                self._line_spans.setdefault((row + rows[0], col + cols[0]), {}).setdefault(line, []).append((span_start - starts[line], span_end - starts[line]))
        self.tokens_shown = self._write_tokens() if self.tokens else 0
        self._strips = [self._strip(line) for line in self._lines]
        if len(self._drawn) >= DRAWN_KEPT:
            self._drawn.pop(next(iter(self._drawn)))
        self._drawn[key] = (self.data, self._cache, self._lines, self._line_spans, self._strips, self.tokens_shown)

    def _write_tokens(self) -> int:
        """Print each cell's text over its middle line where the cell is at least two characters wide."""
        written = 0
        for cell, by_line in self._line_spans.items():
            line_index = sorted(by_line)[len(by_line) // 2]
            spans = by_line[line_index]
            left, right = min(s for s, _ in spans), max(e for _, e in spans)
            if right - left < 2:
                continue
            shown = charts.label_token(cell_text(self.data, *cell), right - left).center(right - left)
            style = Style(reverse=True) if self.shades else contrast(charts.cell_rgb(self.data, *cell, self.log_scale))
            line = self._lines[line_index]
            self._lines[line_index] = Text.assemble(line[:left], Text(shown, style=style), line[right:], end="")
            written += 1
        return written

    def _strip(self, line: Text) -> Strip:
        return Strip(list(line.render(self.app.console, end=""))).adjust_cell_length(self.size.width)

    def render_line(self, y: int) -> Strip:
        if self.is_graph:
            return self._graph_line(y)
        if not self.is_heatmap:
            return super().render_line(y)
        self._ensure_drawn()
        if y >= len(self._strips):
            return Strip.blank(self.size.width)
        spans = self._line_spans.get(self.cursor, {}).get(y)
        if not spans:
            return self._strips[y]
        self.painted_cursor = self.cursor
        return self._strip(self.marked(y, spans))

    def marked(self, y: int, spans: list[tuple[int, int]]) -> Text:
        """Line ``y`` with the cursor cell marked: brackets at its ends (◆ in a one-character cell)
        that show without colour, and red (reversed where cells are shades)."""
        line = self._lines[y].copy()
        left, right = min(s for s, _ in spans), max(e for _, e in spans)
        fill, mark = (SHADE_CURSOR_STYLE, SHADE_CURSOR_STYLE) if self.shades else (TOKEN_CURSOR_STYLE if self.tokens else CURSOR_STYLE, CURSOR_MARK_STYLE)
        line.stylize(fill, left, right)
        ends = [(left, "◆")] if right - left == 1 else [(left, "["), (right - 1, "]")]
        for at, char in ends:
            line = Text.assemble(line[:at], Text(char, style=line.get_style_at_offset(self.app.console, at) + mark), line[at + 1:], end="")
        return line

    def render(self) -> Any:
        if self.data is None:
            return Text("No chart to show.", style="dim")
        self._ensure_drawn()
        return self._cache


def _shown(count: int, room: int, zoom: int | None) -> int:
    """How many rows (columns) of ``count`` show in ``room`` lines (characters) at ``zoom`` each:
    all of them when they fit (zoom None or too small to need a window), else a window."""
    if (zoom is None or zoom * count <= room) and count <= room:
        return count
    return max(1, room // (zoom or 1))


def _follow(offset: int, cursor: int, count: int, shown: int) -> int:
    """A window's first index, moved as little as keeps the cursor inside it."""
    start = min(max(0, offset), count - shown)
    if cursor < start:
        return cursor
    if cursor >= start + shown:
        return cursor - shown + 1
    return start


def _zoom(zoom: int | None, step: int, count: int, room: int, levels: tuple[int, ...]) -> int | None:
    """The next zoom level in or out from what is shown now (None once everything fits)."""
    current = room / _shown(count, room, zoom)
    if step > 0:
        larger = [level for level in levels if level > current + 1e-9]
        return larger[0] if larger else zoom
    smaller = [level for level in levels if level < math.floor(current)]
    if not smaller:
        return zoom
    return None if smaller[-1] * count <= room else smaller[-1]
