"""Issue 19, items 2 and 5: F6 never focuses the empty document reader, and a document sent to the
probe with ctrl+o replaces what the prompt held (leftover text once became part of the next run:
4,513 characters instead of the 2,000 sent)."""
from __future__ import annotations

import pytest
from textual.widgets import DataTable, TextArea

from analyses.inputs.corpus import read_document
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


async def test_f6_focuses_a_shown_widget_and_not_the_empty_reader(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f6")
        await settle(app, pilot)
        assert app.screen.name == "corpus"
        focused = app.focused
        assert focused is not None and focused.display and focused.region.area > 0, focused
        assert focused.id != "document" and app.screen.query_one("#document", TextArea).text == ""


async def test_a_document_sent_with_ctrl_o_replaces_the_prompts_leftover_text(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        prompt = app.screen.query_one("#prompt", TextArea)
        prompt.focus()
        await pilot.press(*"leftover", "enter", *"lines")
        assert prompt.text == "leftover\nlines"
        await pilot.press("f6")
        await settle(app, pilot)
        app.screen.query_one("#documents", DataTable).focus()
        await pilot.press("enter")
        await settle(app, pilot)
        document = read_document(None, 0).text
        assert app.screen.query_one("#document", TextArea).text == document
        await pilot.press("ctrl+o")
        await settle(app, pilot)
        assert app.screen.name == "probe"
        assert app.screen.query_one("#prompt", TextArea).text == document  # exactly the document: nothing left over


def background(widget) -> tuple:
    return widget.styles.background.rgb


async def test_every_compact_field_shows_its_focus(tui_store):
    """Compact inputs and selects have no border to light up: focused, their background changes."""
    from textual.widgets import Input, Select
    from textual.widgets._select import SelectCurrent

    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        checked = []
        for key in ("f2", "f4", "f6", "f7"):
            await pilot.press(key)
            await settle(app, pilot)
            fields = [widget for widget in app.screen.query(Input) if widget.compact]
            fields += [widget for widget in app.screen.query(Select) if widget.compact]
            for field in fields:
                if not (field.display and field.parent.display):
                    continue  # a field hidden for this input kind (the probe's file path) takes no focus
                painted = field.query_one(SelectCurrent) if isinstance(field, Select) else field
                field.focus()
                await pilot.pause()
                assert app.focused is field
                focused = background(painted)
                app.screen.focus_next()
                await pilot.pause()
                assert app.focused is not field
                assert background(painted) != focused, (app.screen.name, field.id)
                checked.append(field.id)
        # the corpus source (where F6 puts the keys), History's filter, Compare's run ids, the probe's fields
        assert {"corpus-source", "corpus-set", "history-filter", "compare-a", "compare-b", "model", "analysis", "source"} <= set(checked), checked
