"""The generation view: a generate run's text token by token, a step cursor (left/right) and, at
that step, the lens as a layer x top-k table and a curve of the chosen token's probability over
layers. Two runs (a steered and an unsteered twin, from Compare) are aligned by step: both texts,
the cursor on the same step in both, both curves on one chart and the table side by side.

While a generate job runs, ``stream`` shows the text the worker's progress carries as it is made.
"""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from app import charts
from app.charts.generation import Generation
from app.tui.plain import plain
from app.tui.widgets.chart_view import ChartView
from app.tui.widgets.table import Table


def _token(token: str) -> str:
    return charts.visible(token)


CELL_TOKEN = 14  # a table cell's token at most this wide (Gemma's vocabulary has tokens of 30+ characters)


def cell_token(token: str) -> str:
    """A token in a table cell: spaces as ·, newlines as ⏎ (so ' BC' and 'BC', a token of spaces, read
    apart), cut to CELL_TOKEN characters with …; the step readout above gives it whole."""
    return charts.label_token(token, CELL_TOKEN)


def probability(value: float) -> str:
    """A probability in a table cell: two decimals, or its order of magnitude below 0.005."""
    return f"{value:.2f}" if value >= 0.005 else f"{value:.0e}"


def _colour(prob: float) -> str:
    index = min(len(charts.COLORMAP) - 1, max(0, int(prob * len(charts.COLORMAP))))
    red, green, blue = charts.COLORMAP[index]
    return f"rgb({red},{green},{blue})"


class TextBox(VerticalScroll):
    """The generated text's box: it keeps a share of its scroll range (the step cursor's share of
    the steps) and re-applies it whenever its size or its text's wrapped height (its virtual size) changes, so a
    scrollbar that appears and rewraps the text does not leave the cursor's part out of view."""

    share = 0.0

    def keep(self, share: float) -> None:
        self.share = share
        self.call_after_refresh(self._apply)

    def _apply(self) -> None:
        self.scroll_to(y=round(self.max_scroll_y * self.share), animate=False)

    def on_resize(self) -> None:
        self._apply()

    def watch_virtual_size(self) -> None:
        # The text's wrapped height changed with the box's own size unchanged (a scrollbar that
        # appears narrows the text and rewraps it): no Resize reaches the box then. The scroll
        # range is updated after this watcher, so the share is re-applied after the refresh.
        self.call_after_refresh(self._apply)


