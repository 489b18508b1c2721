"""The SQL console's editor has the prompt editor's keys: ctrl+a selects the whole statement (then
delete or typing replaces it), ctrl+l clears it; so a new query is never typed in front of the old one."""
from __future__ import annotations

import pytest

from tests.helpers.tui import make_app, settle, shown

pytestmark = pytest.mark.tui


async def test_ctrl_a_selects_the_whole_statement_and_ctrl_l_clears_it(store):
    store.begin_run("logit-lens", "m", {}, "cpu", "float32", {})
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        await pilot.pause()
        editor = app.screen.query_one("#sql-editor")
        assert app.focused is editor
        editor.load_text("select nosuchcolumn\nfrom runs order by run_id")
        editor.move_cursor((1, 10))
        await pilot.press("ctrl+a")
        assert editor.selected_text == editor.text
        await pilot.press(*"select 1")  # typing replaces the whole statement
        assert editor.text == "select 1"
        await pilot.press("ctrl+a", "delete")
        assert editor.text == ""
        editor.load_text("select run_id\nfrom runs")
        await pilot.press("ctrl+l")
        assert editor.text == "" and app.focused is editor
        await pilot.press("ctrl+z")  # the clear is undone
        assert editor.text == "select run_id\nfrom runs"
        assert "^l" in shown(app.screen.query_one("KeyBar"))
        await pilot.press("f1")
        await pilot.pause()
        assert "ctrl+a selects the whole statement" in " ".join(shown(w) for w in app.screen.query("Static"))
