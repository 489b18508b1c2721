"""Context help: F1 (anywhere) or ? (outside a text field) opens the shown screen's own help, written
for a researcher (what the screen is for, what its numbers mean) with the keys that work there;
ctrl+c outside a text field says how to quit in plain words."""
from __future__ import annotations

import pytest

from app.tui.help import HELP
from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, settle, shown

pytestmark = pytest.mark.tui
SCREENS = {"probe": "f2", "results": "f3", "history": "f4", "sql": "f5", "corpus": "f6", "jobs": "f8"}


async def test_f1_opens_each_screens_own_help_with_its_keys(store):
    from app.tui.help import HelpScreen

    seed_lens_run(store)
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for name, key in SCREENS.items():
            await pilot.press(key)
            await settle(app, pilot)
            await pilot.press("f1")
            await settle(app, pilot)
            assert isinstance(app.screen, HelpScreen), name
            text = shown(app.screen.query_one("#help-text"))
            assert text.startswith(HELP[name][0]) and "The numbers" in text and "Keys here" in text, name
            assert "ctrl+q" in text and "f1" in text.lower()
            if name == "history":
                assert "Delete the selected run" in text and "secs" in text and "wall" in text
            if name == "sql":
                assert "Stop the query" in text
            await pilot.press("escape")
            await settle(app, pilot)
            assert app.screen.name == name
        assert not app.screen.query("HelpPanel")  # not Textual's generic key list


async def test_question_mark_is_help_outside_text_fields_and_a_character_inside(store):
    from app.tui.help import HelpScreen

    seed_lens_run(store)
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        await pilot.press("question_mark")
        await settle(app, pilot)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        await settle(app, pilot)
        assert app.screen.name == "history"
        await pilot.press("slash", "question_mark")
        await settle(app, pilot)
        assert app.screen.name == "history" and app.screen.query_one("#history-filter").value == "?"


async def test_ctrl_c_outside_a_text_field_says_how_to_quit_in_plain_words(store):
    seed_lens_run(store)
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        await pilot.press("ctrl+c")
        await settle(app, pilot)
        messages = [notification.message for notification in app._notifications]
        assert any("Press ctrl+q to quit" in message for message in messages), messages
        assert not any("[b]" in message for message in messages)
