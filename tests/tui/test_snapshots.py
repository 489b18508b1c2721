"""SVG snapshots of every screen at 60x20, 80x24 and 160x48 (fake worker, fixed data and times, no
blink), and, on the same screens, what must be on them as rendered text: the header title, the
chart title, the Run button, the readout, the key bar; nothing vanished or pushed off."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, no_blink, screen_lines, settle

pytestmark = pytest.mark.tui
SIZES = [(60, 20), (80, 24), (160, 48)]
KEYS = ("f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "^q")  # on every screen's key bar at every size
PROMPT = "The Eiffel Tower is located in the city of"
# Text each screen must show whole at every size (a line of the rendered screen contains it).
MUST_SHOW = {
    "probe": ["Run ^r", "Cancel ^k", PROMPT[:30], "analysis logit-lens", "2 parameters"],
    "results": ["Top-token probability (layer x token)", "run 1 · logit-lens", "layer 4 · pos 11", "colour: top_prob"],
    "history": ["time (UTC)", "logit-lens", "run 1: enter opens it"],
    "sql": ["rows 1-5 · 4 columns", "top_token"],
    "corpus": ["documents 1-100", "Codec for the Punicode", "all sets"],
    "compare": ["compare run 1 vs run 2", "Top-token probability (layer x token)", "chart 1/", "colour: top_prob (B - A)", "layer 4 · pos 11"],
}


def check_shown(app, screen: str) -> None:
    lines = screen_lines(app)
    assert "iwb — interpretability workbench" in lines[0]  # the header title never goes
    keys = lines[-1].split()
    assert all(key in keys for key in KEYS), f"the key bar lost a key: {lines[-1]!r}"  # it shortens words, never drops keys
    for text in MUST_SHOW[screen]:
        assert any(text in line for line in lines), f"{screen} at {app.size.width}x{app.size.height} does not show {text!r}:\n" + "\n".join(lines)


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
        elif screen == "compare":
            await pilot.press("f7")
            await settle(app, pilot)
            app.screen.compare(1, 2)
        await settle(app, pilot)
        no_blink(app)
        await pilot.pause()
        check_shown(app, screen)

    return before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", ["probe", "results", "history", "sql", "corpus", "compare"])
def test_screen_snapshot(snap_compare, tmp_path, screen, size):
    from app.tui.store_access import SerialStore

    store = SerialStore(tmp_path / "snap.duckdb")
    seed_lens_run(store)
    if screen == "compare":
        seed_lens_run(store, prompt="The Eiffel Tower is in")
    assert snap_compare(make_app(store), terminal_size=size, run_before=steps(screen))
