"""The whole path with the real worker and the embedded model: type, run the logit lens, see its chart."""
from __future__ import annotations

import time

import pytest

from app.run.worker import Failed, Finished, Started, Submitted
from tests.helpers.tui import settle

pytestmark = [pytest.mark.integration, pytest.mark.tui]
PROMPT = "The Eiffel Tower is located in the city of"


async def test_logit_lens_through_the_real_worker(tmp_path):
    from app.tui.app import Workbench
    from app.tui.settings import Settings
    from app.tui.store_access import SerialStore

    settings = Settings(tmp_path / "e2e.duckdb", model="smollm2-135m", device="cpu", dtype="float32", worker_log=tmp_path / "worker.log")
    store = SerialStore(settings.db_path)
    app = Workbench(store, settings)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#prompt").insert(PROMPT)
        await pilot.click("#param-target")
        await pilot.press(*" Paris")
        await pilot.press("ctrl+r")
        deadline = time.monotonic() + 300
        while not any(isinstance(e, (Finished, Failed)) for e in app.events_seen) and time.monotonic() < deadline:
            await pilot.pause(0.2)  # the real model runs in another process; poll its messages
        await settle(app, pilot)
        kinds = [type(e) for e in app.events_seen if hasattr(e, "job_id") and type(e).__name__ != "Log"]
        assert kinds[0] is Submitted and kinds[1] is Started and kinds[-1] is Finished, app.events_seen
        run_id = app.events_seen[-1].run_id
        assert app.screen.name == "results"
        view = app.screen.query_one("#chart")
        assert view.data is not None and len(view.data.matrix) == 31
        assert view.data.x_labels[-1] == " of"
        # The cursor starts on the last position of the final row: the model's own prediction.
        layer, token, value = view.data.cell(*view.cursor)
        top = store.query("SELECT top_token, top_prob FROM logit_lens WHERE run_id = ? AND layer = 30 ORDER BY pos DESC LIMIT 1", [run_id]).rows[0]
        assert (layer, token) == (30, " of") and value == pytest.approx(top[1])
        assert "Paris" in top[0]
        assert store.run_row(run_id)["status"] == "done"
        assert "smollm2-135m · cpu · float32 · 30 layers" in str(app.get_screen("probe").query_one("#status-line").render())
