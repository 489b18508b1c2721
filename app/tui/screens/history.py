"""The history screen: stored runs, filtered by text; open one, or delete it after confirming."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Header, Input, Static

from analyses.core.registry import REGISTRY, get_analysis
from app.tui.plain import badge_style, plain, short_badge
from app.tui.screens.base import WorkbenchScreen, background
from app.tui.widgets.confirm import ConfirmModal
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.table import Table

REFRESH_S = 3.0  # how often the shown list reads the runs' statuses again
# secs: the time the run computed (started or resumed until it ended), then "/ wall" where its start to
# its end (pauses before a resume included) was longer. Narrow enough that at 80 columns every row
# shows its model whole and its prompt's start: the time drops the year of the newest run's year.
COLUMNS = ("run", "time (UTC)", "analysis", "status", "secs", "model", "prompt")


def run_time(created_at: Any, year: int) -> str:
    """A run's start: month-day and minute in the given year (the newest run's), else the whole date."""
    return f"{created_at:%m-%d %H:%M}" if created_at.year == year else f"{created_at:%Y-%m-%d}"


def run_seconds(compute_s: float | None, wall_s: float | None) -> str:
    """Compute seconds, and the wall seconds after a slash where they are longer (a pause before a resume)."""
    if compute_s is None:
        return "" if wall_s is None else f"{wall_s:.1f}"
    if wall_s is None or f"{wall_s:.1f}" == f"{compute_s:.1f}":
        return f"{compute_s:.1f}"
    return f"{compute_s:.1f}/{wall_s:.1f}"


class HistoryScreen(WorkbenchScreen):
    BINDINGS = [
        Binding("enter", "open_run", "Open", tooltip="Open the selected run in the results view"),
        Binding("delete", "delete_run", "Delete", tooltip="Delete the selected run and all its rows (asks first)"),
        Binding("R", "resume_run", "Resume", tooltip="Finish an interrupted, failed or cancelled run: only its missing shards are computed"),
        Binding("e", "edit_run", "Re-run", show=False,
                tooltip="Put the selected run's analysis, prompt and parameters in the Probe form (F2): change one (a coefficient, a layer) and ctrl+r makes a new run"),
        Binding("ctrl+f,slash", "focus_filter", "Filter", tooltip="Filter runs by analysis, model, status, params or prompt text"),
        Binding("ctrl+l", "refresh", "Refresh", tooltip="Read the runs again"),
        Binding("down", "to_table", "Runs", show=False, tooltip="From the filter: into the list of runs"),
    ]

    def __init__(self) -> None:
        super().__init__(name="history")
        self.errors: dict[int, str] = {}
        self.analyses: dict[int, str] = {}
        self.statuses: dict[int, str] = {}
        self.asked = 0  # loads asked for, and the newest one shown (or failed): an older load's rows never replace a newer one's
        self.answered = 0
        self.filter_asked = 0  # the newest load the filter asked for: keys typed after it wait for its rows
        self.shown_rows: list = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="history-body"):
            yield Input(placeholder="filter: analysis, model, status, parameter or prompt text", id="history-filter", compact=True)
            yield Table(id="runs", cursor_type="row", zebra_stripes=True)
            yield Static("", id="run-detail")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).add_columns(*COLUMNS)
        # Statuses change while the screen is open (a job ends, another process writes): read them again by itself.
        self.set_interval(REFRESH_S, self.refresh_shown)

    def refresh_shown(self) -> None:
        if self.app.screen is self and not self.holds_keys():
            self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()
        self.query_one("#runs", DataTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.action_refresh()
        self.filter_asked = self.asked

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the filter opens the highlighted run (the first match), as it does in the list."""
        self.query_one("#runs", DataTable).focus()
        self.action_open_run()

    def action_to_table(self) -> None:
        self.query_one("#runs", DataTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "to_table":
            return self.focused is self.query_one("#history-filter", Input)
        return True

    def holds_keys(self) -> bool:
        """Keys typed after the filter wait for its rows (app.tui.keys): Down, Enter act on the filtered list."""
        return self.answered < self.filter_asked

    def action_refresh(self) -> None:
        self.asked += 1
        self.load_runs(self.app, self.query_one("#history-filter", Input).value, self.asked)

    def answer(self, generation: int) -> bool:
        """Mark a load as answered; False when a newer one was already shown (its rows are stale)."""
        if generation <= self.answered:
            return False
        self.answered = generation
        return True

    @background("history", exclusive=False)
    def load_runs(self, app: Any, text_filter: str, generation: int = 0) -> None:
        try:
            self.read_runs(app, text_filter, generation)
        except BaseException:
            app.call_from_thread(self.answer, generation)
            raise

    def read_runs(self, app: Any, text_filter: str, generation: int) -> None:
        result = app.store.list_runs(limit=500, text_filter=text_filter)
        rows, errors, analyses, statuses = [], {}, {}, {}
        names = result.columns
        year = max((values[names.index("created_at")].year for values in result.rows), default=0)  # the newest run's, not the clock's
        for values in result.rows:
            run = dict(zip(names, values))
            run_id = run["run_id"]
            errors[run_id] = ""
            analyses[run_id] = run["analysis"]
            statuses[run_id] = run["status"].split(" ")[0]
            rows.append((run_id, tuple(plain(cell) for cell in (
                str(run_id), run_time(run["created_at"], year), run["analysis"], run["status"],
                run_seconds(run["compute_s"], run["seconds"]), run["model"], (run["first_input"] or "")[:40].replace("\n", "⏎"),
            ))))
        if rows:
            errors.update(app.store.run_errors([run_id for run_id, _ in rows]))
            # A run whose fidelity record is not all ok says so in its status cell, briefly (a check's
            # name there pushed the other columns off an 80-column screen), and names the checks in
            # the line under the table.
            badges = app.store.check_badges([run_id for run_id, _ in rows])
            rows = [(run_id, cells[:3] + (plain(cells[3].plain, (f" ({short_badge(badges[run_id])})", badge_style(badges[run_id]))),) + cells[4:])
                    if badges.get(run_id, "ok") != "ok" else (run_id, cells) for run_id, cells in rows]
            for run_id, badge in badges.items():
                if badge != "ok":
                    errors[run_id] = f"checks {badge}" + (f" · {errors[run_id]}" if errors.get(run_id) else "")
        app.call_from_thread(self.show_runs, rows, errors, analyses, statuses, generation)

    def show_runs(self, rows: list, errors: dict, analyses: dict, statuses: dict | None = None, generation: int | None = None) -> None:
        if generation is not None and not self.answer(generation):
            return
        self.errors, self.analyses, self.statuses = errors, analyses, statuses or {}
        table = self.query_one("#runs", DataTable)
        if rows == self.shown_rows and table.row_count == len(rows):
            self.show_detail()  # nothing changed (the timer's read): the table, its cursor and scroll stay as they are
            return
        self.shown_rows = rows
        selected = self.selected_run()
        table.clear()
        for run_id, cells in rows:
            table.add_row(*cells, key=str(run_id))
        if selected is not None and str(selected) in table.rows:
            table.move_cursor(row=table.get_row_index(str(selected)))
        self.show_detail()
        self.query_one("#run-detail", Static).display = True

    def selected_run(self) -> int | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return int(key.value)

    def show_detail(self) -> None:
        run_id = self.selected_run()
        table = self.query_one("#runs", DataTable)
        text = f"{table.row_count} runs" + (f" · run {run_id}: {self.errors.get(run_id) or 'enter opens it, Delete removes it'}"
                                                 + (" · R resumes it" if self.statuses.get(run_id) in ("interrupted", "failed", "cancelled") else "") if run_id is not None else "")
        self.query_one("#run-detail", Static).update(plain(text), layout=False)

    def show_problem(self, message: str) -> None:
        self.query_one("#run-detail", Static).update(plain(message, style="red"))
        super().show_problem(message)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()

    def action_open_run(self) -> None:
        run_id = self.selected_run()
        if run_id is not None:
            self.app.open_run(run_id)

    def action_resume_run(self) -> None:
        run_id = self.selected_run()
        if run_id is None:
            return
        status = self.statuses.get(run_id, "")
        if status not in ("interrupted", "failed", "cancelled"):
            self.notify(f"Run {run_id} is {status or 'unknown'}; only interrupted, failed or cancelled runs resume.", severity="warning")
            return
        self.app.resume_run(run_id, self.analyses.get(run_id, ""))
        self.notify(f"Resuming run {run_id}: its missing shards are queued.")

    def action_edit_run(self) -> None:
        run_id = self.selected_run()
        if run_id is not None:
            self.read_for_rerun(self.app, run_id)

    @background("history-rerun")
    def read_for_rerun(self, app: Any, run_id: int) -> None:
        """The run's analysis, typed prompt and the parameters it set away from their defaults, read
        off the UI thread, then put in the Probe form."""
        import json

        from analyses.core.params import param_infos

        row = app.store.run_row(run_id)
        inputs = app.store.run_inputs(run_id, limit=2)
        if row is None or len(inputs) != 1 or inputs[0][1] != "prompt" or row["analysis"] not in REGISTRY:
            app.call_from_thread(self.notify, f"Run {run_id} is not a run of one typed prompt; re-run it from the Probe form (F2).", severity="warning")
            return
        stored = json.loads(row["params"] or "{}")
        values = {}
        for info in param_infos(get_analysis(row["analysis"]).Params):
            value = stored.get(info.name, info.default)
            if value is not None and value != info.default:
                values[info.name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        app.call_from_thread(app.rerun_in_probe, row["analysis"], inputs[0][2], values, f"run {run_id} on {row['model']}")

    def action_focus_filter(self) -> None:
        self.query_one("#history-filter", Input).focus()

    def action_delete_run(self) -> None:
        run_id = self.selected_run()
        if run_id is None:
            return
        if self.app.job_state.running and self.app.job_state.run_id == run_id:
            self.notify("That run is still running; cancel it first.", severity="warning")
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.delete_run(self.app, run_id)

        self.app.push_screen(ConfirmModal(f"Delete run {run_id} ({self.analyses.get(run_id, '')}) and all its rows? This cannot be undone."), answered)

    @background("history-delete", exclusive=False)
    def delete_run(self, app: Any, run_id: int) -> None:
        analysis = self.analyses.get(run_id, "")
        tables = [t.name for t in get_analysis(analysis).spec.tables] if analysis in REGISTRY else []
        app.store.delete_run(run_id, tables)
        app.call_from_thread(self.notify, f"run {run_id} deleted")
        app.call_from_thread(self.action_refresh)
