"""What a run of attribution patching is set up from: the metric's tokens, each input's corruption
(causal tracing's subject noise, or a corrupt prompt of the same token length) and the base and
source runs in the chosen direction. Everything a user can get wrong is refused here, before
anything is stored."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Input
from analyses.core.errors import BadInput


@dataclass(frozen=True)
class Change:
    """An input tokenised with what the corruption changes: token ids, the corrupt prompt's ids
    (None for noise) and the changed token range [start, end)."""

    ids: tuple[int, ...]
    corrupt_ids: tuple[int, ...] | None
    changed: tuple[int, int]

    @property
    def corruption(self) -> str:
        return "noise" if self.corrupt_ids is None else "corrupt_prompt"


def one_token(model, text: str, name: str) -> int:
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = model.token_strings(ids) if ids else []
        raise BadInput(f"parameter {name!r} must be one token; {text!r} is {len(ids)} tokens {pieces}")
    return int(ids[0])


def metric_tokens(model, params) -> tuple[int | None, int | None]:
    """(target id or None for the clean top-1, foil id or None), each checked to be one token."""
    target = one_token(model, params.target, "target") if params.target is not None else None
    foil = one_token(model, params.foil, "foil") if params.foil is not None else None
    if foil is not None and foil == target:
        raise BadInput(f"parameter 'foil' {params.foil!r} is the same token as the target {params.target!r}")
    return target, foil


def check_foil_against_top1(model, item: Input, change: Change, foil_id: int, foil: str) -> None:
    """With no target given the target is the clean top-1: refuse a foil that is that token."""
    import torch

    with torch.inference_mode():
        top1 = int(model.bridge(torch.tensor([change.ids], device=model.device))[0, -1].argmax())
    if top1 == foil_id:
        raise BadInput(f"parameter 'foil' {foil!r} is the clean top-1 of input {item.input_id}, which is the target when none is given")


def corrupt_prompt_of(item: Input, params) -> str | None:
    return item.meta.get("corrupt_prompt") or params.corrupt_prompt


def locate_change(model, item: Input, params) -> Change:
    """The input's tokens and changed range; BadInput for a subject that is not there or a corrupt
    prompt of another token length (or equal to the prompt)."""
    from analyses.causal_trace import locate

    corrupt_text = corrupt_prompt_of(item, params)
    if corrupt_text is None:
        where = locate(model, item, params)
        return Change(where.ids, None, where.subject_range)
    ids = tuple(model.to_tokens(item.text, prepend_bos=params.prepend_bos)[0].tolist())
    corrupt_ids = tuple(model.to_tokens(corrupt_text, prepend_bos=params.prepend_bos)[0].tolist())
    if len(corrupt_ids) != len(ids):
        raise BadInput(f"the corrupt prompt is {len(corrupt_ids)} tokens and the prompt {len(ids)}: they must have the same token length")
    differ = [pos for pos, (a, b) in enumerate(zip(ids, corrupt_ids)) if a != b]
    if not differ:
        raise BadInput("the corrupt prompt has the same tokens as the prompt: nothing to patch")
    return Change(ids, corrupt_ids, (differ[0], differ[-1] + 1))


def run_state(model, inputs: list[Input], params) -> dict:
    """The run-level noise sigma (pooled over every input's subject, as causal tracing's), so that
    every shard noises alike; empty for corrupt prompts."""
    from analyses.causal_trace import tables as causal_tables

    changes = [locate_change(model, item, params) for item in inputs]
    noised = [change for change in changes if change.corrupt_ids is None]
    if not noised:
        return {}
    from analyses.causal_trace import Located

    located = [Located(change.ids, "", change.changed) for change in noised]
    sigma, note = causal_tables.noise_sigma(model, located, params)
    return {"sigma": sigma, "sigma_source": note}


def build_setup(model, item: Input, params, state: dict, change: Change, target_id: int | None, foil_id: int | None) -> tuple[Any, int]:
    """The engine's Setup (base and source runs, metric) and the target id used."""
    import torch

    from analyses.attribution_patching import engine
    from analyses.causal_trace import engine as causal_engine

    tokens = torch.tensor([change.ids], device=model.device)
    with torch.inference_mode():
        clean_logits = model.bridge(tokens)[0, -1]
    target = int(clean_logits.argmax()) if target_id is None else target_id
    clean = engine.RunInput(tokens)
    if change.corrupt_ids is None:
        begin, end = change.changed
        draws = causal_engine.noise_draws(params.samples, end - begin, model.d_model, False, params.seed, item.input_id)
        noise = torch.from_numpy(draws) * (params.noise * state["sigma"])
        corrupt = engine.RunInput(tokens, noise.to(model.device), change.changed)
    else:
        corrupt = engine.RunInput(torch.tensor([change.corrupt_ids], device=model.device))
    reference = torch.log_softmax(clean_logits.double(), dim=-1)[None] if params.metric == "kl" else None
    metric = engine.Metric(params.metric, target, foil_id, reference)
    if params.resolved_direction() == "noising":
        return engine.Setup(clean, corrupt, metric), target
    return engine.Setup(corrupt, clean, metric), target
