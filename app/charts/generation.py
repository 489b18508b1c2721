"""A generate run's steps as the workbench's generation view reads them: the prompt, each
generated token with its probability, rank and entropy, and per step the lens (per layer: the
chosen token's probability and the top-k tokens with their probabilities). Reads the store only;
no Textual, no torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    step: int
    pos: int
    token: str
    prob: float
    rank: int
    entropy_bits: float


@dataclass
class Generation:
    """One input of one generate run, as stored (a cancelled run: the steps it kept)."""

    run_id: int
    input_id: int
    prompt: str
    steps: list[Step]
    layers: list[int]
    chosen: dict[int, list[float]] = field(default_factory=dict)
    """step -> the chosen token's lens probability per layer (in ``layers`` order)."""
    topk: dict[int, list[list[tuple[str, float]]]] = field(default_factory=dict)
    """step -> per layer, the top-k (token, probability), k = 1 first."""

    @property
    def label(self) -> str:
        return "Generation: text, step cursor, lens per layer"

    @property
    def text(self) -> str:
        return "".join(step.token for step in self.steps)


def load_generation(store: Any, run_id: int, input_id: int | None) -> Generation | None:
    """The stored steps of one input of a generate run; None when it has no steps."""
    if input_id is None:
        return None
    rows = store.query("SELECT step, pos, token, prob, rank, entropy_bits FROM generation_steps WHERE run_id = ? AND input_id = ? ORDER BY step",
                       [run_id, input_id]).rows
    if not rows:
        return None
    steps = [Step(int(s), int(p), str(t), float(pr), int(r), float(e)) for s, p, t, pr, r, e in rows]
    prompt = store.query("SELECT token FROM tokens WHERE run_id = ? AND input_id = ? AND pos < ? ORDER BY pos",
                         [run_id, input_id, steps[0].pos]).rows
    lens = store.query("SELECT step, layer, chosen_prob FROM generation_lens WHERE run_id = ? AND input_id = ? ORDER BY step, layer",
                       [run_id, input_id]).rows
    layers = sorted({int(layer) for _, layer, _ in lens})
    chosen: dict[int, list[float]] = {}
    for step, _, prob in lens:
        chosen.setdefault(int(step), []).append(float(prob))
    top = store.query("SELECT step, layer, token, prob FROM generation_topk WHERE run_id = ? AND input_id = ? ORDER BY step, layer, k",
                      [run_id, input_id]).rows
    index = {layer: i for i, layer in enumerate(layers)}
    topk: dict[int, list[list[tuple[str, float]]]] = {}
    for step, layer, token, prob in top:
        per_layer = topk.setdefault(int(step), [[] for _ in layers])
        per_layer[index[int(layer)]].append((str(token), float(prob)))
    return Generation(run_id, input_id, "".join(str(token) for (token,) in prompt), steps, layers, chosen, topk)
