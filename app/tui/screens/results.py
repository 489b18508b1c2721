"""The results view: a run's SPEC charts through the shared renderer, a cursor over heatmap cells."""
from __future__ import annotations

import asyncio
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Header, Static, Tab, Tabs

from analyses.core.registry import get_analysis
from app import charts
from app.charts.generation import Generation, load_generation
from app.tui.plain import badge_style, plain
from app.tui.screens.base import WorkbenchScreen, background
from app.tui.widgets.chart_view import ChartView
from app.tui.widgets.entity_view import Entities, EntityView, load_entities
from app.tui.widgets.generation_view import GenerationView
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.table import Table

NEURON_CONTEXTS = "neuron-contexts"
GENERATE = "generate"
FACT_LOOKUP = "fact-lookup"  # its entities get their own view (app/tui/widgets/entity_view.py), not the generic table
TABLE_VIEW_ROWS = 1000


def table_views(spec: Any) -> list[charts.Table]:
    """A table view of every result table no chart of the SPEC draws (fact-lookup's per-entity
    predictions, its neurons...): every stored number of a run is one tab away."""
    drawn = {chart.table for chart in spec.charts}
    return [charts.Table(f"Table {table.name}", table.name, table.columns[0][0], per_input=False, limit=TABLE_VIEW_ROWS)
            for table in spec.tables if table.name not in drawn]


