"""Params parsing: the TUI form and the CLI's --param key=value both go through parse_params."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from analyses.core.errors import BadInput


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type_name: str
    default: Any
    doc: str
    optional: bool
    choices: tuple[str, ...] = ()


def _unwrap(annotation: Any) -> tuple[type, bool]:
    args = typing.get_args(annotation)
    if args and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def param_infos(params_cls: type) -> list[ParamInfo]:
    hints = typing.get_type_hints(params_cls)
    infos = []
    for f in dataclasses.fields(params_cls):
        base, optional = _unwrap(hints[f.name])
        infos.append(ParamInfo(f.name, base.__name__, f.default, f.metadata.get("doc", ""), optional, tuple(f.metadata.get("choices", ()))))
    return infos


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce_value(info: ParamInfo, raw: str) -> Any:
    """Parse one textual parameter value into its declared type; BadInput on a bad value."""
    if info.optional and raw.strip().lower() in {"", "none", "null"}:
        return None
    if info.choices and raw.strip().lower() not in info.choices:
        raise BadInput(f"parameter {info.name!r} takes one of {', '.join(info.choices)}, not {raw!r}")
    try:
        if info.type_name == "bool":
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(raw)
        if info.type_name == "int":
            return int(raw)
        if info.type_name == "float":
            value = float(raw)
            if not math.isfinite(value):
                raise BadInput(f"parameter {info.name!r} takes a finite float, not {raw!r}")
            return value
        return raw
    except ValueError:
        raise BadInput(f"parameter {info.name!r} takes a {info.type_name}, not {raw!r}") from None


def parse_params(params_cls: type, raw: dict[str, str]) -> Any:
    """Build a Params instance from text values (CLI --param, TUI form), checking names and types."""
    infos = {info.name: info for info in param_infos(params_cls)}
    values = {}
    for key, text in raw.items():
        if key not in infos:
            known = ", ".join(infos) or "none"
            raise BadInput(f"unknown parameter {key!r}; this analysis takes: {known}")
        values[key] = coerce_value(infos[key], text)
    params = params_cls(**values)
    check = getattr(params, "check", None)
    if callable(check):
        check()
    return params


def params_to_dict(params: Any) -> dict:
    return dataclasses.asdict(params)
