"""Generation with the lens, steering and ablation under the KV cache.

Per prompt: decode up to ``max_new_tokens`` tokens (greedy, or sampled with temperature, top-p
and a seed), one forward per new token with the model layer's prefix KV cache (never a
re-forward of the prefix). Per step: the chosen token, its probability, rank and the entropy of
the model's distribution; the logit lens at the position that predicted it, for every layer
(final norm recomputed per row, one unembedding per layer and step), keeping the chosen token's
probability and rank, the entropy and the top-k tokens per layer, not whole distributions.
Interventions (analyses/generation/interventions.py) act on the prompt forward and on every
step alike.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import (
    Analysis,
    AnalysisSpec,
    CancelEvent,
    Filter,
    Heatmap,
    Input,
    Invariant,
    Line,
    Order,
    Progress,
    Result,
    ResultTable,
    RunValue,
    Table,
    check_cancel,
    columns,
    param,
)
from analyses.core.errors import BadInput, Cancelled
from analyses.generation import interventions as iv
from analyses.model.tokens import bos_param

LOG2 = 0.6931471805599453
DECODING = ("greedy", "sample")


@dataclass(frozen=True)
class Params:
    max_new_tokens: int = param(20, "tokens to generate (one forward each, with the KV cache)")
    decoding: str = param("greedy", "greedy or sample", DECODING)
    temperature: float = param(1.0, "sampling temperature (decoding=sample)")
    top_p: float = param(1.0, "nucleus sampling: keep the smallest set of tokens with this much probability (decoding=sample)")
    seed: int = param(0, "random seed of the sampler (recorded: a sampled run repeats with it)")
    stop: str | None = param(None, "stop once the generated text contains this string", empty_is_none=False)
    stop_at_eos: bool = param(True, "stop after the model's end-of-sequence token")
    top_k: int = param(5, "lens: tokens kept per layer and step")
    steer: str | None = param(None, "steering vector: a contrast pair 'A|B' (mean residual of A minus B) or a .npy/.pt file [d_model]")
    steer_layer: int | None = param(None, "block whose incoming residual is steered (default: a quarter of the depth)")
    steer_coef: float = param(1.0, "steering coefficient (the vector is multiplied by it; on SmolLM2 and Gemma 3 a contrast pair's vector at 2 or more breaks the text)")
    steer_positions: str = param("all", "positions steered: all, or a comma list of absolute positions")
    ablate: str | None = param(None, "ablate: comma list of h<layer>.<head>, mlp<layer>, n<layer>.<neuron>")
    ablation: str = param("zero", "ablation value: zero, or mean over the prompt (a run without interventions)", iv.ABLATION_MODES)
    clamp: str | None = param(None, "clamped direction: a contrast pair 'A|B' or a .npy/.pt file [d_model]")
    clamp_layer: int | None = param(None, "block whose incoming residual is clamped (default: a quarter of the depth)")
    clamp_value: float = param(0.0, "value the residual's projection on the unit clamp direction is set to")
    prepend_bos: str = bos_param()

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise BadInput(f"parameter 'max_new_tokens' must be at least 1, not {self.max_new_tokens}")
        if self.stop is not None and self.stop == "":
            raise BadInput("parameter 'stop' is empty; give a string to stop at, or leave it unset")
        for name in ("temperature", "top_p", "steer_coef", "clamp_value"):
            iv.finite(float(getattr(self, name)), name)
        if self.decoding == "sample" and self.temperature <= 0:
            raise BadInput(f"parameter 'temperature' must be above 0 for sampling, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BadInput(f"parameter 'top_p' must be in (0, 1], not {self.top_p}")
        if self.top_k < 1:
            raise BadInput(f"parameter 'top_k' must be at least 1, not {self.top_k}")
        for name in ("steer", "clamp"):
            text = getattr(self, name)
            if text is not None and not iv.is_file_source(text):
                iv.contrast_pair(text, name)
        iv.parse_positions(self.steer_positions)
        iv.parse_ablate(self.ablate)


SPEC = AnalysisSpec(
    name="generate",
    title="Generation with the lens (steering, ablation)",
    description=(
        "Generate from a prompt one token at a time with the KV cache (greedy or sampled), with "
        "optional steering (a contrast-pair or file vector added at a layer), head / MLP / neuron "
        "ablation and a clamped direction, applied alike to the prompt and every new token. Per "
        "step: the token, its probability, rank and the entropy; the logit lens at the predicting "
        "position for every layer (the chosen token's probability and rank, the top-k)."
    ),
    input_kinds=("prompt", "prompt_set"),
    tables=(
        ResultTable("generation_steps", columns(
            "input_id:INTEGER", "step:INTEGER", "pos:INTEGER", "token_id:INTEGER", "token:VARCHAR", "prob:DOUBLE",
            "rank:INTEGER", "entropy_bits:DOUBLE"),
            "one row per generated token: pos is its position in the sequence; prob, rank (1 = top) and entropy of the model's own distribution"),
        ResultTable("generation_lens", columns(
            "input_id:INTEGER", "step:INTEGER", "pos:INTEGER", "layer:INTEGER", "chosen_prob:DOUBLE", "chosen_rank:INTEGER",
            "entropy_bits:DOUBLE", "top_token_id:INTEGER", "top_token:VARCHAR", "top_prob:DOUBLE"),
            "the lens at the position that predicted step's token: layer 0..n_layers-1 = residual entering that block, "
            "layer n_layers = the final residual (the model's own distribution)"),
        ResultTable("generation_topk", columns(
            "input_id:INTEGER", "step:INTEGER", "layer:INTEGER", "k:INTEGER", "token_id:INTEGER", "token:VARCHAR", "prob:DOUBLE"),
            "the lens' top-k tokens per step and layer (k = 1 is the top)"),
    ),
    charts=(
        Heatmap("Lens: the chosen token's probability (layer x generated token)", "generation_lens", "chosen_prob", x="pos", y="layer", vmin=0.0, vmax=1.0),
        Line("Probability of each generated token", "generation_steps", "prob", x="step"),
        Line("Entropy of the model's distribution at each step (bits)", "generation_steps", "entropy_bits", x="step"),
        Table("Generated tokens", "generation_steps", "token", order=(Order("step"),), limit=64),
        Line("Lens at the last step: the chosen token's probability by layer", "generation_lens", "chosen_prob", x="layer",
             filters=(Filter("step", "=", RunValue("step")),)),
    ),
)


@dataclass
class Generation:
    """One prompt's decoding: the prompt ids, the generated ids, why it stopped, and the step rows."""

    prompt_ids: list[int]
    new_ids: list[int]
    stop_reason: str
    steps: dict
    lens: dict
    topk: dict
    final_logits: list


