"""History reads the runs' statuses again by itself while it is shown, and the cursor stays on its run."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import cells, make_app, settle

pytestmark = pytest.mark.tui


async def test_statuses_refresh_by_themselves_and_the_cursor_stays(store, monkeypatch):
    from app.tui.screens import history

    monkeypatch.setattr(history, "REFRESH_S", 0.2)
    seed_lens_run(store, "Alpha apples")
    running = store.begin_run("logit-lens", "fake-model", {}, "cpu", "float32", {"fake": True})  # still running
    seed_lens_run(store, "Charlie cherries")
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        table = app.screen.query_one("#runs")
        await pilot.press("down")  # newest first: run 3, run 2 (running), run 1
        await settle(app, pilot)
        assert app.screen.selected_run() == running
        assert cells(table, str(running))[3] == "running"
        store.end_run(running, "cancelled", "cancelled by the user")  # as the worker would
        deadline = time.monotonic() + 30  # a guard against hanging, not a timing assertion
        while cells(table, str(running))[3] != "cancelled":
            assert time.monotonic() < deadline, "the status was not read again"
            await asyncio.sleep(0.05)
        assert app.screen.selected_run() == running and table.cursor_row == 1
