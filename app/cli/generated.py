"""The text of a `generate` run as `iwb run` / `iwb show` print it: the prompt, then each generated
token shaded by its probability (viridis, brighter = more probable), or plain text without colour
(NO_COLOR, a pipe, a dumb terminal), where the steps table below gives the probabilities."""
from __future__ import annotations

from typing import Any

from app.charts import COLORMAP


def _colour(prob: float) -> tuple[int, int, int]:
    index = min(len(COLORMAP) - 1, max(0, int(prob * len(COLORMAP))))
    return COLORMAP[index]


def generated_text(store: Any, run_id: int, input_id: int, use_colour: bool) -> str:
    """The prompt and the generated tokens of one input of a generate run ("" when it has none)."""
    steps = store.query("SELECT pos, token, prob FROM generation_steps WHERE run_id = ? AND input_id = ? ORDER BY step",
                        [run_id, input_id]).rows
    if not steps:
        return ""
    first = min(pos for pos, _, _ in steps)
    prompt = store.query("SELECT token FROM tokens WHERE run_id = ? AND input_id = ? AND pos < ? ORDER BY pos",
                         [run_id, input_id, first]).rows
    prompt_text = "".join(token for (token,) in prompt)
    if not use_colour:
        body = "".join(token for _, token, _ in steps)
        return f"Generated (input {input_id}, {len(steps)} tokens; probabilities in the table below):\n{prompt_text}{body}"
    pieces = []
    for _, token, prob in steps:
        red, green, blue = _colour(prob)
        pieces.append(f"\x1b[38;2;{red};{green};{blue}m{token}\x1b[0m")
    legend = "".join(f"\x1b[38;2;{r};{g};{b}m█\x1b[0m" for r, g, b in COLORMAP)
    return f"Generated (input {input_id}, {len(steps)} tokens; probability 0 {legend} 1):\n\x1b[2m{prompt_text}\x1b[0m{''.join(pieces)}"