def default_layer(value: int | None, n_layers: int) -> int:
    return n_layers // 4 if value is None else value


def build_plan(model, params: Params) -> tuple[Any, dict]:
    """The resolved interventions (engine.Plan) and their record for the run's notes."""
    from analyses.generation.engine import Clamp, Plan, Steer

    plan = Plan(ablation=iv.parse_ablate(params.ablate), ablation_mode=params.ablation)
    record: dict = {}
    if params.steer is not None:
        layer = default_layer(params.steer_layer, model.n_layers)
        vector = iv.resolve_vector(model, params.steer, layer, "steer")
        plan.steer = Steer(layer, (vector.tensor * params.steer_coef).to(model.device), iv.parse_positions(params.steer_positions))
        record["steer"] = {"source": vector.source, "layer": layer, "coef": params.steer_coef, "positions": params.steer_positions,
                           "vector_norm": float(vector.tensor.norm()), **vector.detail}
    if params.clamp is not None:
        layer = default_layer(params.clamp_layer, model.n_layers)
        vector = iv.resolve_vector(model, params.clamp, layer, "clamp")
        norm = float(vector.tensor.norm())
        if not norm > 0:
            raise BadInput("parameter 'clamp': the direction is zero")
        plan.clamp = Clamp(layer, (vector.tensor / norm).to(model.device), params.clamp_value)
        record["clamp"] = {"source": vector.source, "layer": layer, "value": params.clamp_value, "direction_norm": norm, **vector.detail}
    if not plan.ablation.empty:
        record["ablate"] = {"heads": [list(x) for x in plan.ablation.heads], "mlps": list(plan.ablation.mlps),
                            "neurons": [list(x) for x in plan.ablation.neurons], "mode": params.ablation}
    return plan, record


