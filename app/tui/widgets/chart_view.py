"""One chart drawn by the shared renderer (app.charts.draw), with a keyboard cursor on heatmaps."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual_plotext import PlotextPlot

from app import charts


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

    def render(self) -> Any:
        if self.data is None:
            return Text("No chart to show.", style="dim")
        width, height = self.size.width, self.size.height
        key = (width, height, self.cursor, self.app.theme, id(self.data))
        if key != self._cache_key:
            cursor = self.cursor if self.data.chart.kind == "heatmap" else None
            charts.draw(self.plt, self.data, width, height, cursor=cursor)
            self._cache = super().render()
            self._cache_key = key
        return self._cache
