"""The workbench App: a thin router between screens, the worker host and the store."""
from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from textual import events
from textual.app import App
from textual.binding import Binding

from app.run.progress import Pace
from app.run.worker import Failed, Finished, JobCancelled, JobProgress, Log, ModelChoice, ModelStatus, Started, Submitted
from app.tui.commands import WorkbenchCommands
from app.tui.events import JobEvent, JobState, apply
from app.tui.keys import KeyOrder
from app.tui.plain import plain
from app.tui.screens.base import WorkbenchScreen
from app.tui.screens.compare import CompareScreen, start_compare
from app.tui.screens.corpus import CorpusScreen
from app.tui.screens.history import HistoryScreen
from app.tui.screens.jobs import JobsScreen
from app.tui.screens.probe import ProbeScreen
from app.tui.screens.results import ResultsScreen
from app.tui.screens.sql import SqlScreen
from app.tui.settings import Settings
from app.tui.widgets.confirm import ConfirmModal

HostFactory = Callable[[Any, Callable, ModelChoice], Any]


def worker_host_factory(settings: Settings) -> HostFactory:
    def make(store: Any, on_event: Callable, model: ModelChoice) -> Any:
        from app.run.worker_host import WorkerHost

        log_path = settings.worker_log
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        return WorkerHost(store, on_event, model, log_path=str(log_path) if log_path else None, lock_retry_s=settings.lock_retry_s)

    return make


