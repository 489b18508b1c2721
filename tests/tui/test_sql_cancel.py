"""A SQL query in flight shows that it runs and can be cancelled (DuckDB's interrupt); the console
and the store go on working after it."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.helpers.tui import make_app, settle, shown

pytestmark = pytest.mark.tui
SLOW_SQL = "SELECT sum(a.range * b.range) AS s FROM range(200000) a, range(200000) b"  # 4e10 rows: minutes
WAIT_S = 60  # a guard against hanging, not a timing assertion


def test_a_query_stopped_from_another_thread(store):
    from store.reading import QueryStop, QueryStopped

    store.begin_run("logit-lens", "m", {}, "cpu", "float32", {})  # the file exists
    stop = QueryStop()
    threading.Timer(0.3, stop.stop).start()
    with pytest.raises(QueryStopped, match="cancelled"):
        store.query(SLOW_SQL, stop=stop)
    assert store.query("SELECT count(*) FROM runs").rows == [(1,)]


async def test_the_console_shows_a_running_query_and_cancels_it(store):
    store.begin_run("logit-lens", "m", {}, "cpu", "float32", {})
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        await pilot.pause()
        app.screen.use_sql(SLOW_SQL)
        await pilot.pause()
        status = app.screen.query_one("#sql-status")
        assert "running the query" in shown(status) and "ctrl+k" in shown(status)
        await pilot.press("ctrl+k")
        deadline = time.monotonic() + WAIT_S
        while "query cancelled" not in shown(status):
            assert time.monotonic() < deadline, shown(status)
            await asyncio.sleep(0.05)
        assert app.screen.stop is None
        app.screen.use_sql("SELECT count(*) AS n FROM runs")
        deadline = time.monotonic() + WAIT_S
        while "rows 1-1" not in shown(status):
            assert time.monotonic() < deadline, shown(status)
            await asyncio.sleep(0.05)
