"""A real generate run (tiny model, real store) reopened in the workbench at 80x24: the lens
heatmap over the generated tokens, its cursor stepping through the steps with the exact stored
value, and the per-step curves and table behind it."""
from __future__ import annotations

import pytest

from analyses.core.contract import Input, no_progress
from app.run.session import Session
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


async def test_a_generate_run_reopens_with_a_step_cursor(tui_store, tiny_model):
    prepared = Session.prepare("generate", (Input(0, "prompt", "I think that you are"),), {"max_new_tokens": "5", "steer": " Love| Hate", "steer_layer": "1"})
    from store import Store

    run_id = Session(Store(tui_store.path)).run(tiny_model, prepared, no_progress)
    steps = tui_store.query("SELECT pos, token FROM generation_steps WHERE run_id = ? ORDER BY step", [run_id]).rows
    assert len(steps) == 5
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        view = app.screen.query_one("#chart")
        assert view.data.chart.title.startswith("Lens: the chosen token's probability")
        assert view.data.x_values[-5:] == [pos for pos, _ in steps]
        row, col = view.cursor
        await pilot.press("left", "left")
        await pilot.pause()
        assert view.cursor == (row, col - 2)
        layer, _, value = view.data.cell(*view.cursor)
        pos = view.data.x_values[col - 2]
        stored = tui_store.query("SELECT chosen_prob FROM generation_lens WHERE run_id = ? AND layer = ? AND pos = ?", [run_id, layer, pos]).rows[0][0]
        assert value == pytest.approx(stored)
        await pilot.press("tab")
        await pilot.pause()
        assert app.screen.query_one("#chart").data.chart.title == "Probability of each generated token"
