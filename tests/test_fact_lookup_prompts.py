"""fact-lookup's prompt choice on the tiny model: the candidates' prompts (balanced few-shot
examples, the chat template), the measure against plain unbatched forwards, the choice and what a
run stores of it."""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch

from analyses.core.errors import BadInput
from analyses.fact_lookup import Params, prompts
from analyses.inputs.entities import ALL_ATHLETES, SLOT, entity_inputs, load_entities


def table(n_per_value: int = 4):
    everyone = load_entities(str(ALL_ATHLETES))
    return [e for value in ("baseball", "basketball", "football") for e in [e for e in everyone if e.value == value][:n_per_value]]


def test_few_shot_prompts_give_one_example_per_value_each_last_equally_often_never_the_entity_itself(tiny_model):
    entities = table(5)
    values = ("baseball", "basketball", "football")
    few = prompts.prompted("few-shot", entities, tiny_model.tokenizer, False)
    last_example = Counter()
    for entity, asked in zip(entities, few):
        lines = asked.prompt.split("\n")
        assert lines[-1] == prompts.query_line(entity.template).replace(SLOT, entity.name)
        examples = lines[:-1]
        assert sorted(line.rsplit(" ", 1)[1] for line in examples) == list(values)
        assert all(entity.name not in line for line in examples)
        start, end = asked.name_span
        assert asked.prompt[start:end] == entity.name and asked.template.count(SLOT) == 1
        last_example[examples[-1].rsplit(" ", 1)[1]] += 1
    assert set(last_example.values()) == {5}  # 15 rows, rotated: every value is the last example 5 times
    # The first entity of a value is an example for the others; its own prompt uses the next one.
    first = entities[0]
    assert any(first.name in line for line in few[1].prompt.split("\n")[:-1])
    assert prompts.prompted("table", entities, tiny_model.tokenizer, False) == entities


def test_chat_prompts_wrap_the_examples_in_the_template_and_drop_a_bos_the_model_layer_adds(tiny_model):
    entities = table(3)
    tokenizer = tiny_model.tokenizer
    chat = prompts.prompted("chat", entities, tokenizer, False)[4]
    lines = prompts.few_shot_lines(4, entities[4], entities, ["baseball", "basketball", "football"])
    expected = tokenizer.apply_chat_template([{"role": "user", "content": prompts.CHAT_INSTRUCTION + "\n" + "\n".join(lines)}],
                                             add_generation_prompt=True, tokenize=False)
    assert chat.prompt == expected + prompts.query_line(entities[4].template).replace(SLOT, entities[4].name)
    assert chat.prompt.startswith(tokenizer.bos_token)
    assert not prompts.prompted("chat", entities, tokenizer, True)[4].prompt.startswith(tokenizer.bos_token)
    assert "chat" in prompts.candidates(tokenizer)

    class Plain:
        chat_template = None

    assert prompts.candidates(Plain()) == ("table", "few-shot")
    with pytest.raises(BadInput, match="chat template"):
        prompts.prompted("chat", entities, Plain(), False)
    with pytest.raises(BadInput, match="prompt"):
        Params(prompt="zero-shot").check()


def test_the_measure_equals_plain_forwards_and_auto_takes_the_highest_answer_set_probability(tiny_model):
    entities = table(3)
    params = Params(prompt_entities=5, n_bootstrap=200, batch_size=4)
    state = prompts.choice_state(tiny_model, entities, params, threading.Event())
    measures = prompts.measures_of_state(state)
    assert [m.name for m in measures] == ["table", "few-shot", "chat"]
    rows = prompts.sample_rows(len(entities), 5)
    assert rows == [0, 2, 4, 6, 8]
    answers = [tiny_model.tokenizer.encode(" " + value, add_special_tokens=False)[0] for value in ("baseball", "basketball", "football")]
    for measure in measures:
        asked = prompts.prompted(measure.name, entities, tiny_model.tokenizer, False)
        mass, in_set = [], []
        for row in rows:
            ids = tiny_model.tokenizer(asked[row].prompt, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                probs = tiny_model.bridge(torch.tensor([ids]), use_cache=False)[0, -1].double().softmax(-1)
            mass.append(float(probs[answers].sum()))
            in_set.append(int(probs.argmax()) in answers)
        assert measure.answer_set_prob == pytest.approx(np.mean(mass), abs=1e-5)
        assert measure.top1_in_set == pytest.approx(np.mean(in_set))
        assert measure.answer_set_low <= measure.answer_set_prob <= measure.answer_set_high and measure.n_entities == 5
        assert measure.example == asked[0].prompt
    assert len({m.answer_set_prob for m in measures}) == 3  # the prompts differ, so the choice is a real one
    assert str(state["prompt"]) == max(measures, key=lambda m: m.answer_set_prob).name
    named = prompts.choice_state(tiny_model, entities, Params(prompt="few-shot", prompt_entities=5, n_bootstrap=200), threading.Event())
    assert [str(name) for name in named["prompt_names"]] == ["few-shot"] and str(named["prompt"]) == "few-shot"


def test_a_run_asks_with_the_chosen_prompt_and_stores_the_choice(tiny_model):
    from analyses import fact_lookup

    entities = table(3)
    inputs = entity_inputs(entities)
    params = Params(folds=3, prompt="few-shot", prompt_entities=4, intervention_entities=3, n_neurons=1, n_permutations=5, n_bootstrap=50, layer_stride=1)
    result = fact_lookup.ANALYSIS.run(tiny_model, inputs, params)
    few = prompts.prompted("few-shot", entities, tiny_model.tokenizer, False)
    tokens = result.tokens.to_pylist()
    first_ids = [row["token_id"] for row in tokens if row["input_id"] == 0]
    assert first_ids == tiny_model.tokenizer(few[0].prompt, add_special_tokens=False)["input_ids"]
    stored = result.tables["fact_lookup_prompts"].to_pylist()
    assert [(row["prompt"], row["chosen"]) for row in stored] == [("few-shot", True)]
    assert result.notes["prompt"] == "few-shot"
    summary = [row["finding"] for row in result.tables["fact_lookup_summary"].to_pylist()]
    assert summary[0].startswith("prompt few-shot (chosen): answer set p ")
