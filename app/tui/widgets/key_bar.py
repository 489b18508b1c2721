"""The footer: the focused chain's shown bindings as one line of text.

Textual's Footer mounts a widget per key and recomposes on every screen switch and focus change;
with ~10 keys that was most of a screen switch's time on 2 cores. One Static, redrawn only when
the keys or the width change, shows the same keys; a click on a key presses it.

Order: the screen's own keys, then quit, then F1..F8 in order. Where the full descriptions do not
fit, every key keeps its place and only its words shrink, one key at a time from the end of the
line (the function keys, the same on every screen, go first): each to its first word; then each in
turn to four letters and to nothing (the key alone). Before the screen's own keys
would lose their first words, the gaps between keys close to one space. No key is dropped.
"""
from __future__ import annotations

from collections.abc import Iterator

from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widgets import Static

ABBREVIATION = 4  # letters a description keeps at its shortest before it goes


def order(key: str) -> tuple[int, int]:
    """Where an app key goes on the line: after the screen's keys, quit first, then F1..F8 in order."""
    first = key.split(",")[0]
    if first.startswith("f") and first[1:].isdigit():
        return (2, int(first[1:]))
    return (1, 0)


def shortenings(full: list[str]) -> Iterator[list[str]]:
    """The descriptions, from the full ones to none: each step shortens one key's words, the last
    keys first: each to its first word; then each in turn to four letters and to nothing."""
    current = list(full)
    yield list(current)
    for index in range(len(current) - 1, -1, -1):
        if " " in current[index]:
            current[index] = current[index].split(" ")[0]
            yield list(current)
    for index in range(len(current) - 1, -1, -1):
        for shorter in (current[index][:ABBREVIATION], ""):
            if shorter != current[index]:
                current[index] = shorter
                yield list(current)


def layouts(full: list[str], own: int) -> Iterator[tuple[list[str], str]]:
    """(descriptions, gap) to try in turn: wide gaps while the first `own` keys (the screen's) keep
    at least their first words, then narrow gaps from the full words down to the keys alone."""
    steps = list(shortenings(full))
    for step in steps:
        if all(word and word.split(" ")[0] == whole.split(" ")[0] for word, whole in zip(step[:own], full)):
            yield step, "  "
    for step in steps:
        yield step, " "


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
        # The screen's own keys first, then the app's: quit, then the function keys in order. When the
        # line is short, the keys that lose their words first are the ones that are the same everywhere.
        active = sorted(screen.active_bindings.values(), key=lambda item: order(item[1].key) if item[0] is self.app else (0, 0))
        for owner, binding, enabled, _ in active:
            if binding.show and binding.action not in actions:
                actions.add(binding.action)
                shown.append((binding.key.split(",")[0], self.app.get_key_display(binding), binding.description, enabled, owner is not self.app))
        if tuple(shown) == self._shown:
            return
        self._shown = tuple(shown)
        self.draw()

    def on_resize(self) -> None:
        self.draw()

    def draw(self) -> None:
        width = self.size.width
        ranges: list[tuple[int, int, str]] = []
        text = Text(end="")
        own = sum(1 for *_, screen_key in self._shown if screen_key)
        for descriptions, gap in layouts([description for _, _, description, _, _ in self._shown], own):
            text, ranges = Text(" ", end=""), []
            for (key, display, _, enabled, _), description in zip(self._shown, descriptions):
                start = len(text) - 1 if ranges else 0
                text.append(display, style="bold" if enabled else "dim")
                if description:
                    text.append(f" {description}", style="" if enabled else "dim")
                text.append(gap)
                ranges.append((start, len(text), key))
            text.rstrip()
            text.append(" ")
            if not width or len(text) <= width:
                break
        self.key_ranges = ranges
        self.update(text)

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self.key_ranges:
            if start <= event.x < end:
                self.app.simulate_key(key)
                return
