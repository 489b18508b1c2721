"""The compare view through Pilot: mark a run in the history, F7 on another, read the drawn difference."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


def stored_difference(store, run_a: int, run_b: int) -> dict:
    rows = store.query(
        "SELECT a.layer, a.pos, b.top_prob - a.top_prob FROM logit_lens a JOIN logit_lens b USING (input_id, layer, pos) "
        "WHERE a.run_id = ? AND b.run_id = ?", [run_a, run_b],
    ).rows
    return {(layer, pos): value for layer, pos, value in rows}


async def test_mark_in_history_then_compare_with_the_run_under_the_cursor(tui_store):
    run_a = seed_lens_run(tui_store)
    run_b = seed_lens_run(tui_store, "The [bold]Louvre[/bold] is located in the city of")
    with tui_store.write() as conn:
        conn.execute("UPDATE logit_lens SET top_prob = top_prob / 2 + 0.01 * layer WHERE run_id = ?", [run_b])
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        history = app.screen
        assert history.selected_run() == run_b  # newest first
        await pilot.press("f7")
        await pilot.press("down")
        assert history.selected_run() == run_a
        await pilot.press("f7")
        await settle(app, pilot)
        assert app.screen.name == "compare"
        view = app.screen.query_one("#compare-chart")
        data = view.data
        assert data.chart.kind == "heatmap" and data.subtitle.startswith(f"run {run_a} - run {run_b}")
        expected = stored_difference(tui_store, run_b, run_a)
        drawn = {(y, x): data.matrix[i][j] for i, y in enumerate(data.y_values) for j, x in enumerate(data.x_values)}
        assert drawn.keys() == expected.keys()
        assert all(drawn[key] == pytest.approx(value) for key, value in expected.items())
        info = str(app.screen.query_one("#compare-info").render())
        # The prompt is shown as typed, not read as markup.
        assert "[bold]Louvre[/bold]" in info
        # The fields hold A (the run marked first), then B; the heading and the differences name the
        # runs in that order too, and the heatmap is B - A.
        fields = [app.screen.query_one(f"#compare-{side}").value for side in ("a", "b")]
        assert fields == [str(run_b), str(run_a)]
        assert info.startswith(f"compare run {run_b} vs run {run_a} (logit-lens)"), info
        assert info.index("Louvre") < info.index("Eiffel")
        await pilot.press("tab")
        assert view.data.chart.kind == "line" and set(view.data.series) == {f"run {run_b}", f"run {run_a}"}


async def test_runs_that_cannot_be_aligned_say_so_in_place(tui_store):
    done = seed_lens_run(tui_store)
    failed = seed_lens_run(tui_store, status="failed")
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f7")
        await settle(app, pilot)
        assert app.screen.name == "compare"
        await pilot.click("#compare-a")
        await pilot.press(*str(done), "tab", *str(failed), "enter")
        await settle(app, pilot)
        info = str(app.screen.query_one("#compare-info").render())
        assert f"run {failed} is failed, not done" in info
        assert app.screen.query_one("#compare-chart").data is None
        await pilot.press("backspace", *str(done), "enter")
        await settle(app, pilot)
        assert app.screen.query_one("#compare-chart").data is not None
