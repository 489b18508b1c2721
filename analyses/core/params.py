"""Params parsing: the TUI form and the CLI's --param key=value both go through parse_params."""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
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
    empty_is_none: bool = True


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
        infos.append(ParamInfo(f.name, base.__name__, f.default, f.metadata.get("doc", ""), optional, tuple(f.metadata.get("choices", ())),
                               bool(f.metadata.get("empty_is_none", True))))
    return infos


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce_value(info: ParamInfo, raw: str) -> Any:
    """Parse one textual parameter value into its declared type; BadInput on a bad value."""
    nones = {"", "none", "null"} if info.empty_is_none else {"none", "null"}
    if info.optional and raw.strip().lower() in nones:
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
    check_params(params)
    return params


def check_params(params: Any) -> None:
    """What every Params must pass, however it was built (parsed, typed in code, read back from a
    stored run): each field with choices holds one of them, then the Params' own ``check()``."""
    for info in param_infos(type(params)):
        value = getattr(params, info.name)
        if info.choices and value is not None and str(value).strip().lower() not in info.choices:
            raise BadInput(f"parameter {info.name!r} takes one of {', '.join(info.choices)}, not {value!r}")
    check = getattr(params, "check", None)
    if callable(check):
        check()


def params_to_dict(params: Any) -> dict:
    return dataclasses.asdict(params)


# The one parser of comma-list parameters (kinds, sites, interventions, layers, heads, positions).


def _parts(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def name_list(text: str, name: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """A comma list of one or more of ``allowed``, in the order given, a repeat counted once;
    BadInput naming the parameter and the choices otherwise."""
    names = tuple(dict.fromkeys(_parts(text)))
    if not names or any(item not in allowed for item in names):
        raise BadInput(f"parameter {name!r} takes a comma-separated subset of {', '.join(allowed)}, not {text!r}")
    return names


def int_list(text: str, name: str, *, empty_ok: bool = False, below: int | None = None, what: str = "") -> tuple[int, ...]:
    """A comma list of non-negative integers in the order given (at least one unless ``empty_ok``),
    each below ``below`` when it is given (``what`` names the bound: "the model has 4 layers")."""
    try:
        values = tuple(int(part) for part in _parts(text))
    except ValueError:
        raise BadInput(f"{name} takes comma-separated integers, not {text!r}") from None
    if (not values and not empty_ok) or (values and min(values) < 0):
        raise BadInput(f"{name} needs at least one non-negative integer, not {text!r}")
    if below is not None and values and max(values) >= below:
        raise BadInput(f"{name} must be below {below}{f' ({what})' if what else ''}, not {max(values)}")
    return values