class Workbench(App):
    CSS_PATH = "workbench.tcss"
    TITLE = "iwb"
    SUB_TITLE = "interpretability workbench"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS = [
        Binding("f1", "toggle_help", "Help", tooltip="This screen's help: what it is for, what its numbers mean, its keys (also ?)"),
        Binding("f2", "show('probe')", "Probe", tooltip="Prompt, model, analysis and parameters"),
        Binding("f3", "show('results')", "Results", tooltip="Charts of the open run"),
        Binding("f4", "show('history')", "History", tooltip="Stored runs"),
        Binding("f5", "show('sql')", "SQL", tooltip="Read-only SQL console"),
        # Priority: the prompt and SQL editors (TextArea) would take F6 for "select line".
        Binding("f6", "show('corpus')", "Corpus", priority=True, tooltip="Browse a corpus and send a document to the probe"),
        Binding("f7", "compare", "Compare", priority=True, tooltip="History: mark a run, then F7 on another compares them; elsewhere opens the compare view"),
        # The key bar keeps F1..F8 and ^q at any width: where words do not fit, they shorten (KeyBar).
        Binding("f8", "show('jobs')", "Jobs", priority=True, tooltip="The running job and the queue behind it: reorder, cancel"),
        Binding("ctrl+t", "toggle_dark", "Theme", show=False, tooltip="Toggle the dark and light theme"),
        Binding("ctrl+q", "quit", "Quit", tooltip="Quit (asks first while a job runs; the job is then cancelled)"),
    ]

    def __init__(self, store: Any, settings: Settings, host_factory: HostFactory | None = None) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.theme = settings.theme
        self.job_state = JobState(model=settings.model)
        self.events_seen: list[Any] = []
        self.quit_state = ""  # "asking": the quit confirm is shown; "cancelling": quit once the job has ended
        self.key_order = KeyOrder(self)
        self.pace, self.pace_job = Pace(), None  # the current job's rate and time left
        self.host = (host_factory or worker_host_factory(settings))(store, self.post_job_event, ModelChoice(settings.model, settings.device, settings.dtype))

    def post_job_event(self, event: Any) -> None:
        """Called from the host's relay thread (post_message is thread-safe)."""
        self.post_message(JobEvent(event))

    async def on_mount(self) -> None:
        self.install_screen(ProbeScreen(self.settings.model), "probe")
        self.install_screen(ResultsScreen(), "results")
        self.install_screen(HistoryScreen(), "history")
        self.install_screen(SqlScreen(self.settings.sql_page_rows), "sql")
        self.install_screen(CorpusScreen(), "corpus")
        self.install_screen(CompareScreen(), "compare")
        self.install_screen(JobsScreen(), "jobs")
        await self.push_screen("probe")
        self.key_order.start()
        self.host.start()
        self.refresh_job_widgets()

    def notify(self, message: str, *, title: str = "", severity: Any = "information", timeout: float | None = None, markup: bool = False) -> None:
        """Toasts carry error messages and names from outside our code: never parsed as markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def record_problem(self, error: BaseException, where: str) -> None:
        """A handled error: the screen shows its message; its traceback goes to the crash log."""
        append_traceback(self.settings.crash_log, f"handled in {where}", error)

    def _handle_exception(self, error: Exception) -> None:
        # An error no handler caught ends the app (Textual's rule); leave its traceback behind first.
        append_traceback(self.settings.crash_log, "the app stopped on this error", error)
        super()._handle_exception(error)

    def on_unmount(self) -> None:
        self.key_order.stop()
        self.host.close()

    async def on_event(self, event: events.Event) -> None:
        """A key (or paste) from the terminal waits while the one before it is still being handled (app.tui.keys)."""
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded and self.key_order.take(event):
            return
        await super().on_event(event)

    async def action_quit(self) -> None:
        """Quit at once when no job runs or waits; else ask, and on yes cancel the jobs and quit when the
        running one has ended, so that its run is stored cancelled rather than left running."""
        if self.quit_state == "cancelling":
            self.exit()  # a second ctrl+q while the job winds down: quit now (the next open marks the run interrupted)
            return
        if not self.job_state.busy:
            self.exit()
            return
        if self.quit_state == "asking":
            return
        self.quit_state = "asking"
        state = self.job_state
        what = f"run {state.run_id}" if state.run_id is not None else "waiting for the worker"
        queued = f" {len(state.waiting)} more {'job waits' if len(state.waiting) == 1 else 'jobs wait'}." if state.waiting else ""
        if state.running:
            question = f"Job {state.job_id} ({state.analysis}, {what}) is still running.{queued} Cancel {'them' if queued else 'it'} and quit?"
        else:
            question = f"{queued.strip()} Cancel {'them' if len(state.waiting) > 1 else 'it'} and quit?"
        self.push_screen(ConfirmModal(question, yes="Yes, cancel and quit (y)"), self.quit_answered)

    def quit_answered(self, answer: bool | None) -> None:
        if not answer:
            self.quit_state = ""
            return
        if not self.job_state.busy:  # it ended while the question was shown
            self.exit()
            return
        self.quit_state = "cancelling"
        self.host.cancel(None)  # the waiting jobs and the running one
        if not self.job_state.running:
            self.exit()
            return
        self.notify("Cancelling the job; iwb quits as soon as the worker has stopped it (ctrl+q again quits now).", title="Quitting", timeout=10)

    def on_job_event(self, message: JobEvent) -> None:
        event = message.event
        self.events_seen.append(event)
        self.job_state = apply(self.job_state, event)
        if isinstance(event, JobProgress) and event.job_id == self.job_state.job_id:
            if self.pace_job != event.job_id:
                self.pace, self.pace_job = Pace(), event.job_id
            self.pace.update(event.done, event.total)
            self.job_state = replace(self.job_state, pace=self.pace.describe(event.done, event.total, event.note))
        self.refresh_job_widgets()
        if self.quit_state == "cancelling" and not self.job_state.running:
            self.exit()
            return
        probe = self.get_screen("probe")
        if isinstance(event, Submitted):
            waiting = [job_id for job_id, _ in self.job_state.waiting]
            if event.job_id in waiting:
                probe.log_line(plain(f"job {event.job_id}: {event.analysis} queued ({waiting.index(event.job_id) + 1} of {len(waiting)} waiting; F8 shows the queue)"))
            else:
                probe.log_line(plain(f"job {event.job_id}: {event.analysis} submitted"))
        elif isinstance(event, Started):
            probe.log_line(plain(f"job {event.job_id}: run {event.run_id} started on {event.model}"))
            if event.analysis == "generate" and not self.reading_another_run(event.run_id):  # Results (F3) streams its text
                self.get_screen("results").open_run(event.run_id)
        elif isinstance(event, Finished):
            rows = ", ".join(f"{name} {count}" for name, count in event.table_rows.items())
            probe.log_line(plain(f"job {event.job_id}: run {event.run_id} done in {event.seconds:.1f} s ({rows} rows)"))
            if self.reading_another_run(event.run_id):
                self.notify(f"run {event.run_id} is done: enter on it in History (F4) opens it",
                            title="Job done", timeout=6)
            else:
                self.open_run(event.run_id, switch=self.screen is probe)
        elif isinstance(event, Failed):
            message = event.message if len(event.message) <= 300 else event.message[:299] + "…"
            probe.log_line(plain(f"job {event.job_id} failed: {event.heading}: {message}", style="red"))
            self.notify(message, title=f"Job failed ({event.heading})", severity="error", timeout=8)
            if event.run_id is None and event.title == "Bad input":  # refused by the analysis' own check in the worker:
                probe.show_form_error(message)  # under the form, as a check on this side would be, at the field it names
        elif isinstance(event, JobCancelled):
            probe.log_line(plain(f"job {event.job_id}: {event.reason}"))
            results = self.get_screen("results")
            if event.run_id is not None and results.is_mounted and results.run_id == event.run_id:
                results.load_run(self, event.run_id, results.input_index)  # what the cancel kept (generate: the steps so far)
        elif isinstance(event, ModelStatus) and event.state in ("ready", "failed", "stopped"):
            probe.log_line(plain(f"model {event.name} {event.state}" + (f" on {event.device} {event.dtype}" if event.device else "") + (f" ({event.detail})" if event.detail else "")))
        elif isinstance(event, Log):
            probe.log_line(plain(event.text, style="" if event.level == "info" else "yellow"))
        elif isinstance(event, JobProgress) and self.job_state.analysis == "generate" and self.job_state.run_id is not None \
                and not event.note.endswith("stored"):
            self.get_screen("results").stream(self.job_state.run_id, event.note)  # the text as it is made
        elif isinstance(event, JobProgress) and event.note.endswith("stored") and self.job_state.run_id is not None:
            # A shard of the running job is stored: a results view showing that run draws it now.
            results = self.get_screen("results")
            if results.is_mounted and results.run_id == self.job_state.run_id:
                results.load_run(self, self.job_state.run_id, results.input_index)

    def refresh_job_widgets(self) -> None:
        probe = self.get_screen("probe")
        if probe.is_mounted:
            probe.show_state(self.job_state)
        jobs = self.get_screen("jobs")
        if jobs.is_mounted:
            jobs.show_jobs(self.job_state)

    def submit_job(self, analysis: str, inputs: tuple, raw_params: dict) -> None:
        self.host.submit(analysis, inputs, raw_params)

    def resume_run(self, run_id: int, analysis: str) -> None:
        """Finish an interrupted, failed or cancelled run in the worker: only its missing shards."""
        self.host.submit_resume(run_id, analysis)

    def cancel_job(self, job_id: int | None = None) -> None:
        """Cancel a job (default: the running one): a waiting job is dropped, the running one asked to stop."""
        state = self.job_state
        if job_id is None or job_id == state.job_id:
            if state.running:
                self.host.cancel(state.job_id)
                self.get_screen("probe").log_line(plain(f"job {state.job_id}: cancel asked"))
        elif job_id in dict(state.waiting):
            self.host.cancel(job_id)

    def move_job(self, job_id: int, step: int) -> bool:
        """Move a waiting job earlier (step < 0) or later in the queue; False when it is not waiting."""
        return bool(self.host.move(job_id, step))

    def switch_model(self, name: str) -> None:
        if name == self.host.model.name:
            return
        self.host.set_model(ModelChoice(name, self.settings.device, self.settings.dtype))
        self.job_state = apply(self.job_state, _model_switching(name))
        self.refresh_job_widgets()

    def reading_another_run(self, run_id: int) -> bool:
        """Results is on screen with another run open: a queued job that starts or ends does not take
        the view away from what is being read (a circuit walked, a heatmap cell); a toast says so."""
        results = self.get_screen("results")
        return self.screen is results and results.run_id is not None and results.run_id != run_id

    def open_run(self, run_id: int, switch: bool = True) -> None:
        self.get_screen("results").open_run(run_id)
        if switch:
            self.action_show("results")

    async def use_sql(self, sql: str) -> None:
        """Open the SQL console with this query in its editor, run."""
        if self.screen.name != "sql":
            await self.switch_screen("sql")
        self.get_screen("sql").use_sql(sql)

    def choose_analysis(self, name: str) -> None:
        self.action_show("probe")
        self.get_screen("probe").select_analysis(name)

    def rerun_in_probe(self, analysis: str, prompt: str, values: dict[str, str], what: str) -> None:
        """A stored run's analysis, prompt and set parameters in the Probe form (History's e): one
        changed value and ctrl+r make the twin run."""
        probe = self.get_screen("probe")
        probe.form_values[analysis] = dict(values)
        if probe.is_mounted and probe.shown_analysis == analysis:  # the form is not rebuilt: fill it in place
            form = probe.query_one("#params")
            for info in form.infos:
                form.field(info.name).value = values.get(info.name, "")
        self.choose_analysis(analysis)
        probe.use_prompt(prompt)
        self.notify(f"{what} is in the form: change a value (a coefficient, a layer), then ctrl+r runs it", markup=False)

    def use_prompt(self, text: str) -> None:
        """Make text the probe's prompt (from the corpus browser) and go there."""
        self.action_show("probe")
        self.get_screen("probe").use_prompt(text)

    def action_show(self, name: str) -> None:
        if self.screen.name != name:
            self.switch_screen(name)
        if name == "probe":
            self.call_after_refresh(self.get_screen("probe").focus_first)

    def action_compare(self) -> None:
        start_compare(self)

    def action_run_job(self) -> None:
        self.action_show("probe")
        self.get_screen("probe").action_run()

    def action_toggle_help(self) -> None:
        """F1 or ?: the shown screen's own help (app/tui/help.py), not Textual's list of every key."""
        from app.tui.help import HelpScreen, help_text

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        elif isinstance(self.screen, WorkbenchScreen):
            self.push_screen(HelpScreen(help_text(self.screen)))

    def action_help_quit(self) -> None:
        """ctrl+c (copy in a text field) elsewhere: say how to quit (Textual's own toast is markup, shown raw here)."""
        self.notify("Press ctrl+q to quit (ctrl+c copies selected text).", title="Do you want to quit?")


def append_traceback(path: Path | None, title: str, error: BaseException) -> None:
    """Keep a traceback where a person can find it later; a log that cannot be written is skipped."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"--- {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC {title}\n")
            log.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    except OSError:
        pass


def _model_switching(name: str) -> Any:
    from app.run.worker import ModelStatus

    return ModelStatus(name, "switching")
