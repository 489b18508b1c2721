"""A parameter form generated from an analysis' Params: one row per field, checked as you type.

The rows scroll (any number of parameters, any terminal height); every row is one line (name,
field, the description cut to fit) except the focused one, which is scrolled into view and opens:
its line gives the type, and its whole description and default wrap under it at the form's width.
A bad value is flagged on its own row (the error replaces the row's description, in red) and
``first_problem`` names the first bad field so that a refused run can say why and go there. The
line under the rows, while no row is focused, counts the parameters and lists the values set.
"""
from __future__ import annotations

import re
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label, Static

from analyses.core.errors import BadInput
from analyses.core.params import ParamInfo, coerce_value, param_infos
from app.tui.plain import plain

NAME_WIDTH = 22  # the longest name column; a longer name is shortened with an ellipsis
NAMED_PARAMETER = re.compile(r"parameter '([A-Za-z_][A-Za-z0-9_]*)'|--param ([A-Za-z_][A-Za-z0-9_]*)=")


def show_default(info: ParamInfo) -> str:
    return "none" if info.default is None else repr(info.default) if info.type_name == "str" else str(info.default)


def kind_of(info: ParamInfo) -> str:
    return info.type_name + (" or none" if info.optional else "")


def check_value(info: ParamInfo, value: str) -> str:
    """The problem with a typed value ('' when it is fine; an empty field keeps the default)."""
    if value == "":
        return ""
    try:
        coerce_value(info, value)
    except BadInput as error:
        return str(error)
    return ""


class ParamValidator(Validator):
    def __init__(self, info: ParamInfo) -> None:
        super().__init__()
        self.info = info

    def validate(self, value: str) -> ValidationResult:
        problem = check_value(self.info, value)
        return self.failure(problem) if problem else self.success()


class ParamRow(Vertical):
    """One parameter: its name, its field, and its description or, while the value is bad, the
    error, on one line; while focused (open), the line gives the type, and the whole description
    and the default wrap under it at the form's width."""

    def __init__(self, info: ParamInfo, value: str = "") -> None:
        super().__init__(classes="param-row", id=f"row-{info.name}")
        self.info = info
        self.initial = value

    def compose(self) -> ComposeResult:
        info = self.info
        with Horizontal(classes="param-line"):
            yield Label(info.name, classes="param-name")
            yield Input(self.initial, placeholder=show_default(info), id=f"param-{info.name}", validators=[ParamValidator(info)],
                        compact=True, classes="param-input", tooltip=f"{info.doc} ({kind_of(info)}, default {show_default(info)})")
            yield Static(self.note(), classes="param-doc")
        yield Static(self.more(), classes="param-more")

    def note(self) -> Any:
        problem = self.problem()
        if problem:
            return plain(problem)
        if self.has_class("-open"):
            return plain(kind_of(self.info))  # the description and default are under the line
        return plain(f"{kind_of(self.info)} · {self.info.doc}")

    def problem(self) -> str:
        field = self.query(Input)
        return check_value(self.info, field.first().value if field else self.initial)

    def show_check(self) -> None:
        self.set_class(bool(self.problem()), "-bad")
        self.query_one(".param-doc", Static).update(self.note())
        self.query_one(".param-more", Static).update(self.more())

    def more(self) -> Any:
        """What the open row shows under its line: the whole description and the default (an error
        is on the row's line and, whole, on the form's error line)."""
        return plain(f"{self.info.doc} (default {show_default(self.info)})")

    def open(self, is_open: bool) -> None:
        if is_open != self.has_class("-open"):
            self.set_class(is_open, "-open")
            self.query_one(".param-more", Static).display = is_open
            self.show_check()

    def lines(self, width: int) -> int:
        """The lines the row takes at a form width: one, and while open, its wrapped description."""
        if not self.has_class("-open"):
            return 1
        more = self.query_one(".param-more", Static)
        inner = width - more.styles.padding.left - more.styles.padding.right
        return 1 + max(1, more.get_content_height(self.size, self.app.size, max(1, inner)))


