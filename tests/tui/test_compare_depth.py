"""The compare view's `d`: runs of models of different depth aligned by relative depth."""
from __future__ import annotations

import pytest

from tests.test_compare_depth import two_depths

pytestmark = pytest.mark.tui


async def test_d_in_the_compare_view_aligns_by_relative_depth(tmp_path):
    from app.tui.store_access import SerialStore
    from tests.helpers.tui import make_app, settle

    store = SerialStore(tmp_path / "depth.duckdb")
    run_a, run_b = two_depths(store)
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f7")
        await settle(app, pilot)
        app.screen.compare(run_a, run_b)
        await settle(app, pilot)
        info = str(app.screen.query_one("#compare-info").render())
        assert "different layer counts" in info and app.screen.comparison is None
        app.screen.query_one("#compare-chart").focus()
        await pilot.press("d")
        await settle(app, pilot)
        comparison = app.screen.comparison
        assert comparison is not None and comparison.relative_depth
        assert "by relative depth" in str(app.screen.query_one("#compare-info").render())
        assert app.screen.query_one("#compare-chart").data.y_values == [0.0, 0.25, 0.5, 0.75, 1.0]