class ResultsScreen(WorkbenchScreen):
    BINDINGS = [
        Binding("tab", "next_chart", "Next chart", tooltip="Show the run's next chart"),
        Binding("shift+tab", "previous_chart", "Previous chart", show=False),
        Binding("right_square_bracket", "next_input", "Next input", tooltip="Per-input charts: the next input of the run"),
        Binding("left_square_bracket", "previous_input", "Previous input", show=False),
        Binding("s", "chart_sql", "SQL", tooltip="Copy the SQL behind this chart into the SQL console (F5) and run it there"),
        Binding("n", "neuron_contexts", "Contexts", show=False,
                tooltip="On a table row naming a neuron (contextual-neurons, fact-lookup): its top-activating contexts, from a stored "
                        "neuron-contexts run of that model and neuron when there is one, else the Probe form to compute them"),
        Binding("N", "neuron_contexts(True)", "Compute contexts", show=False,
                tooltip="On a table row naming a neuron: the Probe form on neuron-contexts to compute its contexts anew (another corpus)"),
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-normal")]  # narrow: the cell readout gets a third line

    def __init__(self) -> None:
        super().__init__(name="results")
        self.run_id: int | None = None
        self.analysis = ""
        self.input_ids: list[int] = []
        self.input_index = 0
        self.loaded: list[charts.ChartData | None] = []
        self.chart_index = 0
        self.shown: Any = None  # what the chart, table or generation view shows now
        self._rebuilding = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="results-body"):
            yield Static("No run open yet: run an analysis (F2) or open one from the history (F4).", id="run-info")
            yield Tabs(id="chart-tabs")
            yield ChartView(id="chart")
            yield Table(id="chart-table", zebra_stripes=True)
            yield GenerationView(id="generation")
            yield EntityView(id="entities")
            yield Static("", id="cell-info")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#chart-table", DataTable).display = False
        self.query_one("#generation", GenerationView).display = False
        self.query_one("#entities", EntityView).display = False
        if self.run_id is not None:
            self.load_run(self.app, self.run_id, None)

    def open_run(self, run_id: int) -> None:
        """Show a run; a screen not shown yet loads it when it is first mounted."""
        self.run_id, self.input_index, self.chart_index = run_id, 0, 0
        if self.is_mounted:
            self.show_loading(run_id)
            self.load_run(self.app, run_id, None)

    def show_loading(self, run_id: int) -> None:
        """Until the run's charts are read, its header says so and no earlier run's chart stays under it."""
        self.loaded, self.shown = [], None
        self.query_one("#run-info", Static).update(plain(f"run {run_id} · loading its charts…"))
        self.query_one("#chart-tabs", Tabs).display = False
        view = self.query_one("#chart", ChartView)
        view.show(None)
        view.display, view.loading = True, True
        self.query_one("#chart-table", DataTable).display = False
        self.query_one("#generation", GenerationView).display = False
        self.query_one("#entities", EntityView).display = False
        self.query_one("#cell-info", Static).display = True
        self.query_one("#cell-info", Static).update("")

    @background("load-run")
    def load_run(self, app: Any, run_id: int, input_index: int | None) -> None:
        """Read the run and every chart's data off the UI thread (a thread has no self.app: it is passed in)."""
        store = app.store
        row = store.run_row(run_id)
        if row is None:
            app.call_from_thread(self.show_problem, f"run {run_id} no longer exists")
            return
        input_ids = [r[0] for r in store.run_inputs(run_id, preview=0)]
        index = input_index or 0
        input_id = input_ids[index] if input_ids else None
        prompt = store.input_text(run_id, input_id, preview=70) or ""
        kept_part = row["status"] != "done" and store.has_partial(run_id)  # a cancel's steps so far (generate)
        partial = row["status"] != "done" and ((row.get("shards_done") or 0) > 0 or kept_part)
        status = row["status"] if row["status"] == "done" else f"{row['status']}: {(row['error'] or '').splitlines()[0] if row['error'] else ''}"
        badge = store.check_badges([run_id]).get(run_id)
        if partial:
            status += f" · {row['shards_done']}/{row['n_shards']} shards stored" + (" and one in part" if kept_part else "")
        inputs_note = f" · input {index + 1}/{len(input_ids)} ([ ] switch)" if len(input_ids) > 1 else ""
        # The fidelity badge: green when every check passed, amber when one was skipped, red when one failed.
        badge_part = (f" · checks {badge}", badge_style(badge)) if badge else ""
        info = plain(f"run {run_id} · {row['analysis']} · {row['model']} · {status}", badge_part, f"{inputs_note}\n", (prompt, "dim"))
        loaded: list[charts.ChartData | Generation | None] = []
        if row["status"] == "done" or partial:
            try:
                spec = get_analysis(row["analysis"]).spec
                if row["analysis"] == GENERATE:  # the generation view first: the text, its step cursor and the lens per step
                    loaded.append(load_generation(store, run_id, input_id))
                loaded += [data for chart in spec.charts for data in charts.load_charts(store, chart, run_id, input_id)]
                views = table_views(spec)
                if row["analysis"] == FACT_LOOKUP:  # the entity view in place of the generic table of its entities
                    loaded.append(load_entities(store, run_id))
                    views = [chart for chart in views if chart.table != "fact_lookup_entities"]
                loaded += [data for chart in views for data in charts.load_charts(store, chart, run_id, input_id)]
            except Exception as error:
                info.append_text(plain(f"\ncannot draw its charts: {error}", style="red"))
        app.call_from_thread(self.show_run, row["analysis"], info, loaded, input_ids, index)

    def show_problem(self, message: str) -> None:
        self.query_one("#chart", ChartView).loading = False
        self.query_one("#cell-info", Static).display = True
        self.query_one("#cell-info", Static).update(plain(message, style="red"))
        super().show_problem(message)

    async def show_run(self, analysis: str, info: Any, loaded: list, input_ids: list[int], input_index: int) -> None:
        # Tabs are removed and added asynchronously: one rebuild at a time, each awaited, so ids never clash.
        async with self._rebuilding:
            self.analysis, self.loaded, self.input_ids, self.input_index = analysis, loaded, input_ids, input_index
            self.query_one("#run-info", Static).update(info)
            self.query_one("#chart", ChartView).loading = False
            tabs = self.query_one("#chart-tabs", Tabs)
            tabs.display = True
            await tabs.clear()
            # Every tab on the line: labels shorten (the chart's own title is shown whole above it).
            room = max(8, (self.size.width - 2) // max(1, sum(data is not None for data in loaded)) - 2)
            for index, data in enumerate(loaded):
                if data is not None:
                    await tabs.add_tab(Tab(plain(charts.shortened(data.label, room)), id=f"chart-{index}"))
            if not any(data is not None for data in loaded):
                self.query_one("#chart", ChartView).show(None)
                self.query_one("#generation", GenerationView).display = False
                self.query_one("#entities", EntityView).display = False
                self.query_one("#cell-info", Static).display = True
                self.query_one("#cell-info", Static).update("This run has no chart data.")
                return
            self.chart_index = min(self.chart_index, len(loaded) - 1)
            if loaded[self.chart_index] is None:
                self.chart_index = next(i for i, d in enumerate(loaded) if d is not None)
            tabs.active = f"chart-{self.chart_index}"
            self.show_chart(self.chart_index)

    def show_chart(self, index: int) -> None:
        data = self.loaded[index]
        self.chart_index, self.shown = index, data
        view, table = self.query_one("#chart", ChartView), self.query_one("#chart-table", DataTable)
        generation = self.query_one("#generation", GenerationView)
        generation.display = isinstance(data, Generation)
        entities = self.query_one("#entities", EntityView)
        entities.display = isinstance(data, Entities)
        self.query_one("#cell-info", Static).display = not (generation.display or entities.display)  # each has its own readout
        if isinstance(data, Entities):
            view.display = table.display = False
            entities.show(data)
            entities.focus_table()
            return
        if isinstance(data, Generation):
            view.display = table.display = False
            generation.show(data)
            generation.focus()
            return
        is_table = data is not None and isinstance(data.chart, charts.Table)
        view.display, table.display = not is_table, is_table
        if is_table:
            table.clear(columns=True)
            table.add_columns(*[plain(column) for column in data.columns])
            table.add_rows([[plain(charts.format_cell(v)) for v in row] for row in data.rows])
            neuron = " · n: the row's neuron's top contexts (stored, else computed; N: compute)" if "neuron" in data.columns else ""
            self.query_one("#cell-info", Static).update(f"{len(data.rows)} rows · s: its SQL in the console{neuron}")
            table.focus()
        else:
            view.show(data)
            view.focus()

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab is not None and event.tab.id and event.tab.id.startswith("chart-"):
            index = int(event.tab.id.split("-")[1])
            if index < len(self.loaded) and (index != self.chart_index or self.shown is not self.loaded[index]):
                self.show_chart(index)

    def on_chart_view_cursor_moved(self, event: ChartView.CursorMoved) -> None:
        if self.query_one("#generation", GenerationView).display:
            return  # the generation view's own curve: its step readout says what is shown
        self.query_one("#cell-info", Static).update(event.description, layout=False)  # one fixed line: no re-layout per key

    def stream(self, run_id: int, note: str) -> None:
        """A running generate job's progress (the text so far) while this view shows its run."""
        if self.run_id != run_id or not self.is_mounted or self.loaded:
            return
        generation = self.query_one("#generation", GenerationView)
        self.query_one("#chart", ChartView).display = False
        self.query_one("#cell-info", Static).display = False
        generation.display = True
        generation.stream(run_id, note)

    def _step_chart(self, step: int) -> None:
        present = [i for i, d in enumerate(self.loaded) if d is not None]
        if not present:
            return
        position = present.index(self.chart_index) if self.chart_index in present else 0
        self.query_one("#chart-tabs", Tabs).active = f"chart-{present[(position + step) % len(present)]}"

    def action_next_chart(self) -> None:
        self._step_chart(1)

    def action_previous_chart(self) -> None:
        self._step_chart(-1)

    def _step_input(self, step: int) -> None:
        if self.run_id is not None and len(self.input_ids) > 1:
            self.load_run(self.app, self.run_id, (self.input_index + step) % len(self.input_ids))

    def action_next_input(self) -> None:
        self._step_input(1)

    def action_previous_input(self) -> None:
        self._step_input(-1)

    def selected_neuron(self) -> tuple[int, int] | None:
        """(layer, neuron) of the table row under the cursor when the table names a neuron (a
        ``neuron`` column; ``layer`` too, else layer 0 as in contextual-neurons); else None."""
        data = self.loaded[self.chart_index] if self.chart_index < len(self.loaded) else None
        if not isinstance(data, charts.ChartData) or not isinstance(data.chart, charts.Table) or "neuron" not in data.columns or not data.rows:
            return None
        row = data.rows[min(self.query_one("#chart-table", DataTable).cursor_row, len(data.rows) - 1)]
        values = dict(zip(data.columns, row))
        layer = values.get("layer", 0)
        if not isinstance(values["neuron"], int) or not isinstance(layer, int):
            return None
        return layer, values["neuron"]

    def action_neuron_contexts(self, compute: bool = False) -> None:
        """This row's neuron's top-activating contexts: the newest stored neuron-contexts run of the
        same model, layer and neuron when there is one (read, not recomputed), else (or with
        ``compute``) the Probe form on neuron-contexts with the layer and neuron set."""
        found = self.selected_neuron()
        if found is None:
            self.notify("Put the cursor on a table row that names a neuron (contextual-neurons, fact-lookup).", severity="warning")
            return
        if compute or self.run_id is None:
            self.compute_contexts(*found)
        else:
            self.find_contexts(self.app, self.run_id, *found)

    @background("neuron-contexts")
    def find_contexts(self, app: Any, run_id: int, layer: int, neuron: int) -> None:
        stored = app.store.latest_run_with(run_id, NEURON_CONTEXTS, {"layer": layer, "neuron": neuron})
        if stored:
            found, n_inputs = stored
            app.call_from_thread(app.open_run, found)
            app.call_from_thread(app.notify, f"layer {layer} neuron {neuron}: its top contexts as stored by run {found} "
                                 f"({n_inputs} inputs); N computes them anew", markup=False)
        else:
            app.call_from_thread(self.compute_contexts, layer, neuron)

    def compute_contexts(self, layer: int, neuron: int) -> None:
        probe = self.app.get_screen("probe")
        values = {"layer": str(layer), "neuron": str(neuron)}
        if probe.is_mounted and probe.shown_analysis == NEURON_CONTEXTS:
            form = probe.query_one("#params")
            for name, value in values.items():
                form.field(name).value = value
        probe.form_values[NEURON_CONTEXTS] = {**probe.form_values.get(NEURON_CONTEXTS, {}), **values}
        self.app.choose_analysis(NEURON_CONTEXTS)
        self.app.notify(f"neuron-contexts for layer {layer} neuron {neuron}: choose the corpus, then ctrl+r", markup=False)

    async def action_chart_sql(self) -> None:
        data = self.loaded[self.chart_index] if self.chart_index < len(self.loaded) else None
        if not isinstance(data, charts.ChartData) or not data.sql:
            self.notify("Open a run with a chart first.", severity="warning")
            return
        await self.app.use_sql(data.sql)
