"""A parameter form generated from an analysis' Params: one row per field, checked as you type."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label, Static

from analyses.core.errors import BadInput
from analyses.core.params import ParamInfo, coerce_value, param_infos
from app.tui.plain import plain


def show_default(info: ParamInfo) -> str:
    return "none" if info.default is None else repr(info.default) if info.type_name == "str" else str(info.default)


class ParamValidator(Validator):
    def __init__(self, info: ParamInfo) -> None:
        super().__init__()
        self.info = info

    def validate(self, value: str) -> ValidationResult:
        if value == "":
            return self.success()
        try:
            coerce_value(self.info, value)
        except BadInput as error:
            return self.failure(str(error))
        return self.success()


class ParamForm(Vertical):
    """Empty fields keep the documented default; a bad value is flagged in place."""

    def __init__(self, params_cls: type | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.infos = param_infos(params_cls) if params_cls is not None else []

    def compose(self) -> ComposeResult:
        if not self.infos:
            yield Static("This analysis takes no parameters.", classes="param-doc")
        for info in self.infos:
            kind = info.type_name + (" or none" if info.optional else "")
            with Horizontal(classes="param-row"):
                yield Label(info.name, classes="param-name")
                yield Input(placeholder=show_default(info), id=f"param-{info.name}", validators=[ParamValidator(info)],
                            compact=True, classes="param-input", tooltip=f"{info.doc} ({kind}, default {show_default(info)})")
                yield Static(f"{kind} · {info.doc}", classes="param-doc")
        yield Static("", id="param-error", classes="error")

    def on_input_changed(self, event: Input.Changed) -> None:
        error = self.query_one("#param-error", Static)
        failures = event.validation_result.failure_descriptions if event.validation_result else []
        error.update(plain(failures[0] if failures else ""))

    def values(self) -> dict[str, str]:
        """Text values of the fields that were filled in (the rest keep their defaults)."""
        raw = {}
        for info in self.infos:
            text = self.query_one(f"#param-{info.name}", Input).value
            if text != "":
                raw[info.name] = text
        return raw

    def show_error(self, message: str) -> None:
        self.query_one("#param-error", Static).update(plain(message))