def generate(model, prompt_ids: Any, params: Params, plan: Any, cancel: CancelEvent | None = None,
             on_step: Any = None, keep_logits: bool = False) -> Generation:
    """Decode from prompt ids [1, T]: one forward per new token with the prefix cache; the lens per step."""
    import torch

    from analyses.generation.engine import Decoder, Sampler, bare_blocks, lens_logits

    decoder = Decoder(model, plan)
    temperature = params.temperature if params.decoding == "sample" else 0.0
    sampler = Sampler(temperature, params.top_p, params.seed)
    eos = model.tokenizer.eos_token_id if params.stop_at_eos else None
    n_rows = model.n_layers + 1
    k = min(params.top_k, model.d_vocab)
    prompt = prompt_ids.reshape(-1).tolist()
    steps: dict = {name: [] for name in ("step", "pos", "token_id", "prob", "rank", "entropy_bits")}
    lens: dict = {name: [] for name in ("step", "pos", "layer", "chosen_prob", "chosen_rank", "entropy_bits", "top_token_id", "top_prob")}
    topk: dict = {name: [] for name in ("step", "layer", "k", "token_id", "prob")}
    new_ids: list[int] = []
    final_logits: list = []
    stop_reason = "max_new_tokens"
    chunk, first, prefixes = prompt_ids, 0, {}
    buffer = None  # the lens' logits [n_layers + 1, vocab], rewritten every step (nothing keeps a view of it)
    with torch.inference_mode(), bare_blocks(model), \
            _kept_on_cancel(lambda: Generation(prompt, list(new_ids), "cancelled", steps, lens, topk, final_logits)):
        decoder.fill_means(prompt_ids)
        for step in range(params.max_new_tokens):
            check_cancel(cancel)
            rows, prefixes = decoder.forward(chunk, first, prefixes, cancel)
            lens_out = lens_logits(model, rows, buffer)
            logits = buffer = lens_out.logits
            token = sampler.choose(logits[-1])
            chosen, ranks, top_p, top_ids, entropy = _lens_stats(logits, token, k, lens_out.lse, lens_out.mean_logit)
            pos = len(prompt) + step
            steps["step"].append(step)
            steps["pos"].append(pos)
            steps["token_id"].append(token)
            steps["prob"].append(float(chosen[-1]))
            steps["rank"].append(int(ranks[-1]))
            steps["entropy_bits"].append(float(entropy[-1]))
            lens["step"].extend([step] * n_rows)
            lens["pos"].extend([pos] * n_rows)
            lens["layer"].extend(range(n_rows))
            lens["chosen_prob"].extend(chosen.tolist())
            lens["chosen_rank"].extend(ranks.tolist())
            lens["entropy_bits"].extend(entropy.tolist())
            lens["top_token_id"].extend(top_ids[:, 0].tolist())
            lens["top_prob"].extend(top_p[:, 0].tolist())
            topk["step"].extend([step] * (n_rows * k))
            topk["layer"].extend([layer for layer in range(n_rows) for _ in range(k)])
            topk["k"].extend(list(range(1, k + 1)) * n_rows)
            topk["token_id"].extend(top_ids.reshape(-1).tolist())
            topk["prob"].extend(top_p.reshape(-1).tolist())
            if keep_logits:
                final_logits.append(logits[-1].clone())
            new_ids.append(token)
            if on_step is not None:
                on_step(step, token)
            first += int(chunk.shape[-1])
            chunk = torch.tensor([[token]], dtype=torch.long, device=prompt_ids.device)
            if eos is not None and token == eos:
                stop_reason = "eos"
                break
            if params.stop is not None and params.stop in model.tokenizer.decode(new_ids):
                stop_reason = "stop"
                break
    return Generation(prompt, new_ids, stop_reason, steps, lens, topk, final_logits)


