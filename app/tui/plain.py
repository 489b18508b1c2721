"""The one way text reaches the screen: assembled as plain text, never parsed as markup.

Prompts, documents, tokens, SQL results, column names and error messages may contain ``[/INST]``,
``[bold]`` or ``a[k]``; Rich/Textual markup would raise on the first and eat the others.
"""
from __future__ import annotations

from typing import Union

from rich.text import Text

Part = Union[str, "tuple[str, str]", Text]


def plain(*parts: Part, style: str = "") -> Text:
    """Text of the parts as written: a str is literal, (str, style) is literal with a style."""
    text = Text(style=style, end="")
    for part in parts:
        if isinstance(part, Text):
            text.append_text(part)
        elif isinstance(part, tuple):
            text.append(str(part[0]), style=part[1])
        else:
            text.append(str(part))
    return text


def short_badge(badge: str) -> str:
    """A badge for a narrow cell: "FAILED: a, b" -> "2 FAILED", "skipped: a" -> "1 skipped"."""
    verdict, _, names = badge.partition(": ")
    return f"{len(names.split(', '))} {verdict}" if names else badge


def badge_style(badge: str) -> str:
    """The colour of a run's fidelity badge (ok, skipped: CHECK, FAILED: CHECK)."""
    return "green" if badge == "ok" else "bold red" if badge.startswith("FAILED") else "yellow"
