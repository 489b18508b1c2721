"""What every workbench screen shares: background work whose errors are shown in place."""
from __future__ import annotations

from collections.abc import Callable

from textual import work
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from app.errors import tui_line


def background(group: str, exclusive: bool = True) -> Callable:
    """A thread worker that never closes the app: its error goes to the screen's show_problem."""
    return work(thread=True, exclusive=exclusive, group=group, exit_on_error=False)


def describe_error(error: BaseException, db_path: object = None) -> str:
    """One line for the screen (app.errors.tui_line: the tree's own message, else the class too)."""
    return tui_line(error, db_path)


class WorkbenchScreen(Screen):
    # Not a priority key: in a text field ? is a character; elsewhere it opens this screen's help.
    BINDINGS = [Binding("question_mark", "context_help", "Help", show=False, tooltip="What this screen is for, what its numbers mean, its keys")]

    def action_context_help(self) -> None:
        self.app.action_toggle_help()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.app.record_problem(event.worker.error, f"background work {event.worker.name!r} on {self.name}")
            self.show_problem(describe_error(event.worker.error, getattr(self.app.store, "path", None)))

    def show_problem(self, message: str) -> None:
        """Where this screen shows a failed background read (the screen's message area and a toast)."""
        self.notify(message, title="Could not finish", severity="error", timeout=8)
