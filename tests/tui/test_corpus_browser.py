"""The corpus browser: a page of the shipped sample, read a document, send it to the probe."""
from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static, TextArea

from analyses.inputs.corpus import list_documents, read_document
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


async def test_browse_read_and_send_a_document_to_the_probe(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f6")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("#documents", DataTable)
        expected = list_documents(None, 0, 100)
        assert table.row_count == len(expected.entries) == 100 and expected.has_more
        assert "ctrl+n next page" in str(app.screen.query_one("#corpus-info", Static).render())
        table.focus()
        await pilot.press("down", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        second = expected.entries[1]
        assert app.screen.query_one("#document", TextArea).text == read_document(None, second.index).text
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.screen.name == "probe"
        assert app.screen.query_one("#prompt", TextArea).text == read_document(None, second.index).text


async def test_a_bad_corpus_is_reported_in_place(tui_store, tmp_path):
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f6")
        await app.workers.wait_for_complete()
        source = app.screen.query_one("#corpus-source")
        source.value = str(tmp_path / "missing.jsonl")
        source.focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "missing.jsonl" in str(app.screen.query_one("#corpus-info", Static).render())
        assert app.screen.query_one("#documents", DataTable).row_count == 0
