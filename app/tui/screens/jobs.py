"""The jobs screen: the running job and the jobs queued behind it; reorder the queue, cancel a job.

ctrl+r on the probe while a job runs queues the new job (the worker runs one at a time, in the
order shown here). The screen draws the app's JobState (app/tui/events.py), which the worker
host's events keep up to date; moving and cancelling go to the host, whose answer comes back as
events, so what is shown is what the host will do.
"""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Header, Static

from app.tui.events import JobState
from app.tui.plain import plain
from app.tui.screens.base import WorkbenchScreen
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.table import Table

# progress last: its note can be long, and at 80 columns a cell after it was pushed off the screen;
# the line under the table shows the selected job's whole progress.
COLUMNS = ("job", "analysis", "state", "run", "progress")


def job_rows(state: JobState) -> list[tuple[int, tuple[str, ...]]]:
    """(job id, cells) of the running job, then the waiting ones in the order they will run."""
    rows: list[tuple[int, tuple[str, ...]]] = []
    if state.job_id is not None and state.running:
        what = "running" if state.phase == "started" else "starting"
        progress = (f"{state.done}/{state.total} · " if state.total else "") + state.note + state.pace
        rows.append((state.job_id, (str(state.job_id), state.analysis, what, "" if state.run_id is None else str(state.run_id), progress)))
    for place, (job_id, analysis) in enumerate(state.waiting, start=1):
        rows.append((job_id, (str(job_id), analysis, f"waiting ({place} of {len(state.waiting)})", "", "")))  # no run, no progress yet
    return rows


class JobsScreen(WorkbenchScreen):
    DEFAULT_CSS = """
    #jobs-body { padding: 0 1; }
    #jobs-summary { height: auto; margin: 0 0 1 0; }
    #jobs { height: 1fr; }
    #jobs-detail { height: auto; max-height: 3; background: $panel; padding: 0 1; }
    """
    BINDINGS = [
        Binding("x,delete", "cancel_job", "Cancel job", tooltip="Cancel the selected job: a waiting one is dropped, the running one is asked to stop"),
        Binding("shift+up,u", "move(-1)", "Earlier", tooltip="Move the selected waiting job one place earlier in the queue"),
        Binding("shift+down,n", "move(1)", "Later", tooltip="Move the selected waiting job one place later in the queue"),
        Binding("enter", "open_run", "Open run", show=False, tooltip="Open the selected job's run in Results"),
    ]

    def __init__(self) -> None:
        super().__init__(name="jobs")
        self.rows: list[tuple[int, tuple[str, ...]]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="jobs-body"):
            yield Static("", id="jobs-summary")
            yield Table(id="jobs", cursor_type="row", zebra_stripes=True)
            yield Static("", id="jobs-detail")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#jobs", DataTable).add_columns(*COLUMNS)
        self.show_jobs(self.app.job_state)

    def on_screen_resume(self) -> None:
        self.show_jobs(self.app.job_state)
        self.query_one("#jobs", DataTable).focus()

    def show_jobs(self, state: JobState) -> None:
        """Redraw from the app's job state; the cursor stays on the job it was on."""
        table = self.query_one("#jobs", DataTable)
        selected = self.selected_job()
        old, self.rows = self.rows, job_rows(state)
        if [job_id for job_id, _ in old] == [job_id for job_id, _ in self.rows]:
            # The same jobs in the same order (a progress report): only the changed cells are redrawn.
            for (job_id, before), (_, cells) in zip(old, self.rows):
                for column, (was, now) in zip(table.ordered_columns, zip(before, cells)):
                    if was != now:
                        table.update_cell(str(job_id), column.key, plain(now))
        else:
            table.clear()
            for job_id, cells in self.rows:
                table.add_row(*(plain(cell) for cell in cells), key=str(job_id))
            if selected is not None and str(selected) in table.rows:
                table.move_cursor(row=table.get_row_index(str(selected)), scroll=False)
        if not self.rows:
            last = f" The last job, {state.job_id} ({state.analysis}), {state.phase}: {state.note}" if state.job_id is not None else ""
            summary = "No job runs or waits. ctrl+r on the probe (F2) runs one; while one runs, ctrl+r queues the next." + last
        else:
            summary = (f"{len(state.waiting)} waiting behind the running job. The worker runs one job at a time, top to bottom; "
                       "shift+↑/↓ (u/n) reorder the waiting ones, x cancels the selected job.")
        self.query_one("#jobs-summary", Static).update(plain(summary))
        self.show_detail()

    def selected_job(self) -> int | None:
        table = self.query_one("#jobs", DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return int(key.value)

    def show_detail(self) -> None:
        job_id = self.selected_job()
        text = "" if job_id is None else next((f"job {cells[0]} · {cells[1]} · {cells[2]}" + (f" · run {cells[3]}" if cells[3] else "")
                                               + (f" · {cells[4]}" if cells[4] else "") for key, cells in self.rows if key == job_id), "")
        # With layout: the line wraps to up to 3 lines as the progress note grows or shrinks.
        self.query_one("#jobs-detail", Static).update(plain(text))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()

    def action_cancel_job(self) -> None:
        job_id = self.selected_job()
        if job_id is not None:
            self.app.cancel_job(job_id)

    def action_move(self, step: int) -> None:
        job_id = self.selected_job()
        if job_id is None:
            return
        if not self.app.move_job(job_id, step):
            self.notify(f"Job {job_id} is not waiting: only waiting jobs move.", severity="warning")

    def action_open_run(self) -> None:
        job_id = self.selected_job()
        run = next((cells[4] for key, cells in self.rows if key == job_id), "")
        if run:
            self.app.open_run(int(run))