def _lens_stats(logits: Any, token: int, k: int, lse: Any = None, mean_logit: Any = None) -> tuple[Any, Any, Any, Any, Any]:
    """Per row of logits [R, V]: the chosen token's probability and rank (1 = top), the top-k
    probabilities and ids, the entropy in bits (H = lse - sum(p * logit)). ``lse`` and
    ``mean_logit`` [R] come from the unembedding (engine.lens_logits) where it took them slice by
    slice; otherwise they take few passes over [R, V] (Gemma's vocabulary is 262k): the row
    maximum, one exp of the shifted logits for both the normaliser and the entropy. Rank and top-k
    are read from the logits themselves."""
    import torch

    if lse is None or mean_logit is None:
        top = logits.amax(-1, keepdim=True)
        shifted = (logits - top).exp_()
        total = shifted.sum(-1)
        lse = top[:, 0] + total.log()
        weighted = torch.linalg.vecdot(shifted, logits)
        if bool(weighted.isnan().any()):  # a -inf logit: 0 * -inf; its probability is 0, so it adds 0
            weighted = shifted.mul_(logits).nansum(-1)
        mean_logit = weighted / total
    chosen_logit = logits[:, token : token + 1]
    chosen = (chosen_logit[:, 0] - lse).exp()
    ranks = (logits > chosen_logit).sum(-1) + 1
    top_logits, top_ids = logits.topk(k, dim=-1)
    top_p = (top_logits - lse[:, None]).exp()
    entropy = (lse - mean_logit) / LOG2
    return chosen, ranks, top_p, top_ids, entropy


@contextlib.contextmanager
def _kept_on_cancel(made: Any) -> Iterator[None]:
    """A cancel inside a decoding loop carries the steps made so far (``made()``, a Generation
    whose stop_reason is 'cancelled') as Cancelled.partial. A cancel inside a step's forward
    leaves that step out: every kept step is whole."""
    try:
        yield
    except Cancelled as stop:
        if stop.partial is None:
            stop.partial = made()
        raise


