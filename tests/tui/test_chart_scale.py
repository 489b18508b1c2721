"""Charts that scale: a long prompt's heatmap scrolls and zooms on both axes with readable labels,
line charts read a point under a cursor, the heatmap cursor shows without colour, and a terminal
of 16 colours (or NO_COLOR) gets shades with a legend that says so."""
from __future__ import annotations

import pytest

from app import charts
from tests.helpers.fakes import TOKENS, seed_lens_run
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui
LONG = [f" w{i}" for i in range(526)]


async def open_lens(app, pilot):
    await settle(app, pilot)
    app.open_run(1)
    await settle(app, pilot)
    view = app.screen.query_one("#chart")
    view._ensure_drawn()
    return view


def tick_labels(view) -> list[str]:
    """The x tick labels as drawn: the line under the plot's bottom border."""
    lines = [line.plain for line in view._lines]
    border = max(i for i, line in enumerate(lines) if "└" in line)
    return lines[border + 1].split()


def shown_cols(view) -> set[int]:
    return {col for _, col in view._line_spans}


async def test_a_526_token_heatmap_scrolls_and_zooms_with_readable_labels(tui_store):
    seed_lens_run(tui_store, tokens=LONG, n_layers=30)
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        view = await open_lens(app, pilot)
        start, stop = view.col_window()
        assert 0 < stop - start < len(LONG) and stop == len(LONG)  # a window at the last position
        assert shown_cols(view) == set(range(start, stop))  # every column in it drawn, one character each
        labels = tick_labels(view)
        assert labels and all(label.strip("…") for label in labels)  # never a bare …
        assert all(len(label) >= 5 for label in labels)
        info = str(app.screen.query_one("#cell-info").render())
        assert f"cols {start}-{stop - 1} of {len(LONG)}" in info

        await pilot.press("plus", "plus", "plus")  # 1 -> 2 -> 3 -> 4 characters a column
        await pilot.pause()
        view._ensure_drawn()
        zoomed = view.col_window()
        assert view.x_zoom == 4 and zoomed[1] - zoomed[0] == view.canvas()[0] // 4
        assert view.cursor[1] in range(*zoomed)
        await pilot.press("plus", "plus")  # 8 characters: every column labelled with its whole token
        await pilot.pause()
        view._ensure_drawn()
        first, last = view.col_window()
        assert tick_labels(view) == [charts.label_token(token) for token in LONG[first:last]]

        await pilot.press("home")
        await pilot.pause()
        view._ensure_drawn()
        assert view.col_window()[0] == 0 and shown_cols(view) == set(range(*view.col_window()))
        before = view.col_window()
        await pilot.press("shift+right")
        await pilot.pause()
        view._ensure_drawn()
        assert view.col_window()[0] > before[0] and view.painted_cursor == view.cursor

        rows_before = view.visible_rows()
        await pilot.press("asterisk")  # two lines a row: fewer rows, the cursor's still on screen
        await pilot.pause()
        view._ensure_drawn()
        assert view.visible_rows() < rows_before
        lines_of_cursor = view._line_spans[view.cursor]
        assert len(lines_of_cursor) == 2
        await pilot.press("0")
        await pilot.pause()
        assert view.x_zoom is None and view.y_zoom is None


async def test_a_chart_title_shortens_instead_of_vanishing(tui_store):
    seed_lens_run(tui_store, tokens=LONG)
    app = make_app(tui_store)
    async with app.run_test(size=(60, 20)) as pilot:
        view = await open_lens(app, pilot)
        title = view._lines[0].plain.strip()
        assert title and title.startswith(view.data.chart.title[:20])
        assert len(title) <= view.size.width


async def test_line_chart_cursor_reads_each_curves_value_at_a_point(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_lens(app, pilot)
        await pilot.press("tab")
        await pilot.pause()
        view = app.screen.query_one("#chart")
        assert view.is_line
        info = str(app.screen.query_one("#cell-info").render())
        xs = view.data.line_xs()
        assert info.startswith(f"{view.data.chart.x} {xs[-1]} ({len(xs)}/{len(xs)})")
        drawn_last = view._cache.plain
        await pilot.press("left", "left")
        await pilot.pause()
        info = str(app.screen.query_one("#cell-info").render())
        x, values = view.data.points_at(len(xs) - 3)
        assert x == xs[-3] and values
        for name, value in values:
            stored = [y for px, y in zip(*view.data.series[name]) if px == x][0]
            assert value == stored and f"{name} {charts.format_cell(stored)}" in info
        assert view._cache.plain != drawn_last  # the cursor line moved with it


def cursor_text(view) -> str:
    spans = view._line_spans[view.cursor]
    line, at = next(iter(spans.items()))
    left, right = min(s for s, _ in at), max(e for _, e in at)
    return view.marked(line, at).plain[left:right]


async def test_without_colour_the_cells_are_shades_and_the_cursor_is_bracketed(seeded_store, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(seeded_store)
    async with app.run_test(size=(100, 30)) as pilot:
        view = await open_lens(app, pilot)
        assert view.shades
        marked = cursor_text(view)
        assert marked[0] == "[" and marked[-1] == "]"
        await pilot.press("left")
        await pilot.pause()
        assert view.painted_cursor == view.cursor and cursor_text(view).startswith("[")
        assert "shade: top_prob" in view._cache.plain


async def test_a_16_colour_terminal_gets_shades_that_match_the_legend(seeded_store, monkeypatch):
    import textual.constants

    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "standard")
    app = make_app(seeded_store)
    async with app.run_test(size=(100, 30)) as pilot:
        view = await open_lens(app, pilot)
        assert view.shades
        low, high = view.data.value_range()
        assert f"shade: top_prob {low:.3g} '{charts.SHADES}' {high:.3g}" in view._cache.plain
        levels = set()
        for (row, col), by_line in view._line_spans.items():
            expected = charts.shade(view.data.matrix[row][col], low, high)
            levels.add(expected)
            for line, spans in by_line.items():
                for start, end in spans:
                    assert set(view._lines[line].plain[start:end]) == {expected}
        assert len(levels) >= 3  # the seeded values span the scale
        assert len(TOKENS) == len(view.data.x_values)


def test_the_colour_scale_gets_lighter_all_the_way_up():
    lightness = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b in charts.COLORMAP]
    assert lightness == sorted(lightness) and len(set(lightness)) == len(lightness)
    steps = [charts.colour(v / 20, 0.0, 1.0) for v in range(21)]
    assert [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b in steps] == sorted(0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b in steps)
