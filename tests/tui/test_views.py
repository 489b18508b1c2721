"""What a researcher reads off the results view: the top token under the cursor, tokens in the cells,
a log colour scale, every layer reachable at 80x24, and the chart's SQL sent to the console."""
from __future__ import annotations

import math

import pytest

from app import charts
from tests.helpers.fakes import TOKENS, seed_lens_run
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


def lens_row(store, run_id: int, layer: int, pos: int) -> dict:
    result = store.query("SELECT * FROM logit_lens WHERE run_id = ? AND layer = ? AND pos = ?", [run_id, layer, pos])
    return dict(zip(result.columns, result.rows[0]))


def painted_colour(view, cell: tuple[int, int]) -> tuple[int, int, int]:
    """The foreground colour the widget paints the cell's first character with."""
    line, spans = next(iter(view._line_spans[cell].items()))
    offset = 0
    for segment in view._strips[line]:
        if offset <= spans[0][0] < offset + len(segment.text):
            return segment.style.color.triplet
        offset += len(segment.text)
    raise AssertionError(f"cell {cell} not painted")


async def open_lens(app, pilot, run_id: int = 1):
    await settle(app, pilot)
    app.open_run(run_id)
    await settle(app, pilot)
    return app.screen.query_one("#chart")


async def test_cursor_line_shows_the_top_token_its_probability_the_target_and_the_entropy(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(160, 40)) as pilot:
        view = await open_lens(app, pilot)
        await pilot.press("down", "left", "left")
        await pilot.pause()
        layer, _, _ = view.data.cell(*view.cursor)
        pos = view.data.x_values[view.cursor[1]]
        row = lens_row(seeded_store, 1, layer, pos)
        info = str(app.screen.query_one("#cell-info").render())
        assert f"top_token {charts.label_token(row['top_token'], 16)}" in info
        assert f"top_prob = {row['top_prob']:.6g}" in info and f"target_prob {row['target_prob']:.6g}" in info
        assert f"entropy_bits {row['entropy_bits']:.6g}" in info


async def test_tokens_mode_prints_each_cells_top_token_in_the_cell(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(160, 40)) as pilot:
        view = await open_lens(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        assert view.tokens and view.tokens_shown == len(view.data.matrix) * len(TOKENS)
        for (row, col), by_line in view._line_spans.items():
            line = sorted(by_line)[len(by_line) // 2]
            left = min(start for start, _ in by_line[line])
            right = max(end for _, end in by_line[line])
            top = lens_row(seeded_store, 1, view.data.y_values[row], view.data.x_values[col])["top_token"]
            assert view._lines[line].plain[left:right].strip() == charts.label_token(top, right - left).strip()
        await pilot.press("t")
        await pilot.pause()
        view._ensure_drawn()
        assert not view.tokens
        for by_line in view._line_spans.values():
            for line, spans in by_line.items():
                assert all(set(view._lines[line].plain[start:end]) == {"█"} for start, end in spans)


async def test_log_scale_colours_cells_by_log10_of_the_value(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(160, 40)) as pilot:
        view = await open_lens(app, pilot)
        values = [v for row in view.data.matrix for v in row]
        low, high = math.log10(min(values)), math.log10(max(values))
        await pilot.press("l")
        await pilot.pause()
        view._ensure_drawn()
        differs = 0
        for row in range(len(view.data.matrix)):
            for col in range(len(TOKENS)):
                value = view.data.matrix[row][col]
                expected = charts.colour(math.log10(value), low, high)
                assert painted_colour(view, (row, col)) == pytest.approx(expected, abs=1)
                differs += charts.colour(value, 0.0, 1.0) != expected
        assert differs > 0
        assert "log10 top_prob" in view._cache.plain
        await pilot.press("tab")  # a probability curve: drawn as log10 of its values
        await pilot.pause()
        line_view = app.screen.query_one("#chart")
        assert line_view.log_scale and "log10" in line_view._cache.plain


async def test_every_layer_is_visible_and_reachable_at_80x24(tui_store):
    seed_lens_run(tui_store, n_layers=30)
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        view = await open_lens(app, pilot)
        rows = len(view.data.matrix)
        assert rows == 31 and view.visible_rows() < rows  # the premise: fewer chart lines than layers
        seen_rows: set[int] = set()
        for step in range(rows):
            if step:
                await pilot.press("down")
            await pilot.pause()
            view._ensure_drawn()
            row = view.cursor[0]
            assert row == rows - 1 - step
            shown = {cell[0] for cell in view._line_spans}
            lines_of_row = {line for cell, by_line in view._line_spans.items() if cell[0] == row for line in by_line}
            assert row in shown and len(lines_of_row) == 1, f"layer {row} is not on exactly one line"
            assert len(shown) == view.visible_rows()
            seen_rows |= shown
            assert view.painted_cursor == view.cursor
        assert seen_rows == set(range(rows))
        assert "rows 0-" in str(app.screen.query_one("#cell-info").render())


async def test_s_sends_the_charts_sql_to_the_console_and_runs_it(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_lens(app, pilot)
        data = view.data
        await pilot.press("s")
        await settle(app, pilot)
        assert app.screen.name == "sql"
        assert app.screen.query_one("#sql-editor").text == data.sql
        grid = app.screen.query_one("#sql-results")
        assert grid.row_count == len(data.matrix) * len(data.matrix[0])
        expected = seeded_store.query("SELECT layer, pos, top_prob FROM logit_lens WHERE run_id = 1 ORDER BY layer, pos").rows
        shown = [tuple(str(cell) for cell in grid.get_row_at(i)) for i in range(grid.row_count)]
        assert shown == [(str(layer), str(pos), charts.format_cell(value)) for layer, pos, value in expected]


async def test_key_bar_lists_the_screens_keys_and_a_click_presses_one(seeded_store):
    from app.tui.widgets.key_bar import KeyBar

    app = make_app(seeded_store)
    async with app.run_test(size=(160, 40)) as pilot:
        await open_lens(app, pilot)
        bar = app.screen.query_one(KeyBar)
        shown = str(bar.render())
        for description in ("Log scale", "Tokens", "Next chart", "Next input", "SQL", "Quit"):
            assert description in shown
        start, _, _ = next(r for r in bar.key_ranges if r[2] == "s")
        await pilot.click(KeyBar, offset=(start + 1, 0))
        await settle(app, pilot)
        assert app.screen.name == "sql"
        assert "Run SQL" in str(app.screen.query_one(KeyBar).render())