class Generate(Analysis):
    Params = Params
    spec = SPEC
    invariant_checks = (
        Invariant("invariant_final_lens_row", 1e-6, "the lens' last row (the final residual) gives the chosen token the probability the step records"),
        Invariant("invariant_greedy_rank", 0.0, "greedy decoding: every chosen token has rank 1 in the model's distribution"),
    )
    # Each prompt's generation depends on that prompt alone (the sampler is seeded per prompt), so a
    # prompt set runs in shards of prompts and a cancelled run keeps the prompts it finished.
    sharded = True

    def check(self, model, inputs: list[Input], params: Params) -> None:
        n_layers = model.n_layers
        if params.steer is not None:
            iv.check_layer(default_layer(params.steer_layer, n_layers), n_layers, "steer_layer")
            if iv.is_file_source(params.steer):
                iv.load_vector_file(params.steer, model.d_model, "steer")
        if params.clamp is not None:
            iv.check_layer(default_layer(params.clamp_layer, n_layers), n_layers, "clamp_layer")
            if iv.is_file_source(params.clamp):
                iv.load_vector_file(params.clamp, model.d_model, "clamp")
        cfg = model.bridge.cfg
        iv.check_ablation(iv.parse_ablate(params.ablate), n_layers, int(cfg.n_heads), int(cfg.d_mlp))
        for item in inputs:
            length = int(model.to_tokens(item.text, prepend_bos=params.prepend_bos).shape[-1])
            if length == 0:
                raise BadInput(f"input {item.input_id}: the prompt has no tokens")
            room = model.n_ctx - length
            if params.max_new_tokens > room:
                raise BadInput(f"max_new_tokens {params.max_new_tokens} is above the context: the prompt has {length} tokens "
                               f"and the model's context is {model.n_ctx} (at most {max(0, room)} new tokens)")

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        from analyses.core.tables import arrow_table, tokens_table_of

        plan, record = build_plan(model, params)
        tables: dict[str, dict] = {table.name: {name: [] for name, _ in table.columns} for table in SPEC.tables}
        sequences: list = []
        stops: dict = {}

        def result(partial: str = "") -> Result:
            result_tables = {table.name: arrow_table(table, tables[table.name]) for table in SPEC.tables}
            notes = {**model.bos(params.prepend_bos).record(), "interventions": record, "generations": stops,
                     "decoding": {"mode": params.decoding, "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed},
                     "kv_cache": "prefix cache: one forward per new token", "lens": "proper (final norm recomputed per layer)"}
            return Result(result_tables, tokens_table_of(sequences), {**notes, "partial": partial} if partial else notes)

        total = len(inputs) * params.max_new_tokens
        item = inputs[0] if inputs else None
        try:
            for index, item in enumerate(inputs):
                check_cancel(cancel)
                prompt_ids = model.to_tokens(item.text, prepend_bos=params.prepend_bos)
                base = index * params.max_new_tokens

                made: list[int] = []

                def on_step(step: int, token: int, base: int = base, index: int = index, made: list[int] = made) -> None:
                    # The progress note streams the text as it is made (its last characters, on one line).
                    made.append(token)
                    tail = " ".join(model.tokenizer.decode(made).split())[-48:]
                    progress(base + step + 1, total, f"input {index + 1}/{len(inputs)}: token {step + 1}/{params.max_new_tokens} …{tail}")

                _add(model, tables, sequences, stops, item.input_id, generate(model, prompt_ids, params, plan, cancel, on_step))
        except Cancelled as stop:
            # A cancel keeps this shard's finished prompts and the whole steps made so far of the one cut short.
            steps, finished = 0, len(stops)
            if isinstance(stop.partial, Generation) and item is not None:
                _add(model, tables, sequences, stops, item.input_id, stop.partial)
                steps = len(stop.partial.new_ids)
            where = f"input {item.input_id} cut short after {steps} of {params.max_new_tokens} steps" if item is not None else "no input"
            raise Cancelled(str(stop) or "cancelled", partial=result(f"{finished} of {len(inputs)} inputs finished; {where}")) from None
        progress(total, total, "done")
        return result()

    def invariants(self, params: Params, read: Any, notes: dict) -> list[tuple]:
        steps = read("generation_steps", ["input_id", "step", "prob", "rank"])
        lens = read("generation_lens", ["input_id", "step", "layer", "chosen_prob"])
        if steps is None or steps.num_rows == 0 or lens is None:
            return [("invariant_final_lens_row", None, 1e-6, None, "skipped: no steps"),
                    ("invariant_greedy_rank", None, 0.0, None, "skipped: no steps")]
        last = max(lens.column("layer").to_pylist())
        final = {(i, s): p for i, s, layer, p in zip(*(lens.column(c).to_pylist() for c in ("input_id", "step", "layer", "chosen_prob"))) if layer == last}
        worst = max(abs(final[(i, s)] - p) for i, s, p in zip(*(steps.column(c).to_pylist() for c in ("input_id", "step", "prob"))))
        rows = [("invariant_final_lens_row", worst, 1e-6, worst <= 1e-6, f"max |lens row {last} - step probability| over every step")]
        if params.decoding == "greedy":
            worst_rank = max(steps.column("rank").to_pylist())
            rows.append(("invariant_greedy_rank", float(worst_rank - 1), 0.0, worst_rank == 1, "largest rank of a greedy token, minus 1"))
        else:
            rows.append(("invariant_greedy_rank", None, 0.0, None, "skipped: sampled decoding"))
        return rows


def _add(model, tables: dict, sequences: list, stops: dict, input_id: int, gen: Generation) -> None:
    """One prompt's generation into the result's columns, its tokens and its note."""
    stops[str(input_id)] = {"stop_reason": gen.stop_reason, "new_tokens": len(gen.new_ids), "prompt_tokens": len(gen.prompt_ids),
                            "text": model.tokenizer.decode(gen.new_ids)}
    ids = gen.prompt_ids + gen.new_ids
    sequences.append((input_id, ids, model.token_strings(ids)))
    strings = _strings(model, gen)
    for name, source in (("generation_steps", gen.steps), ("generation_lens", gen.lens), ("generation_topk", gen.topk)):
        target = tables[name]
        count = len(next(iter(source.values())))
        target["input_id"].extend([input_id] * count)
        for key, values in source.items():
            target[key].extend(values)
    tables["generation_steps"]["token"].extend(strings[i] for i in gen.steps["token_id"])
    tables["generation_lens"]["top_token"].extend(strings[i] for i in gen.lens["top_token_id"])
    tables["generation_topk"]["token"].extend(strings[i] for i in gen.topk["token_id"])


def _strings(model, gen: Generation) -> dict:
    ids = sorted(set(gen.steps["token_id"]) | set(gen.lens["top_token_id"]) | set(gen.topk["token_id"]))
    return dict(zip(ids, model.token_strings(ids)))


ANALYSIS = Generate()
