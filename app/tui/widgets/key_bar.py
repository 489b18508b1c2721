"""The footer: the focused chain's shown bindings as one line of text.

Textual's Footer mounts a widget per key and recomposes on every screen switch and focus change;
with ~10 keys that was most of a screen switch's time on 2 cores. One Static, redrawn only when
the keys or the width change, shows the same keys; a click on a key presses it. Where the full
descriptions do not fit, each is shortened to its first word, then the last keys lose theirs one
by one, so that every key stays on the line instead of the last ones being cut.
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
        # The screen's own keys first, then the app's (screen switches, quit): when the line is
        # short, the keys that lose their descriptions are the ones that are the same everywhere.
        active = sorted(screen.active_bindings.values(), key=lambda item: item[0] is self.app)
        for _, binding, enabled, _ in active:
            if binding.show and binding.action not in actions:
                actions.add(binding.action)
                shown.append((binding.key.split(",")[0], self.app.get_key_display(binding), binding.description, enabled))
        if tuple(shown) == self._shown:
            return
        self._shown = tuple(shown)
        self.draw()

    def on_resize(self) -> None:
        self.draw()

    def draw(self) -> None:
        width = self.size.width
        full = [description for _, _, description, _ in self._shown]
        short = [description.split(" ")[0] for description in full]
        tries = [full] + [short[:kept] + [""] * (len(short) - kept) for kept in range(len(short), -1, -1)]
        for descriptions in tries:
            text, ranges = Text(end=""), []
            for (key, display, _, enabled), description in zip(self._shown, descriptions):
                start = len(text)
                text.append(f" {display} ", style="bold" if enabled else "dim")
                if description:
                    text.append(f"{description} ", style="" if enabled else "dim")
                ranges.append((start, len(text), key))
            if not width or len(text) <= width:
                break
        self.key_ranges = ranges
        self.update(text)

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self.key_ranges:
            if start <= event.x < end:
                self.app.simulate_key(key)
                return
