"""The corpus browser offers the source's set names (pile_set_name) as choices, with their
document counts as the corpus reader counts them; choosing one pages through that set only."""
from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Select

from analyses.inputs.corpus import set_names
from app.tui.screens.corpus import SET_SCAN
from tests.helpers.tui import cells, make_app, settle

pytestmark = pytest.mark.tui


def options(select: Select) -> list[tuple[str, str]]:
    return [(str(label), value) for label, value in select._options if value is not Select.NULL]


async def open_corpus(app, pilot):
    await settle(app, pilot)
    await pilot.press("f6")
    await settle(app, pilot)
    return app.screen


async def test_the_shipped_samples_sets_are_offered_with_their_counts(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_corpus(app, pilot)
        counts = set_names(None, scan_limit=SET_SCAN)
        expected = sorted(((name, count) for name, count in counts.items() if name), key=lambda item: (-item[1], item[0]))
        assert len(expected) > 1
        assert options(screen.query_one("#corpus-set", Select)) == [(f"{name} ({count})", name) for name, count in expected]


async def test_choosing_a_set_of_a_file_pages_through_that_set_only(tui_store, tmp_path):
    corpus = tmp_path / "mixed.jsonl"
    rows = [("Github", 3), ("PubMed", 2)]
    with corpus.open("w") as out:
        for index in range(5):
            name = "Github" if index % 2 == 0 else "PubMed"
            out.write(json.dumps({"text": f"document {index} of {name}", "meta": {"pile_set_name": name}}) + "\n")
        out.write(json.dumps({"text": "no set at all"}) + "\n")
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_corpus(app, pilot)
        source = screen.query_one("#corpus-source")
        source.value = str(corpus)
        source.focus()
        await pilot.press("enter")
        await settle(app, pilot)
        select = screen.query_one("#corpus-set", Select)
        assert options(select) == [(f"{name} ({count})", name) for name, count in rows]
        table = screen.query_one("#documents", DataTable)
        assert table.row_count == 6  # all sets until one is chosen
        select.value = "PubMed"
        await settle(app, pilot)
        assert table.row_count == 2
        assert {cells(table, row)[1] for row in range(table.row_count)} == {"PubMed"}
