"""One chart drawn by the shared renderer (app.charts.draw), with a keyboard cursor on heatmaps."""
from __future__ import annotations

from typing import Any

import bisect

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.strip import Strip
from textual_plotext import PlotextPlot

from app import charts

CURSOR_STYLE = Style(color="rgb(255,0,0)", bgcolor="rgb(255,0,0)")


class ChartView(PlotextPlot, can_focus=True):
    BINDINGS = [
        Binding("left", "move(0, -1)", "Cursor left", show=False),
        Binding("right", "move(0, 1)", "Cursor right", show=False),
        Binding("up", "move(1, 0)", "Cursor up a layer", show=False),
        Binding("down", "move(-1, 0)", "Cursor down a layer", show=False),
        Binding("pageup", "move(5, 0)", "Cursor up 5 rows", show=False),
        Binding("pagedown", "move(-5, 0)", "Cursor down 5 rows", show=False),
        Binding("home", "edge(-1)", "First column", show=False),
        Binding("end", "edge(1)", "Last column", show=False),
    ]

    class CursorMoved(Message):
        def __init__(self, description: str) -> None:
            super().__init__()
            self.description = description

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data: charts.ChartData | None = None
        self.cursor: tuple[int, int] = (0, 0)
        self._cache_key: tuple | None = None
        self._cache: Any = None
        self._lines: list[Text] = []
        self._line_spans: dict = {}
        self._strips: list[Strip] = []
        self.painted_cursor: tuple[int, int] | None = None

    def show(self, data: charts.ChartData | None) -> None:
        self.data = data
        if data is not None and data.chart.kind == "heatmap" and data.matrix:
            # Start on the last position of the top row: where the final prediction is.
            self.cursor = (len(data.matrix) - 1, len(data.matrix[0]) - 1)
        self._cache_key = None
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

    def describe_cursor(self) -> str:
        data = self.data
        if data is None:
            return ""
        if data.chart.kind != "heatmap":
            parts = []
            for name, (_, ys) in list(data.series.items())[:4]:
                parts.append(f"{name}: {len(ys)} points, min {min(ys):.4g}, max {max(ys):.4g}, last {ys[-1]:.4g}")
            return " | ".join(parts)
        row, col = self.cursor
        y_value, label, value = data.cell(row, col)
        shown = "NULL" if value is None else f"{value:.6g}"
        return f"{data.chart.y} {y_value} · {data.chart.x} {data.x_values[col]} {charts.label_token(label, 16)!s} · {data.chart.value} = {shown}   (arrows move)"

    def action_move(self, rows: int, cols: int) -> None:
        data = self.data
        if data is None or data.chart.kind != "heatmap" or not data.matrix:
            return
        row = min(len(data.matrix) - 1, max(0, self.cursor[0] + rows))
        col = min(len(data.matrix[0]) - 1, max(0, self.cursor[1] + cols))
        self.cursor = (row, col)
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

    def action_edge(self, direction: int) -> None:
        if self.data is not None and self.data.matrix:
            self.action_move(0, (len(self.data.matrix[0]) if direction > 0 else -len(self.data.matrix[0])))

    def _build(self, width: int, height: int, **draw_options: Any) -> Text:
        charts.draw(self.plt, self.data, width, height, **draw_options)
        return super().render()

    def _cell_positions(self, width: int, height: int) -> dict[tuple[int, int], list[tuple[int, int]]]:
        """Where each heatmap cell lands in the rendered text: drawn once with a colour per cell."""
        cols = len(self.data.matrix[0])

        def index_colour(row: int, col: int) -> tuple[int, int, int]:
            index = row * cols + col
            return (index >> 16) & 255, (index >> 8) & 255, index & 255

        text = self._build(width, height, cell_colour=index_colour)
        plain = text.plain
        positions: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for span in text.spans:
            style = span.style
            color = getattr(style, "color", None)
            if color is None or color.triplet is None or not plain[span.start:span.end].strip("█") == "":
                continue
            red, green, blue = color.triplet
            index = (red << 16) | (green << 8) | blue
            positions.setdefault(divmod(index, cols), []).append((span.start, span.end))
        return positions

    def _ensure_drawn(self) -> None:
        width, height = self.size.width, self.size.height
        key = (width, height, self.app.theme, id(self.data))
        if key == self._cache_key:
            return
        # The chart is drawn once per size, theme and data; moving the cursor only restyles its cell.
        heatmap = self.data.chart.kind == "heatmap"
        positions = self._cell_positions(width, height) if heatmap else {}
        self._cache = self._build(width, height)
        self._cache_key = key
        self._lines = self._cache.split("\n", allow_blank=True)
        starts, offset = [], 0
        for line in self._lines:
            starts.append(offset)
            offset += len(line) + 1
        self._line_spans = {}
        for cell, spans in positions.items():
            for start, end in spans:
                row = bisect.bisect_right(starts, start) - 1
                self._line_spans.setdefault(cell, {}).setdefault(row, []).append((start - starts[row], end - starts[row]))
        self._strips = [self._strip(line) for line in self._lines]

    def _strip(self, line: Text) -> Strip:
        return Strip(list(line.render(self.app.console, end=""))).adjust_cell_length(self.size.width)

    def render_line(self, y: int) -> Strip:
        if self.data is None or self.data.chart.kind != "heatmap" or not self.data.matrix:
            return super().render_line(y)
        self._ensure_drawn()
        if y >= len(self._strips):
            return Strip.blank(self.size.width)
        spans = self._line_spans.get(self.cursor, {}).get(y)
        if not spans:
            return self._strips[y]
        self.painted_cursor = self.cursor
        line = self._lines[y].copy()
        for start, end in spans:
            line.stylize(CURSOR_STYLE, start, end)
        return self._strip(line)

    def render(self) -> Any:
        if self.data is None:
            return Text("No chart to show.", style="dim")
        self._ensure_drawn()
        return self._cache
