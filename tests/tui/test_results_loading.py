"""Results never shows the previous run's chart under the next run's header: opening a run shows a
loading state at once, and the run's own charts replace it when they are read."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, settle, shown

pytestmark = pytest.mark.tui


async def test_opening_a_run_shows_loading_until_its_charts_are_read(store):
    first = seed_lens_run(store, "Alpha apples are")
    second = seed_lens_run(store, "Bravo bananas are")
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(first)
        await settle(app, pilot)
        results = app.screen
        view = results.query_one("#chart")
        assert view.data is not None and f"run {first} ·" in shown(results.query_one("#run-info"))
        first_chart = view.data

        app.open_run(second)  # the read runs on a thread: what shows until it answers
        assert shown(results.query_one("#run-info")).startswith(f"run {second} · loading")
        assert view.data is None and view.loading and not results.query_one("#chart-tabs").display

        await settle(app, pilot)
        assert f"run {second} ·" in shown(results.query_one("#run-info"))
        assert view.data is not None and view.data is not first_chart and not view.loading
        assert results.query_one("#chart-tabs").display
