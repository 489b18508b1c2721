"""One chart drawn by the shared renderer (app.charts.draw), with a keyboard cursor on heatmaps.

A heatmap with more rows than the widget has lines shows a window of rows, one line each, that
scrolls with the cursor, so that every layer is visible and reachable at 80x24.
"""
from __future__ import annotations

import bisect
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.strip import Strip
from textual_plotext import PlotextPlot

from app import charts

CURSOR_STYLE = Style(color="rgb(255,0,0)", bgcolor="rgb(255,0,0)")
TOKEN_CURSOR_STYLE = Style(color="rgb(255,255,255)", bgcolor="rgb(255,0,0)", bold=True)
FRAME_LINES = 5  # title, two borders, x tick labels, x axis label (see charts.heatmap_canvas)
DRAWN_KEPT = 24  # drawn charts kept, so paging back to a chart does not draw it again


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
        Binding("home", "edge(-1)", "First column", show=False),
        Binding("end", "edge(1)", "Last column", show=False),
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
        self.log_scale = False
        self.tokens = False
        self.tokens_shown = 0
        self._cache_key: tuple | None = None
        self._cache: Any = None
        self._lines: list[Text] = []
        self._line_spans: dict = {}
        self._strips: list[Strip] = []
        self._drawn: dict[tuple, tuple] = {}
        self.painted_cursor: tuple[int, int] | None = None

    @property
    def is_heatmap(self) -> bool:
        return self.data is not None and isinstance(self.data.chart, charts.Heatmap) and bool(self.data.matrix)

    def show(self, data: charts.ChartData | None) -> None:
        self.data = data
        if self.is_heatmap:
            # Start on the last position of the top row: where the final prediction is.
            self.cursor = (len(data.matrix) - 1, len(data.matrix[0]) - 1)
            self.row_offset = len(data.matrix)
        self._cache_key = None
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

    def visible_rows(self) -> int:
        return max(1, self.size.height - FRAME_LINES)

    def row_window(self) -> tuple[int, int]:
        """The heatmap rows on screen (all of them when they fit), keeping the cursor inside."""
        rows = len(self.data.matrix)
        shown = self.visible_rows()
        if rows <= shown or shown < 3:
            return 0, rows
        start = min(max(0, self.row_offset), rows - shown)
        row = self.cursor[0]
        if row < start:
            start = row
        elif row >= start + shown:
            start = row - shown + 1
        self.row_offset = start
        return start, start + shown

    def describe_cursor(self) -> Text:
        data = self.data
        if data is None:
            return Text("")
        if not isinstance(data.chart, charts.Heatmap):
            parts = []
            for name, (_, ys) in list(data.series.items())[:4]:
                parts.append(f"{name}: {len(ys)} points, min {min(ys):.4g}, max {max(ys):.4g}, last {ys[-1]:.4g}")
            return Text(" | ".join(parts) + ("   (l: linear scale)" if self.log_scale else ""))
        row, col = self.cursor
        y_value, label, value = data.cell(row, col)
        shown = "NULL" if value is None else f"{value:.6g}"
        parts = [f"{data.chart.y} {y_value} · {data.chart.x} {data.x_values[col]} {charts.label_token(label, 16)} · {data.chart.value} = {shown}"]
        for name, detail in data.details.get((row, col), ()):
            parts.append(f"{name} {charts.label_token(detail, 16) if isinstance(detail, str) else charts.format_cell(detail)}")
        start, stop = self.row_window() if self.size.height else (0, len(data.matrix))
        if stop - start < len(data.matrix):
            parts.append(f"rows {data.y_values[start]}-{data.y_values[stop - 1]} of {len(data.matrix)}")
        if self.tokens and not self.tokens_shown and self._cache_key is not None:
            parts.append("cells too narrow for tokens")
        return Text(" · ".join(parts))

    def action_move(self, rows: int, cols: int) -> None:
        data = self.data
        if not self.is_heatmap:
            return
        row = min(len(data.matrix) - 1, max(0, self.cursor[0] + rows))
        col = min(len(data.matrix[0]) - 1, max(0, self.cursor[1] + cols))
        self.cursor = (row, col)
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

    def action_edge(self, direction: int) -> None:
        if self.is_heatmap:
            self.action_move(0, (len(self.data.matrix[0]) if direction > 0 else -len(self.data.matrix[0])))

    def action_toggle_log(self) -> None:
        if self.data is None:
            return
        if not self.log_scale and not self.data.can_log:
            self.notify("This chart has negative values: no log scale.", severity="warning")
            return
        self.log_scale = not self.log_scale
        self._cache_key = None
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

    def action_toggle_tokens(self) -> None:
        if not self.is_heatmap:
            return
        self.tokens = not self.tokens
        self._cache_key = None
        self._ensure_drawn()
        self.refresh()
        self.post_message(self.CursorMoved(self.describe_cursor()))

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
        start, stop = self.row_window() if self.is_heatmap else (0, 0)
        key = (width, height, self.app.theme, id(self.data), start, stop, self.log_scale, self.tokens)
        if key == self._cache_key:
            return
        if key in self._drawn and self._drawn[key][0] is self.data:
            _, self._cache, self._lines, self._line_spans, self._strips, self.tokens_shown = self._drawn[key]
            self._cache_key = key
            return
        # The chart is drawn once per size, theme, data, window and mode; moving the cursor only restyles its cell.
        data = self.data.rows_window(start, stop) if self.is_heatmap and stop - start < len(self.data.matrix) else self.data
        positions = self._cell_positions(data, width, height) if self.is_heatmap else {}
        self._cache = self._build(data, width, height)
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
                self._line_spans.setdefault((row + start, col), {}).setdefault(line, []).append((span_start - starts[line], span_end - starts[line]))
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
            style = contrast(charts.cell_rgb(self.data, *cell, self.log_scale))
            line = self._lines[line_index]
            self._lines[line_index] = Text.assemble(line[:left], Text(shown, style=style), line[right:], end="")
            written += 1
        return written

    def _strip(self, line: Text) -> Strip:
        return Strip(list(line.render(self.app.console, end=""))).adjust_cell_length(self.size.width)

    def render_line(self, y: int) -> Strip:
        if not self.is_heatmap:
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
            line.stylize(TOKEN_CURSOR_STYLE if self.tokens else CURSOR_STYLE, start, end)
        return self._strip(line)

    def render(self) -> Any:
        if self.data is None:
            return Text("No chart to show.", style="dim")
        self._ensure_drawn()
        return self._cache
