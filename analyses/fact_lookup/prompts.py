"""The prompt fact-lookup asks with: candidate templates, and the measure that chooses among them.

A one-shot prompt whose example answer is outside the answer set ("... Tiger Woods plays the sport
of golf") gets copied: the model answers " golf" and the answer tokens share little probability.
The candidates, all built from the query line of each row's own template (the line holding
``{entity}``, e.g. "Fact: {entity} plays the sport of"):

- ``table``: the rows' templates as given (the shipped table's one-shot prompt);
- ``few-shot``: one example per attribute value, each another entity of the table with that value,
  in an order rotated by the entity's row (every value comes last equally often, so no single
  answer is the one to copy);
- ``chat``: the few-shot examples as the user's turn of the tokenizer's chat template, the query
  line begun as the assistant's answer (offered only when the tokenizer has a chat template).

The measure (no labels: it asks whether the model answers, not whether it is right): over a sample
of entities, the probability on the whole answer set at the final position and how often the
model's own top-1 over the vocabulary is one of the answer tokens. ``auto`` takes the candidate
with the highest mean answer-set probability.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analyses.core.errors import BadInput
from analyses.inputs.entities import SLOT, Entity

CANDIDATES = ("table", "few-shot", "chat")
CHOICES = ("auto", *CANDIDATES)
CHAT_INSTRUCTION = "Complete the last fact with one word, as in the examples."


def query_line(template: str) -> str:
    """The part of a template from the start of the line holding the slot to its end."""
    start = template.rfind("\n", 0, template.index(SLOT)) + 1
    return template[start:]


def example_entities(entities: Sequence[Entity], values: Sequence[str]) -> dict[str, tuple[Entity, Entity | None]]:
    """Per value, the first entity of the table with that value and the next one (the example used
    in the first one's own prompt; None when the value has a single entity)."""
    found: dict[str, list[Entity]] = {value: [] for value in values}
    for entity in entities:
        if len(found[entity.value]) < 2:
            found[entity.value].append(entity)
    return {value: (pair[0], pair[1] if len(pair) > 1 else None) for value, pair in found.items()}


def few_shot_lines(row: int, entity: Entity, entities: Sequence[Entity], values: Sequence[str],
                   examples: dict[str, tuple[Entity, Entity | None]] | None = None) -> list[str]:
    """The example lines of row's prompt: one per value, rotated by row, never the entity itself
    (examples: example_entities of the table, when already known)."""
    examples = examples if examples is not None else example_entities(entities, values)
    query = query_line(entity.template)
    shift = row % len(values)
    lines = []
    for value in list(values[shift:]) + list(values[:shift]):
        first, second = examples[value]
        example = second if first.name == entity.name else first
        if example is None:
            raise BadInput(f"a few-shot prompt needs two entities with value {value!r}")
        lines.append(query.replace(SLOT, example.name) + " " + value)
    return lines


def chat_prefix(tokenizer: Any, lines: list[str], bos_text: str | None) -> str:
    """The chat template around the examples as the user's turn, up to the assistant's answer;
    the tokenizer's BOS text is dropped from the front when the model layer prepends the BOS itself."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_INSTRUCTION + "\n" + "\n".join(lines)}],
                                         add_generation_prompt=True, tokenize=False)
    if bos_text and text.startswith(bos_text):
        text = text[len(bos_text):]
    return text


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def candidates(tokenizer: Any) -> tuple[str, ...]:
    """The candidate prompts this tokenizer allows."""
    return tuple(name for name in CANDIDATES if name != "chat" or has_chat_template(tokenizer))


def prompted(name: str, entities: Sequence[Entity], tokenizer: Any, bos_prepended: bool) -> list[Entity]:
    """The entities with the templates of candidate name (each still holding the slot once)."""
    if name == "table":
        return list(entities)
    if name == "chat" and not has_chat_template(tokenizer):
        raise BadInput("prompt 'chat' needs a tokenizer with a chat template; this one has none")
    if name not in CANDIDATES:
        raise BadInput(f"parameter 'prompt' takes one of {', '.join(CHOICES)}, not {name!r}")
    values = sorted({entity.value for entity in entities})
    bos_text = getattr(tokenizer, "bos_token", None) if bos_prepended else None
    examples = example_entities(entities, values)
    out = []
    for row, entity in enumerate(entities):
        lines = few_shot_lines(row, entity, entities, values, examples)
        query = query_line(entity.template)
        template = "\n".join([*lines, query]) if name == "few-shot" else chat_prefix(tokenizer, lines, bos_text) + query
        out.append(Entity(entity.name, entity.value, template))
    return out


@dataclass(frozen=True)
class PromptMeasure:
    """A candidate's measure over the sample: mean answer-set probability with its 95% bootstrap
    interval, the share whose vocabulary top-1 is an answer token (with interval), and the share
    whose top-1 among the answer tokens is the right one (reported, not used to choose)."""

    name: str
    answer_set_prob: float
    answer_set_low: float
    answer_set_high: float
    top1_in_set: float
    top1_in_set_low: float
    top1_in_set_high: float
    among_answers_correct: float
    n_entities: int
    example: str


def measure(name: str, logprobs: Any, top1_ids: Any, answer_ids: Sequence[int], labels: Any, example: str, n_bootstrap: int, seed: int) -> PromptMeasure:
    """The measure of one candidate from its answer-token log-probabilities [N, A] and vocabulary top-1 ids [N]."""
    import numpy as np

    from analyses.fact_lookup.lookup import bootstrap_means

    mass = logprobs.logsumexp(-1).exp().numpy()
    in_set = np.isin(np.asarray(top1_ids), np.asarray(answer_ids)).astype(np.float64)
    low, high = bootstrap_means(np.stack([mass, in_set], 1), n_bootstrap, seed)
    correct = float((logprobs.argmax(-1).numpy() == np.asarray(labels)).mean())
    return PromptMeasure(name, float(mass.mean()), float(low[0]), float(high[0]), float(in_set.mean()), float(low[1]), float(high[1]),
                         correct, len(mass), example)


def choose(measures: Sequence[PromptMeasure]) -> PromptMeasure:
    """The candidate with the highest mean answer-set probability (the first on a tie)."""
    return max(measures, key=lambda item: item.answer_set_prob)


def sample_rows(n: int, k: int) -> list[int]:
    """k rows evenly spread over n (all when k is 0 or at least n)."""
    import numpy as np

    k = n if k == 0 else min(n, k)
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def measure_candidates(model, entities: Sequence[Entity], names: Sequence[str], rows: Sequence[int], answer_ids: Sequence[int], labels: Any,
                       bos_token_id: int | None, batch_size: int, n_bootstrap: int, seed: int, cancel: Any, tick: Any) -> list[PromptMeasure]:
    """One clean batched pass per candidate over the sample rows, measured."""
    import numpy as np
    import torch

    from analyses.fact_lookup import engine
    from analyses.model.tokens import pad_id

    measures = []
    for name in names:
        sample = [prompted(name, entities, model.tokenizer, bos_token_id is not None)[row] for row in rows]
        encoded = engine.encode(model.tokenizer, [e.prompt for e in sample], [e.name_span for e in sample], bos_token_id)
        batches = engine.make_batches(encoded, list(range(len(sample))), batch_size, pad_id(model), model.device)
        top1: list = []
        logprobs = engine.run_batches(model, batches, lambda batch: [], answer_ids, cancel, tick, top1=top1)
        top1_ids = torch.cat([ids for ids, _ in top1]).numpy()
        measures.append(measure(name, logprobs, top1_ids, answer_ids, np.asarray(labels)[list(rows)], sample[0].prompt, n_bootstrap, seed))
    return measures


MEASURE_FIELDS = ("answer_set_prob", "answer_set_low", "answer_set_high", "top1_in_set", "top1_in_set_low", "top1_in_set_high",
                  "among_answers_correct", "n_entities")


def choice_state(model, entities: Sequence[Entity], params: Any, cancel: Any, tick: Any = None) -> dict:
    """The run-level prompt choice as named plain arrays (a run's state): the chosen candidate and,
    per measured candidate, its measure and first prompt. With params.prompt = auto every candidate
    the tokenizer allows is measured; otherwise the named one alone."""
    import numpy as np

    from analyses.fact_lookup import engine

    values = sorted({entity.value for entity in entities})
    labels = [values.index(entity.value) for entity in entities]
    answer_ids = engine.answer_token_ids(model.tokenizer, values)
    bos = model.bos(params.prepend_bos)
    names = candidates(model.tokenizer) if params.prompt == "auto" else (params.prompt,)
    rows = sample_rows(len(entities), params.prompt_entities)
    measures = measure_candidates(model, entities, names, rows, answer_ids, labels, bos.token_id if bos.prepend else None,
                                  params.batch_size, params.n_bootstrap, params.seed, cancel, tick or (lambda: None))
    chosen = choose(measures)
    state = {"prompt": np.array(chosen.name), "prompt_names": np.array([item.name for item in measures]),
             "prompt_examples": np.array([item.example for item in measures])}
    for field in MEASURE_FIELDS:
        state[f"prompt_{field}"] = np.array([getattr(item, field) for item in measures], dtype=np.float64)
    return state


def measures_of_state(state: dict) -> list[PromptMeasure]:
    names = [str(name) for name in state["prompt_names"]]
    measures = []
    for i, name in enumerate(names):
        fields = {field: float(state[f"prompt_{field}"][i]) for field in MEASURE_FIELDS}
        fields["n_entities"] = int(fields["n_entities"])
        measures.append(PromptMeasure(name=name, example=str(state["prompt_examples"][i]), **fields))  # type: ignore[arg-type]
    return measures


def prompts_table(state: dict) -> Any:
    """fact_lookup_prompts: each measured candidate, whether it was chosen, its measure and first prompt."""
    from analyses.fact_lookup.tables import arrow_table

    chosen = str(state["prompt"])
    measures = measures_of_state(state)
    columns: dict[str, list] = {"prompt": [m.name for m in measures], "chosen": [m.name == chosen for m in measures]}
    for field in MEASURE_FIELDS:
        columns[field] = [getattr(m, field) for m in measures]
    columns["example"] = [m.example for m in measures]
    return arrow_table("fact_lookup_prompts", columns)
