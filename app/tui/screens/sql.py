"""The SQL console: a read-only editor over the results database, paged results, chart any column."""
from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Header, Static, TextArea

from analyses.core.contract import Line
from analyses.core.errors import BadInput
from app import charts
from app.tui.plain import plain
from app.tui.screens.base import WorkbenchScreen, background
from app.tui.sql_pages import Page, fetch_for_chart, fetch_page
from app.tui.widgets.chart_picker import ChartChoice, ChartPickerModal
from app.tui.widgets.chart_view import ChartView
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.table import Table
from store import StoreError
from store.reading import QueryStop, QueryStopped

EXAMPLE_SQL = "SELECT run_id, analysis, model, status, created_at FROM runs ORDER BY run_id DESC"  # store-sql: shown to the user


class SqlArea(TextArea):
    """The SQL editor, with the prompt editor's keys: ctrl+a selects the whole text (then delete or
    typing replaces it), instead of TextArea's move to the line start."""

    BINDINGS = [Binding("ctrl+a", "select_all", "Select all", show=False, tooltip="Select the whole statement")]

    def action_select_all(self) -> None:
        self.select_all()


def sql_editor() -> TextArea:
    """SQL highlighting where the tree-sitter grammar is installed, a plain editor otherwise."""
    language = "sql" if "sql" in TextArea().available_languages else None
    return SqlArea("", language=language, id="sql-editor", show_line_numbers=True, soft_wrap=True, placeholder=f"e.g. {EXAMPLE_SQL}")


def chart_data_from_rows(choice: ChartChoice, rows: list[tuple]) -> charts.ChartData | None:
    # A user query's chart: no SPEC table behind it (table ""), drawn from the rows given.
    chart = Line(f"{choice.value} over {choice.x or 'row'}", "", choice.value, x=choice.x or "row", series=choice.series)
    data = charts.ChartData(chart, subtitle=f"{len(rows)} rows")
    for series_value, x, value in rows:
        if value is None or x is None or not isinstance(x, (int, float)):
            continue
        name = choice.value if choice.series is None else f"{choice.series}={series_value}"
        xs, ys = data.series.setdefault(name, ([], []))
        xs.append(x)
        ys.append(float(value))
    for name, (xs, ys) in list(data.series.items()):
        ordered = sorted(zip(xs, ys))
        data.series[name] = ([x for x, _ in ordered], [y for _, y in ordered])
    return data if data.series else None


