"""History and SQL console over a seeded database: filter, open, confirmed delete, paging, errors, refused writes."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


async def test_history_filters_opens_and_deletes_after_confirming(tui_store):
    seed_lens_run(tui_store, "The Eiffel Tower is located in the city of")
    seed_lens_run(tui_store, "The Colosseum is located in the city of")
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        table = app.screen.query_one("#runs")
        assert table.row_count == 2
        await pilot.press("slash", *"Colosseum")
        await settle(app, pilot)
        assert table.row_count == 1 and str(table.get_row_at(0)[0]) == "2"
        await pilot.press("enter")  # the first Enter in the filter opens the match
        await settle(app, pilot)
        assert app.screen.name == "results" and app.screen.run_id == 2
        await pilot.press("f4")
        await settle(app, pilot)
        await pilot.press("d")  # no letter deletes: only Delete, as the status line says
        await pilot.pause()
        assert app.screen.name == "history" and "Delete removes it" in str(app.screen.query_one("#run-detail").render())
        await pilot.press("delete")
        await pilot.pause()
        await pilot.press("n")
        await settle(app, pilot)
        assert tui_store.run_row(2) is not None
        await pilot.press("delete")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        assert tui_store.run_row(2) is None
        assert tui_store.query("SELECT count(*) FROM logit_lens WHERE run_id = 2").rows[0][0] == 0
        assert tui_store.run_row(1) is not None


async def run_sql(app, pilot, sql: str) -> str:
    editor = app.screen.query_one("#sql-editor")
    editor.text = sql
    await pilot.press("ctrl+r")
    await settle(app, pilot)
    return str(app.screen.query_one("#sql-status").render())


async def test_sql_pages_errors_and_refused_writes(seeded_store):
    app = make_app(seeded_store, page_rows=25)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        await settle(app, pilot)
        status = await run_sql(app, pilot, "select * from logit_lens order by layer, pos")
        table = app.screen.query_one("#sql-results")
        assert "rows 1-25" in status and table.row_count == 25
        await pilot.press("ctrl+n")
        await settle(app, pilot)
        assert app.screen.page.page == 1 and str(table.get_row_at(0)[3]) == "1"
        await pilot.press("ctrl+n", "ctrl+n")
        await settle(app, pilot)
        assert table.row_count == 60 - 50 and not app.screen.page.has_more
        status = await run_sql(app, pilot, "select nonsense from logit_lens")
        assert "Binder Error" in status and "nonsense" in status
        assert app.screen.query_one("#sql-status").has_class("error")
        before = seeded_store.query("SELECT count(*) FROM runs").rows[0][0]
        for write in ("delete from runs", "drop table logit_lens", "insert into runs select * from runs", "update runs set status = 'x'"):
            status = await run_sql(app, pilot, write)
            assert "read-only" in status and "nothing was changed" in status
        assert seeded_store.query("SELECT count(*) FROM runs").rows[0][0] == before
        assert seeded_store.query("SELECT count(*) FROM logit_lens").rows[0][0] == 60


async def test_sql_chart_this_draws_a_numeric_column(seeded_store):
    from app.tui.widgets.chart_picker import ChartChoice

    app = make_app(seeded_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        await settle(app, pilot)
        await run_sql(app, pilot, "select layer, pos, entropy_bits from logit_lens where pos in (0, 11)")
        screen = app.screen
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert type(app.screen).__name__ == "ChartPickerModal"
        app.screen.dismiss(ChartChoice("entropy_bits", "layer", "pos"))
        await settle(app, pilot)
        view = screen.query_one("#sql-chart")
        assert view.display and set(view.data.series) == {"pos=0", "pos=11"}
        xs, ys = view.data.series["pos=11"]
        assert xs == [0, 1, 2, 3, 4] and ys == pytest.approx([10.0 - 2.0 * layer + 1.1 for layer in range(5)])
