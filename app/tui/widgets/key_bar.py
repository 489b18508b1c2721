"""The footer: the focused chain's shown bindings as one line of text.

Textual's Footer mounts a widget per key and recomposes on every screen switch and focus change;
with ~10 keys that was most of a screen switch's time on 2 cores. One Static, redrawn only when
the keys change, shows the same keys; a click on a key presses it.
"""
from __future__ import annotations

from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widgets import Static


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-description-foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.key_ranges: list[tuple[int, int, str]] = []
        self._shown: tuple = ()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        shown, actions = [], set()
        for _, binding, enabled, _ in screen.active_bindings.values():
            if binding.show and binding.action not in actions:
                actions.add(binding.action)
                shown.append((binding.key.split(",")[0], self.app.get_key_display(binding), binding.description, enabled))
        if tuple(shown) == self._shown:
            return
        self._shown = tuple(shown)
        text, self.key_ranges = Text(end=""), []
        for key, display, description, enabled in shown:
            start = len(text)
            text.append(f" {display} ", style="bold" if enabled else "dim")
            text.append(f"{description} ", style="" if enabled else "dim")
            self.key_ranges.append((start, len(text), key))
        self.update(text)

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self.key_ranges:
            if start <= event.x < end:
                self.app.simulate_key(key)
                return