class ParamForm(Vertical):
    """Empty fields keep the documented default; a bad value is flagged in place."""

    def __init__(self, params_cls: type | None = None, values: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.infos = param_infos(params_cls) if params_cls is not None else []
        self.initial = dict(values or {})
        self.focused_name: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="param-rows", can_focus=False):
            if not self.infos:
                yield Static("This analysis takes no parameters.", classes="param-doc")
            for info in self.infos:
                yield ParamRow(info, self.initial.get(info.name, ""))
        yield Static("", id="param-help")
        yield Static("", id="param-error", classes="error")

    def on_mount(self) -> None:
        width = min(NAME_WIDTH, max((len(info.name) for info in self.infos), default=0) + 1)
        for row in self.query(ParamRow):
            row.query_one(".param-name", Label).styles.width = width
            row.show_check()
        self.show_help(None)
        self.show_error("")

    def on_resize(self) -> None:
        self.call_after_refresh(self.fit)

    def fit(self) -> None:
        """Take no more height than the rows, the help and the error need (the rest goes to the log)."""
        width = self.content_region.width
        if not self.is_attached or not width:
            return
        # From the lines' text at this width, not from their laid-out sizes: those lag one layout
        # behind an update, and a form capped too short would clip the error line.
        rows = list(self.query(ParamRow))
        rows_width = self.query_one("#param-rows", VerticalScroll).scrollable_content_region.width or width - 1
        lines = sum(row.lines(rows_width) for row in rows) if rows else 1
        for line in self.query_one("#param-help", Static), self.query_one("#param-error", Static):
            if line.display:
                lines += line.get_content_height(self.size, self.app.size, width)
        if self.styles.max_height != lines:
            self.styles.max_height = lines

    def row(self, name: str) -> ParamRow:
        return self.query_one(f"#row-{name}", ParamRow)

    def field(self, name: str) -> Input:
        return self.query_one(f"#param-{name}", Input)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        row = next((r for r in event.input.ancestors if isinstance(r, ParamRow)), None)
        if row is None:
            return
        row.show_check()
        problem = row.problem()
        current = str(self.query_one("#param-error", Static).render())
        if problem:
            self.show_error(problem)
        elif f"parameter {row.info.name!r}" in current:
            self.show_error("")  # the error was this field's and it is fixed
        self.show_help(self.focused_name)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        row = next((r for r in event.widget.ancestors_with_self if isinstance(r, ParamRow)), None)
        if row is not None:
            self.focused_name = row.info.name
            for other in self.query(ParamRow):
                other.open(other is row)
            self.show_help(row.info.name)
            self.call_after_refresh(self.reveal, row)

    def reveal(self, row: ParamRow) -> None:
        """Scroll the focused row into view once the help line under the rows has its new height."""
        self.fit()
        self.call_after_refresh(self._scroll_to, row)

    def _scroll_to(self, row: ParamRow) -> None:
        if row.is_attached and self.focused_name == row.info.name:
            self.query_one("#param-rows", VerticalScroll).scroll_to_widget(row, animate=False, immediate=True)

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        # The blur of one field and the focus of the next reach the form in either order: what is
        # focused once both are handled decides.
        self.call_after_refresh(self._help_after_blur)

    def _help_after_blur(self) -> None:
        focused = self.screen.focused if self.is_attached else None
        if focused is None or self not in focused.ancestors:
            self.focused_name = None
            for row in self.query(ParamRow):
                row.open(False)
            self.show_help(None)

    def show_help(self, name: str | None) -> None:
        """Unfocused, how many parameters and the values set (one scrolled out of view is still
        seen); while a row is focused it says all there is to say, and the line goes."""
        help_line = self.query_one("#param-help", Static)
        if name is None:
            count = len(self.infos)
            values = self.values()
            summary = ", ".join(f"{key}={text if text == text.strip() else repr(text)}" for key, text in values.items())
            head = f"{count} parameter{'s' if count != 1 else ''}"
            help_line.update(plain(f"{head}, set: {summary}" if summary else f"{head} (tab moves on; empty = default)" if count else ""))
            help_line.display = bool(count)
        else:
            help_line.display = False
        self.fit()

    def values(self) -> dict[str, str]:
        """Text values of the fields that were filled in (the rest keep their defaults)."""
        raw = {}
        for info in self.infos:
            text = self.field(info.name).value
            if text != "":
                raw[info.name] = text
        return raw

    def first_problem(self) -> tuple[str, str] | None:
        """The first field (in form order) whose value is bad, and the problem."""
        for info in self.infos:
            problem = check_value(info, self.field(info.name).value)
            if problem:
                return info.name, problem
        return None

    def go_to(self, name: str) -> None:
        """Focus a parameter's field and scroll its open row into view (when it has the focus
        already, no focus event would: the row may have grown with an error since)."""
        self.field(name).focus()
        self.call_after_refresh(self.reveal, self.row(name))

    def named_parameter(self, message: str) -> str | None:
        """The parameter of this form a message names (``parameter 'seed' ...``), if any."""
        names = {info.name for info in self.infos}
        return next((name for found in NAMED_PARAMETER.findall(message) for name in found if name in names), None)

    def show_error(self, message: str) -> None:
        error = self.query_one("#param-error", Static)
        error.update(plain(message))
        error.display = bool(message)
        self.fit()
