"""fact-lookup in the faces without a model: the probe screen submits the shipped entity table,
and the CLI refuses a bad table with one line and exit 2 before loading anything."""
from __future__ import annotations

import pytest

from analyses.inputs.entities import load_entities
from tests.helpers.tui import make_app, settle


@pytest.mark.tui
def test_probe_screen_submits_the_shipped_entity_table(tmp_path):
    import asyncio

    from app.tui.store_access import SerialStore

    asyncio.run(_submit_entities(SerialStore(tmp_path / "tui.duckdb")))


async def _submit_entities(tui_store) -> None:
    from textual.widgets import Input, Select

    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#analysis", Select).value = "fact-lookup"
        await settle(app, pilot)
        assert app.screen.query_one("#source", Select).value == "entities"
        assert app.screen.query_one("#source-path", Input).display
        assert not app.screen.query_one("#prompt").display
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        analysis, inputs, _ = app.host.jobs[0]
        assert analysis == "fact-lookup"
        assert [item.meta["entity"] for item in inputs] == [e.name for e in load_entities(None)]
        assert {item.source for item in inputs} == {"entities"}


def test_cli_refuses_a_bad_entity_table(tmp_path, capsys):
    from app.cli.commands import main

    table = tmp_path / "bad.csv"
    table.write_text("entity,attribute\nA B,x\nC D,x\n", encoding="utf-8")
    assert main(["run", "fact-lookup", "--entities", str(table), "--db", str(tmp_path / "r.duckdb")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("iwb: ") and "at least 2" in error and "\n" not in error
    assert main(["run", "fact-lookup", "--entities", str(table), "--prompt", "x", "--db", str(tmp_path / "r.duckdb")]) == 2
    assert not (tmp_path / "r.duckdb").exists()