class SqlScreen(WorkbenchScreen):
    BINDINGS = [
        Binding("ctrl+enter,ctrl+r", "run_query", "Run SQL", tooltip="Run the statement (read-only)"),
        Binding("ctrl+n", "page(1)", "Next page", tooltip="Fetch the next page of rows"),
        Binding("ctrl+b", "page(-1)", "Prev page", tooltip="Fetch the previous page of rows"),
        Binding("ctrl+g", "chart", "Chart this", tooltip="Draw a numeric column of the result"),
        Binding("ctrl+l", "clear_sql", "Clear", tooltip="Empty the editor (ctrl+z undoes it)"),
        Binding("escape", "show_table", "Table", show=False),
        # Priority: the editor (TextArea) would take ctrl+k for "delete to the end of the line".
        Binding("ctrl+k", "cancel_query", "Cancel query", priority=True, tooltip="Stop the query that is running (DuckDB interrupts it)"),
    ]

    def __init__(self, page_rows: int = 100) -> None:
        super().__init__(name="sql")
        self.page_rows = page_rows
        self.sql = ""
        self.page: Page | None = None
        self.stop: QueryStop | None = None  # the query in flight, if any
        self.query_started = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="sql-body"):
            yield sql_editor()
            yield Static("ctrl+r (or ctrl+enter) runs the statement; the console is read-only.", id="sql-status")
            yield Table(id="sql-results", zebra_stripes=True)
            yield ChartView(id="sql-chart")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#sql-chart", ChartView).display = False
        self.set_interval(0.5, self.tick)
        self.query_one("#sql-editor", TextArea).focus()

    def action_run_query(self) -> None:
        self.sql = self.query_one("#sql-editor", TextArea).text
        self.run_page(self.app, self.sql, 0)

    def action_clear_sql(self) -> None:
        area = self.query_one("#sql-editor", TextArea)
        area.clear()
        area.focus()

    def use_sql(self, sql: str) -> None:
        """Put a query in the editor (e.g. the one behind a results chart) and run it."""
        self.query_one("#sql-editor", TextArea).load_text(sql)
        self.action_run_query()

    def action_page(self, step: int) -> None:
        page = self.page
        if page is None or not page.pageable or (step > 0 and not page.has_more) or page.page + step < 0:
            return
        self.run_page(self.app, self.sql, page.page + step)

    def run_page(self, app: Any, sql: str, page_number: int) -> None:
        """Start the query off the UI thread; the status says it runs (and for how long) until it ends."""
        if self.stop is not None:
            self.stop.stop()  # a new query replaces the one in flight
        self.stop, self.query_started = QueryStop(), time.monotonic()
        status = self.query_one("#sql-status", Static)
        status.remove_class("error")
        status.update("running the query… · ctrl+k cancels it")
        self.fetch(app, sql, page_number, self.stop)

    def tick(self) -> None:
        """While a query runs, the status line counts its seconds."""
        if self.stop is not None:
            self.query_one("#sql-status", Static).update(f"running the query… {time.monotonic() - self.query_started:.1f} s · ctrl+k cancels it")

    def on_unmount(self) -> None:
        if self.stop is not None:
            self.stop.stop()  # quitting does not wait for a long query

    def action_cancel_query(self) -> None:
        if self.stop is None:
            self.notify("No query is running.", severity="information")
            return
        self.stop.stop()

    def query_ended(self, stop: QueryStop) -> bool:
        """True when this query is still the console's latest (an older one's answer is dropped)."""
        if stop is not self.stop:
            return False
        self.stop = None
        return True

    @background("sql", exclusive=False)
    def fetch(self, app: Any, sql: str, page_number: int, stop: QueryStop) -> None:
        started = time.monotonic()
        try:
            page = fetch_page(app.store, sql, page_number, self.page_rows, stop=stop)
        except QueryStopped:
            app.call_from_thread(self.show_stopped, stop, time.monotonic() - started)
            return
        except (BadInput, StoreError) as error:
            app.call_from_thread(self.show_query_error, stop, str(error))
            return
        app.call_from_thread(self.show_answer, stop, page, time.monotonic() - started)

    def show_stopped(self, stop: QueryStop, seconds: float) -> None:
        if self.query_ended(stop):
            self.show_error(f"query cancelled after {seconds:.1f} s (nothing new shown)")

    def show_query_error(self, stop: QueryStop, message: str) -> None:
        if self.query_ended(stop):
            self.show_error(message)

    def show_answer(self, stop: QueryStop, page: Page, seconds: float) -> None:
        if self.query_ended(stop):
            self.show_page(page, seconds)

    def show_error(self, message: str) -> None:
        status = self.query_one("#sql-status", Static)
        status.update(plain(message))
        status.add_class("error")

    def show_problem(self, message: str) -> None:
        self.show_error(message)

    def show_page(self, page: Page, seconds: float) -> None:
        self.page = page
        table = self.query_one("#sql-results", DataTable)
        table.clear(columns=True)
        table.add_columns(*[plain(column) for column in page.columns])
        table.add_rows([[plain(charts.format_cell(value)[:60]) for value in row] for row in page.rows])
        status = self.query_one("#sql-status", Static)
        status.remove_class("error")
        last = page.first_row + len(page.rows) - 1
        more = " · more: ctrl+n" if page.has_more else ""
        back = " · ctrl+b back" if page.page > 0 else ""
        shown = f"rows {page.first_row}-{last}" if page.rows else "no rows"
        status.update(f"{shown}{more}{back} · {len(page.columns)} columns · ctrl+g charts a column")
        self.action_show_table()

    def action_show_table(self) -> None:
        self.query_one("#sql-chart", ChartView).display = False
        self.query_one("#sql-results", DataTable).display = True

    def action_chart(self) -> None:
        page = self.page
        if page is None or not page.columns:
            self.show_error("run a query first; then ctrl+g charts one of its numeric columns")
            return

        def chosen(choice: ChartChoice | None) -> None:
            if choice is not None:
                self.draw_chart(self.app, self.sql, choice)

        self.app.push_screen(ChartPickerModal(page.columns, page.types), chosen)

    @background("sql")
    def draw_chart(self, app: Any, sql: str, choice: ChartChoice) -> None:
        try:
            data = chart_data_from_rows(choice, fetch_for_chart(app.store, sql, choice.value, choice.x, choice.series))
        except (BadInput, StoreError) as error:
            app.call_from_thread(self.show_error, str(error))
            return
        app.call_from_thread(self.show_chart, data)

    def show_chart(self, data: charts.ChartData | None) -> None:
        if data is None:
            self.show_error("nothing to draw: the x column must be numeric and the value not all NULL")
            return
        view = self.query_one("#sql-chart", ChartView)
        self.query_one("#sql-results", DataTable).display = False
        view.display = True
        view.show(data)
        self.query_one("#sql-status", Static).update(plain(f"chart of {data.chart.value} over {data.chart.x} ({data.subtitle}) · escape: back to the table"))