class GenerationView(Vertical, can_focus=True):
    DEFAULT_CSS = """
    GenerationView { height: 1fr; }
    GenerationView #gen-text-box { height: auto; max-height: 4; }
    GenerationView #gen-text { height: auto; }
    GenerationView #gen-step { height: auto; max-height: 2; background: $panel; text-overflow: ellipsis; }
    GenerationView #gen-curve { height: 7; }
    GenerationView #gen-table { height: 1fr; min-height: 3; }
    GenerationView:focus #gen-step { background: $accent 30%; }
    """
    BINDINGS = [
        Binding("left", "step(-1)", "Step back", tooltip="The previous generated token: its lens below"),
        Binding("right", "step(1)", "Step on", tooltip="The next generated token: its lens below"),
        Binding("home", "edge(-1)", "First step", show=False),
        Binding("end", "edge(1)", "Last step", show=False),
        Binding("up", "scroll_table(-1)", "Table up", show=False),
        Binding("down", "scroll_table(1)", "Table down", show=False),
        Binding("pageup", "scroll_table(-8)", "Table page up", show=False),
        Binding("pagedown", "scroll_table(8)", "Table page down", show=False),
        Binding("shift+right", "pan_table(1)", "Table right", show=False,
                tooltip="The lens table's columns past the right edge (a narrow terminal shows top 1..3 of 5)"),
        Binding("shift+left", "pan_table(-1)", "Table left", show=False),
    ]

    class StepMoved(Message):
        def __init__(self, description: str) -> None:
            super().__init__()
            self.description = description

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs: list[Generation] = []
        self.step = 0
        self.streaming = False

    def compose(self) -> ComposeResult:
        with TextBox(id="gen-text-box"):
            yield Static("", id="gen-text")
        yield Static("", id="gen-step")
        curve = ChartView(id="gen-curve")
        curve.can_focus = False
        yield curve
        table: DataTable = Table(id="gen-table", zebra_stripes=True, cursor_type="row")
        table.can_focus = False
        yield table

    # -- what is shown ------------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        return max((len(run.steps) for run in self.runs), default=0)

    def show(self, *runs: Generation | None) -> None:
        """One run, or two aligned by step; the cursor starts on the last step."""
        self.runs = [run for run in runs if run is not None]
        self.streaming = False
        self.step = max(0, self.n_steps - 1)
        self._draw()

    def stream(self, run_id: int | None, note: str) -> None:
        """A running generate job's progress note (its text so far) before its steps are stored."""
        self.runs, self.streaming = [], True
        self.query_one("#gen-text", Static).update(plain(f"run {run_id if run_id is not None else '?'} generating: ", (note, "bold")))
        self.query_one("#gen-step", Static).update(plain("the step cursor and the lens come when the run's steps are stored"))
        curve = self.query_one("#gen-curve", ChartView)
        curve.show(None)
        curve.display = False  # no step stored yet: no empty chart frame saying "No chart to show." under the text
        self.query_one("#gen-table", DataTable).clear(columns=True)

    def describe(self) -> str:
        """The step cursor's readout (also the StepMoved message)."""
        if not self.runs:
            return "no generated steps"
        parts = [f"Generation · step {self.step + 1}/{self.n_steps}"]
        for run in self.runs:
            prefix = f"run {run.run_id} " if len(self.runs) > 1 else ""
            if self.step >= len(run.steps):
                parts.append(f"{prefix}(stopped at {len(run.steps)})")
                continue
            at = run.steps[self.step]
            detail = f"p {probability(at.prob)} rank {at.rank}" if len(self.runs) > 1 else f"pos {at.pos} · p {probability(at.prob)} · rank {at.rank} · {at.entropy_bits:.2f} bits"
            parts.append(f"{prefix}{_token(at.token)!r} {detail}")
        return " · ".join(parts)

    def _text(self) -> Text:
        text = Text()
        for number, run in enumerate(self.runs):
            if number:
                text.append("\n")
            if len(self.runs) > 1:
                text.append(f"run {run.run_id}: ", style="bold")
            text.append(run.prompt, style="dim")
            for index, step in enumerate(run.steps):
                style = f"bold reverse {_colour(step.prob)}" if index == self.step else _colour(step.prob)
                text.append(step.token, style=style)
        return text

    def _curve(self) -> charts.ChartData | None:
        chart = charts.Line(f"Lens at step {self.step + 1}: the chosen token's probability by layer", "generation_lens", "chosen_prob", x="layer")
        data = charts.ChartData(chart, subtitle="layer n = the model's own output")
        for run in self.runs:
            probs = run.chosen.get(run.steps[self.step].step) if self.step < len(run.steps) else None
            if probs:
                data.series[f"run {run.run_id}"] = (list(run.layers), list(probs))
        return data if data.series else None

    def _table(self) -> None:
        table = self.query_one("#gen-table", DataTable)
        row = table.cursor_row
        table.clear(columns=True)
        if not self.runs:
            return
        twin = len(self.runs) > 1
        first = self.runs[0]
        k = max((len(cells) for run in self.runs for layers in run.topk.values() for cells in layers), default=0)
        columns = ["layer"]
        for run in self.runs:
            name = f"run {run.run_id} " if twin else ""
            columns += [f"{name}p chosen"] + ([f"{name}top"] if twin else [f"top {i}" for i in range(1, k + 1)])
        table.add_columns(*columns)
        last = first.layers[-1] if first.layers else 0
        for position in range(len(first.layers) - 1, -1, -1):  # the model's own output first, layer 0 last
            layer = first.layers[position]
            cells: list[str] = ["out" if layer == last else str(layer)]
            for run in self.runs:
                if self.step >= len(run.steps) or position >= len(run.layers):
                    cells += [""] * (2 if twin else 1 + k)
                    continue
                step = run.steps[self.step].step
                probs = run.chosen.get(step, [])
                cells.append(probability(probs[position]) if position < len(probs) else "")
                tops = run.topk.get(step, [])
                top = tops[position] if position < len(tops) else []
                shown = top[:1] if twin else top
                cells += [f"{cell_token(token)} {probability(prob)}" for token, prob in shown] + [""] * ((1 if twin else k) - len(shown))
            table.add_row(*cells)
        if row:
            table.move_cursor(row=min(row, table.row_count - 1))

    def _draw(self) -> None:
        self.query_one("#gen-text", Static).update(self._text() if self.runs else plain("This run has no generated steps."))
        # A text longer than its box: keep the cursor's part of it in view (by its share of the steps).
        self.query_one("#gen-text-box", TextBox).keep(self.step / max(1, self.n_steps - 1))
        description = self.describe()
        self.query_one("#gen-step", Static).update(plain(description))
        curve = self.query_one("#gen-curve", ChartView)
        curve.display = True
        curve.show(self._curve() if self.runs else None)
        self._table()
        self.post_message(self.StepMoved(description))

    # -- keys -----------------------------------------------------------------------------
    def action_step(self, delta: int) -> None:
        if self.runs:
            self.step = max(0, min(self.n_steps - 1, self.step + delta))
            self._draw()

    def action_edge(self, direction: int) -> None:
        if self.runs:
            self.step = 0 if direction < 0 else self.n_steps - 1
            self._draw()

    def action_scroll_table(self, rows: int) -> None:
        table = self.query_one("#gen-table", DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + rows)))

    def action_pan_table(self, direction: int) -> None:
        """Half the table's width sideways: the top-k columns a narrow terminal cuts off."""
        table = self.query_one("#gen-table", DataTable)
        table.scroll_to(x=table.scroll_x + direction * max(1, table.size.width // 2), animate=False)
