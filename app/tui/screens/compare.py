"""The compare view: two runs of one analysis, chart by chart, drawn on their shared axes.

F7 on the history screen marks the run under the cursor; F7 on another run compares the two.
Here, type two run ids and press enter; d toggles relative depth (layers as fractions of each
model's depth, for models with different layer counts). The alignment is app.run.compare's; this
only shows it.
"""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Header, Input, Static

from analyses.core.errors import BadInput
from app import charts
from app.charts.generation import Generation, load_generation
from app.run.compare import Comparison, compare_runs
from app.tui.plain import plain
from app.tui.screens.base import WorkbenchScreen, background
from app.tui.widgets.chart_view import ChartView
from app.tui.widgets.generation_view import GenerationView
from app.tui.widgets.key_bar import KeyBar
from store import StoreError


class CompareScreen(WorkbenchScreen):
    DEFAULT_CSS = """
    #compare-body { padding: 0 1; }
    #compare-runs { height: 1; }
    #compare-runs Input { width: 14; margin-right: 2; }
    #compare-info { height: auto; max-height: 5; }
    #compare-chart { height: 1fr; }
    #compare-generation { height: 1fr; }
    #compare-cell { height: 2; background: $panel; padding: 0 1; text-overflow: ellipsis; }
    CompareScreen.-narrow #compare-cell { height: 3; }
    """
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-normal")]  # narrow: the cell readout gets a third line
    BINDINGS = [
        Binding("tab", "step_chart(1)", "Next chart", tooltip="Show the next compared chart"),
        Binding("shift+tab", "step_chart(-1)", "Previous chart", show=False),
        Binding("d", "toggle_depth", "Depth", tooltip="Align layers by relative depth (0..1) instead of by index: models of different depth"),
    ]

    def __init__(self) -> None:
        super().__init__(name="compare")
        self.marked: int | None = None
        self.comparison: Comparison | None = None
        self.chart_index = 0
        self.pending: tuple[int, int] | None = None
        self.relative_depth = False
        self.runs: tuple[int, int] | None = None
        self.generations: tuple[Generation, Generation] | None = None
        """Two generate runs: shown first, aligned by step (the generation view), before the charts."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="compare-body"):
            with Horizontal(id="compare-runs"):
                yield Input(placeholder="run A", id="compare-a", type="integer", compact=True)
                yield Input(placeholder="run B", id="compare-b", type="integer", compact=True)
            yield Static("Type two run ids and press enter, or mark a run in the history (F7) and press F7 on another.", id="compare-info", markup=False)
            yield ChartView(id="compare-chart")
            yield GenerationView(id="compare-generation")
            yield Static("", id="compare-cell", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#compare-generation", GenerationView).display = False
        if self.pending is not None:
            self._start(*self.pending)

    def mark_or_compare(self, run_id: int) -> bool:
        """F7 on a history row: mark it, or compare the marked run with it; True when comparing."""
        if self.marked is None or self.marked == run_id:
            self.marked = run_id
            self.app.notify(f"run {run_id} marked: press F7 on another run to compare the two", markup=False)
            return False
        run_a, self.marked = self.marked, None
        self.compare(run_a, run_id)
        return True

    def compare(self, run_a: int, run_b: int) -> None:
        if not self.is_mounted:
            self.pending = (run_a, run_b)
            return
        self._start(run_a, run_b)

    def _start(self, run_a: int, run_b: int) -> None:
        self.pending, self.runs = None, (run_a, run_b)
        self.query_one("#compare-a", Input).value, self.query_one("#compare-b", Input).value = str(run_a), str(run_b)
        self.load(self.app, run_a, run_b, self.relative_depth)

    def action_toggle_depth(self) -> None:
        if isinstance(self.focused, Input):  # d is a character in a run id field
            return
        self.relative_depth = not self.relative_depth
        self.notify("layers aligned by relative depth (0..1)" if self.relative_depth else "layers aligned by index", markup=False)
        if self.runs is not None:
            self._start(*self.runs)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text_a, text_b = self.query_one("#compare-a", Input).value.strip(), self.query_one("#compare-b", Input).value.strip()
        if not (text_a.isdigit() and text_b.isdigit()):
            self.show_error("give two run ids (see the history, F4)")
            return
        self.compare(int(text_a), int(text_b))

    @background("compare")
    def load(self, app: Any, run_a: int, run_b: int, relative_depth: bool = False) -> None:
        try:
            comparison = compare_runs(app.store, run_a, run_b, relative_depth=relative_depth)
            generations = None
            if comparison.analysis == "generate":  # the two texts and their lens, aligned by step
                found = [load_generation(app.store, run, charts.first_input_id(app.store, run)) for run in (run_a, run_b)]
                generations = (found[0], found[1]) if found[0] is not None and found[1] is not None else None
        except (BadInput, StoreError) as error:
            app.call_from_thread(self.show_error, (str(error).splitlines() or [type(error).__name__])[0])
            return
        app.call_from_thread(self.show_comparison, comparison, generations)

    def show_error(self, message: str) -> None:
        self.comparison, self.generations = None, None
        self.query_one("#compare-generation", GenerationView).display = False
        self.query_one("#compare-chart", ChartView).display = True
        self.query_one("#compare-cell", Static).display = True
        self.query_one("#compare-info", Static).update(plain(message, style="red"))
        self.query_one("#compare-chart", ChartView).show(None)
        self.query_one("#compare-cell", Static).update("")

    def show_comparison(self, comparison: Comparison, generations: tuple[Generation, Generation] | None = None) -> None:
        self.comparison, self.generations, self.chart_index = comparison, generations, 0
        lines = [f"compare {comparison.heading}: " + ("; ".join(comparison.differences) or "same model, parameters and input")]
        lines += [f"not compared: {note}" for note in comparison.skipped[:3]]
        self.query_one("#compare-info", Static).update(plain("\n".join(lines)))
        self.show_chart()

    @property
    def n_views(self) -> int:
        """The compared charts, and the generation view first for two generate runs."""
        return (len(self.comparison.charts) if self.comparison else 0) + (1 if self.generations else 0)

    def show_chart(self) -> None:
        if self.comparison is None:
            return
        view, generation = self.query_one("#compare-chart", ChartView), self.query_one("#compare-generation", GenerationView)
        index = self.chart_index - (1 if self.generations else 0)
        generation.display, view.display = index < 0, index >= 0
        self.query_one("#compare-cell", Static).display = index >= 0  # the generation view has its own step readout
        if index < 0 and self.generations is not None:
            generation.show(*self.generations)
            generation.focus()
            return
        view.show(self.comparison.charts[index])
        view.focus()

    def action_step_chart(self, step: int) -> None:
        if isinstance(self.focused, Input):  # tab still moves between the two run ids
            self.focus_next() if step > 0 else self.focus_previous()
            return
        if self.comparison is not None:
            self.chart_index = (self.chart_index + step) % self.n_views
            self.show_chart()

    def on_chart_view_cursor_moved(self, event: ChartView.CursorMoved) -> None:
        if self.query_one("#compare-generation", GenerationView).display:
            return  # the generation view's own curve: its step readout says what is shown
        total = self.n_views
        prefix = f"chart {self.chart_index + 1}/{total} (tab: next) · " if total else ""
        self.query_one("#compare-cell", Static).update(plain(prefix, event.description))


    def show_problem(self, message: str) -> None:
        self.show_error(message)
        super().show_problem(message)


def start_compare(app: Any) -> None:
    """F7: on the history screen, mark or compare the run under the cursor; elsewhere, open the view."""
    screen = app.get_screen("compare")
    selected = app.screen.selected_run() if app.screen.name == "history" else None
    if selected is None:
        app.action_show("compare")
    elif screen.mark_or_compare(selected):
        app.action_show("compare")
