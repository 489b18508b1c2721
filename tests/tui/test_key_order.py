"""Keys that arrive together (one read from the terminal) are routed in order, each after what the one
before it set off: app.tui.keys. The keys go in through the app's driver all at once, as the
terminal driver delivers a burst; the real-terminal version is tests/test_pty_keys.py."""
from __future__ import annotations

import pytest
from textual import events

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


def burst(app, *keys: tuple[str, str | None]) -> None:
    """Every key handed to the app before any of them is handled."""
    for key, character in keys:
        event = events.Key(key, character)
        event.set_sender(app)
        app._driver.send_message(event)


async def drain(app, pilot) -> None:
    for _ in range(4):
        await settle(app, pilot)
        await pilot.pause(0.05)


async def test_digit_tab_digit_fills_two_fields(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = app.screen
        probe.select_analysis("truncation")
        await drain(app, pilot)
        form = probe.query_one("#params")
        form.field("k_max").focus()
        await pilot.pause()
        burst(app, ("5", "5"), ("tab", "\t"), ("3", "3"))
        await drain(app, pilot)
        assert form.field("k_max").value == "5"
        assert form.field("min_context").value == "3"
        assert app.focused is form.field("min_context")


async def test_history_filter_then_down_enter_opens_the_match(store):
    for prompt in ("Alpha apples", "Bravo bananas", "Charlie cherries"):
        seed_lens_run(store, prompt)
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await drain(app, pilot)
        history = app.screen
        assert history.query_one("#runs").row_count == 3
        await pilot.press("slash")
        burst(app, *[(c.lower() if c.isalpha() else c, c) for c in "Bravo"], ("down", None), ("enter", "\r"))
        await drain(app, pilot)
        assert app.screen.name == "results"
        assert app.screen.run_id == 2
