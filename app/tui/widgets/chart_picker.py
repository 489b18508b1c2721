"""A modal that picks what to chart from a SQL result: a numeric value, optionally an x and a series."""
from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Select, Static

from app.tui.plain import plain

NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


def is_numeric(type_name: str) -> bool:
    return type_name.upper().startswith(NUMERIC_TYPES)


@dataclass(frozen=True)
class ChartChoice:
    value: str
    x: str | None
    series: str | None


class ChartPickerModal(ModalScreen[ChartChoice | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Close")]

    def __init__(self, columns: list[str], types: list[str]) -> None:
        super().__init__()
        self.columns, self.types = columns, types

    def compose(self) -> ComposeResult:
        numeric = [c for c, t in zip(self.columns, self.types) if is_numeric(t)]
        with Vertical(id="picker-box"):
            yield Static("Chart this result: a line of a numeric column over x, one line per series value.")
            with Horizontal(classes="picker-row"):
                yield Label("value", classes="picker-label")
                yield Select([(plain(c), c) for c in numeric], id="pick-value", allow_blank=False, compact=True) if numeric else Static("no numeric column", classes="error")
            with Horizontal(classes="picker-row"):
                yield Label("x", classes="picker-label")
                yield Select([(plain(c), c) for c in self.columns], id="pick-x", prompt="row number", compact=True)
            with Horizontal(classes="picker-row"):
                yield Label("series", classes="picker-label")
                yield Select([(plain(c), c) for c in self.columns], id="pick-series", prompt="none", compact=True)
            with Horizontal(id="picker-buttons"):
                yield Button("Draw", id="pick-draw", variant="primary", compact=True, disabled=not numeric)
                yield Button("Close", id="pick-close", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "pick-draw":
            self.dismiss(None)
            return
        x, series = self.query_one("#pick-x", Select).value, self.query_one("#pick-series", Select).value
        self.dismiss(ChartChoice(
            str(self.query_one("#pick-value", Select).value),
            None if x is Select.NULL else str(x),
            None if series is Select.NULL else str(series),
        ))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
