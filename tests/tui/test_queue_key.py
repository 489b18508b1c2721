"""While a job runs, ctrl+r queues the next: the key bar names it as the Run button does (Queue),
and Run again once the job has ended."""
from __future__ import annotations

import pytest

from tests.helpers.tui import make_app, settle, shown

pytestmark = pytest.mark.tui


async def test_the_key_bar_says_queue_while_a_job_runs(tui_store):
    app = make_app(tui_store, hold=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = app.screen
        bar = probe.query_one("KeyBar")
        assert "^r Run" in shown(bar) and "Queue" not in shown(bar)
        probe.query_one("#prompt").insert("The cat sat")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert str(probe.query_one("#run").label) == "Queue ^r"
        assert "^r Queue" in shown(bar) and "^r Run" not in shown(bar), shown(bar)
        await pilot.press("ctrl+r")  # the key still works: it queues a second job
        await settle(app, pilot)
        assert len(app.host.jobs) == 2
        app.host.release()
        await settle(app, pilot)
        assert str(probe.query_one("#run").label) == "Run ^r"
        assert "^r Run" in shown(bar) and "Queue" not in shown(bar), shown(bar)
