"""Pilot helpers: the workbench over a fake worker host, waiting without sleeps, and the text a
widget shows read from its content rather than from the screen, so that no assertion depends on
the terminal size, a column's width or when the table last re-measured its columns."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.helpers.fakes import FakeHost


def make_app(store, hold: bool = False, page_rows: int = 100):
    from app.tui.app import Workbench
    from app.tui.settings import Settings

    settings = Settings(store.path, model="smollm2-135m", sql_page_rows=page_rows)
    return Workbench(store, settings, host_factory=lambda s, on_event, model: FakeHost(s, on_event, model, hold=hold))


async def settle(app, pilot) -> None:
    """Wait for every Textual worker and the messages they posted; no sleeps.

    A worker that failed counts as complete: the screens show its error in place.
    """
    import asyncio

    for _ in range(2):
        await asyncio.gather(*(worker.wait() for worker in list(app.workers)), return_exceptions=True)
        await pilot.pause()


def no_blink(app) -> None:
    from textual.widgets import Input, TextArea

    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    for widget in app.screen.query(TextArea):
        widget.cursor_blink = False


def shown(widget) -> str:
    """The whole text a widget such as a Static draws (after any markup parsing), unwrapped."""
    return str(widget.render())


def _plain(renderable: Any) -> str:
    import io

    from rich.console import Console
    from rich.text import Text

    if isinstance(renderable, Text):
        return renderable.plain
    console = Console(file=io.StringIO(), width=10_000, color_system=None)  # wide enough that nothing wraps
    with console.capture() as captured:
        console.print(renderable, end="")
    return captured.get()


def cells(table, row: int | str) -> list[str]:
    """The text of each cell of a DataTable row (an index, or a row key given as str), as the table
    draws it, whatever the column widths: the stored value through the formatter DataTable draws
    cells with (it parses a str as markup, so text the app forgot to keep literal shows up here)."""
    from textual.widgets._data_table import default_cell_formatter

    values = table.get_row(row) if isinstance(row, str) else table.get_row_at(row)
    return ["" if value is None else _plain(default_cell_formatter(value)) for value in values]


def labels(table) -> list[str]:
    """The column labels of a DataTable as it draws them (add_column parses a str label as markup)."""
    return [column.label.plain for column in table.ordered_columns]


def row_by_label(table, row: int | str) -> dict[str, str]:
    """One row's drawn cells by drawn column label."""
    return dict(zip(labels(table), cells(table, row)))


def screen_lines(app) -> list[str]:
    """The screen as the terminal would show it, one string per line (the compositor's own output)."""
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]


# A slow test analysis for the real worker host: one step per step_seconds, cancellable between steps.
SLOW = {"slow-steps": "tests.helpers.slow_analysis:SlowSteps"}
WAIT_S = 120  # a guard against hanging, not a timing assertion


async def until(condition, what: str) -> None:
    """Wait (yielding to the app) until condition() holds; fail after WAIT_S naming what was awaited."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


def real_worker_app(tmp_path, tiny_model, monkeypatch, db_name: str):
    """The Workbench over a fresh SerialStore with the REAL worker host (a spawned worker on the tiny
    model) that also knows the slow test analysis; returns (app, store)."""
    from analyses.core.registry import REGISTRY
    from app.run.worker import ModelChoice
    from app.run.worker_host import WorkerHost
    from app.tui.app import Workbench
    from app.tui.settings import Settings
    from app.tui.store_access import SerialStore

    monkeypatch.setitem(REGISTRY, "slow-steps", SLOW["slow-steps"])
    settings = Settings(tmp_path / db_name, model=tiny_model.location, device="cpu", dtype="float32")
    store = SerialStore(settings.db_path)

    def host(store, on_event, model):
        return WorkerHost(store, on_event, ModelChoice(tiny_model.location, "cpu", "float32"),
                          log_path=str(tmp_path / "worker.log"), extra_analyses=SLOW)

    return Workbench(store, settings, host_factory=host), store
