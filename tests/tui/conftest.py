"""Pilot fixtures: the workbench on a fresh database with a fake worker host."""
from __future__ import annotations

import pytest

from tests.tui.fakes import FakeHost, seed_lens_run


@pytest.fixture
def tui_store(tmp_path):
    from app.tui.store_access import SerialStore

    return SerialStore(tmp_path / "tui.duckdb")


def make_app(store, hold: bool = False, page_rows: int = 100):
    from app.tui.app import Workbench
    from app.tui.settings import Settings

    settings = Settings(store.path, model="smollm2-135m", sql_page_rows=page_rows)
    return Workbench(store, settings, host_factory=lambda s, on_event, model: FakeHost(s, on_event, model, hold=hold))


@pytest.fixture
def seeded_store(tui_store):
    seed_lens_run(tui_store)
    return tui_store


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


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests on a fresh event loop (no asyncio plugin needed)."""
    import asyncio
    import inspect

    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True
