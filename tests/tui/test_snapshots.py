"""SVG snapshots of every screen at 80x24 and 160x48 (fake worker, fixed data and times, no blink)."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, no_blink, settle

pytestmark = pytest.mark.tui
SIZES = [(80, 24), (160, 48)]
PROMPT = "The Eiffel Tower is located in the city of"


def steps(screen: str):
    async def before(pilot) -> None:
        app = pilot.app
        await settle(app, pilot)
        if screen == "probe":
            app.screen.query_one("#prompt").insert(PROMPT)
        elif screen == "results":
            app.open_run(1)
        elif screen == "history":
            await pilot.press("f4")
        elif screen == "sql":
            await pilot.press("f5")
            await settle(app, pilot)
            app.screen.query_one("#sql-editor").text = "select layer, pos, top_token, top_prob from logit_lens where pos = 11 order by layer"
            await pilot.press("ctrl+r")
        elif screen == "corpus":
            await pilot.press("f6")
            await settle(app, pilot)
            app.screen.query_one("#documents").focus()
            await pilot.press("enter")
        await settle(app, pilot)
        no_blink(app)
        await pilot.pause()

    return before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", ["probe", "results", "history", "sql", "corpus"])
def test_screen_snapshot(snap_compare, tmp_path, screen, size):
    from app.tui.store_access import SerialStore

    store = SerialStore(tmp_path / "snap.duckdb")
    seed_lens_run(store)
    assert snap_compare(make_app(store), terminal_size=size, run_before=steps(screen))
