"""Every table in the TUI re-renders its rows once it has measured its columns. Textual measures
new rows on the table's next Idle event and caches rendered rows under a key without the column
widths, so a row rendered in between (on a loaded machine a refresh falls there) stayed cut at the
header's width: the SQL console showed "<|endofte" for "<|endoftext|>" (a snapshot failure in CI)."""
from __future__ import annotations

from tests.helpers.tui import make_app, screen_lines, settle


async def test_rows_rendered_before_the_columns_are_measured_show_whole_after(seeded_store):
    from app.tui.widgets.table import Table

    app = make_app(seeded_store)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(app, pilot)
        await pilot.press("f5")
        await settle(app, pilot)
        table = app.screen.query_one("#sql-results", Table)
        table.clear(columns=True)
        table.add_columns("layer", "top_token")
        table.add_rows([[str(layer), "<|endoftext|>"] for layer in range(5)])
        # A render before the table's Idle event: the columns are still the headers' widths.
        table.refresh()
        early = "\n".join(screen_lines(app))
        assert "<|endofte" in early and "<|endoftext|>" not in early
        await settle(app, pilot)
        assert "<|endoftext|>" in "\n".join(screen_lines(app))
