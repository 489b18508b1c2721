"""fact-lookup's run: the clean pass, the made-up names, the ablations and the hidden-name passes,
then probes and tables. Every pass is batched over the whole table (or the intervention subset)."""
from __future__ import annotations

import functools
import warnings
from typing import Any

from analyses.core.contract import CancelEvent, Input, Progress, Result, check_cancel
from analyses.fact_lookup import engine, probes
from analyses.fact_lookup.tables import arrow_table
from analyses.model.tokens import pad_id as model_pad_id


def neuron_out_weights(model, layer: int) -> Any:
    """Block layer's MLP output weights [d_mlp, d_model]: row n is what neuron n writes."""
    from analyses.model.weights import model_weights

    return model_weights(model).layers[layer].W_out.cpu()


def head_out_weights(model, layer: int, n_heads: int) -> Any:
    """Block layer's attention output weights per head [n_heads, d_head, d_model]."""
    from analyses.model.weights import model_weights

    return model_weights(model).layers[layer].W_O.cpu()


def batch_count(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


ALWAYS_TESTED = 4  # layers 0..3 are ablated and hidden whatever the stride


def strided_layers(end: int, stride: int) -> list[int]:
    """Layers 0..end-1 every stride-th, always with the first ALWAYS_TESTED layers."""
    return sorted(set(range(0, end, stride)) | set(range(min(ALWAYS_TESTED, end))))


def decompose(clean: Any, ablated: Any, labels: Any) -> tuple[Any, Any, Any]:
    """Per entity, from answer-token log-probabilities [N, A] (over the whole vocabulary): the drop
    in log p(correct), in log of the answer-set mass and in log p(correct) renormalised within the
    set. log p = log mass + log p_within, so the first is the sum of the other two."""
    import torch

    rows = torch.arange(len(labels))
    mass_clean, mass_ablated = clean.logsumexp(-1), ablated.logsumexp(-1)
    total = clean[rows, labels] - ablated[rows, labels]
    leaves = mass_clean - mass_ablated
    within = (clean[rows, labels] - mass_clean) - (ablated[rows, labels] - mass_ablated)
    return total.numpy(), leaves.numpy(), within.numpy()


def bootstrap_means(values: Any, n_bootstrap: int, seed: int) -> tuple[Any, Any]:
    """95% percentile intervals of the column means of values [N, m], entities resampled with replacement (paired)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if n_bootstrap < 1 or not len(values):
        nan = np.full(values.shape[1], np.nan)
        return nan, nan
    rows = np.random.default_rng(seed).integers(0, len(values), (n_bootstrap, len(values)))
    means = values[rows].mean(1)  # [B, m]
    return np.quantile(means, 0.025, axis=0), np.quantile(means, 0.975, axis=0)


def probe_measures(scored: Any) -> list[tuple[str, float, float, float, float]]:
    """(measure, accuracy, ci_low, ci_high, p_value) rows of one probe score."""
    nan = float("nan")
    low, high = scored.null_interval()
    return [("probe", scored.accuracy, scored.ci_low, scored.ci_high, scored.p_value), ("control", scored.control, low, high, nan),
            ("null_q95", scored.null_q95, nan, nan, nan), ("majority", scored.majority, nan, nan, nan)]


class Ticker:
    """Progress counted in forward batches, with the current stage as the note."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done, self.note = progress, total, 0, ""

    def __call__(self) -> None:
        self.done += 1
        self.progress(min(self.done, self.total), self.total, self.note)


def capture(model, encoded, rows, sites: tuple[str, ...], batch_size: int, answer_ids, cancel, tick, top1: list | None = None) -> tuple[dict, Any]:
    """One pass over rows capturing the named sites; returns the targets and the answer log-probs
    (and fills top1 with the vocabulary top-1 per batch, as engine.run_batches does)."""
    import torch

    cfg = model.bridge.cfg
    n, n_layers, d = len(encoded.ids), model.n_layers, model.d_model
    shapes = {
        "resid_post": (n_layers, n, d), "attn_out": (n_layers, n, d), "mlp_out": (n_layers, n, d),
        "neurons": (n_layers, n, neuron_out_weights(model, 0).shape[0]),
        "concat": (n_layers, n, cfg.n_heads), "final_attn": (n_layers, n, cfg.n_heads),
        "z": (n_layers, n, cfg.n_heads, cfg.d_head), "final_resid": (n, d),
    }
    targets = {site: torch.zeros(shapes[site]) for site in sites}
    pad_id = model_pad_id(model)  # the model layer's one pad policy
    batches = engine.make_batches(encoded, rows, batch_size, pad_id, model.device)
    logprobs = engine.run_batches(model, batches, engine.hooks_for(engine.capture_spec(targets, n_layers)), answer_ids, cancel, tick, top1=top1)
    return targets, logprobs


def compute(model, inputs: list[Input], params, progress: Progress, cancel: CancelEvent, state: dict | None = None) -> Result:
    import numpy as np
    import torch

    from analyses.core.tables import tokens_table_of
    from analyses.fact_lookup import prompts
    from analyses.inputs.entities import Entity, entities_of_inputs, recombine

    entities = entities_of_inputs(inputs)
    choice = state if state is not None else prompts.choice_state(model, entities, params, cancel)  # without the prepare step (tests)
    entities = prompts.prompted(str(choice["prompt"]), entities, model.tokenizer, model.bos(params.prepend_bos).prepend)
    values = sorted({entity.value for entity in entities})
    labels = np.array([values.index(entity.value) for entity in entities])
    tokenizer, n_layers, bs = model.tokenizer, model.n_layers, params.batch_size
    answer_ids = engine.answer_token_ids(tokenizer, values)
    bos = model.bos(params.prepend_bos)
    encoded = engine.encode(tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], bos.token_id if bos.prepend else None)
    n = len(entities)
    made_up = recombine([e.name for e in entities])
    fake = [Entity(item.name, entities[item.first_of].value, entities[item.first_of].template) for item in made_up]
    fake_encoded = engine.encode(tokenizer, [e.prompt for e in fake], [e.name_span for e in fake], bos.token_id if bos.prepend else None) if fake else None
    step = params.layer_stride
    ablate_layers = strided_layers(n_layers, step)
    concat_layer = params.concat_layer if params.concat_layer is not None else n_layers // 2
    hide_through = strided_layers(concat_layer + 1, step)
    k = n if params.intervention_entities == 0 else min(n, params.intervention_entities)
    subset = sorted({int(i) for i in np.linspace(0, n - 1, k).round()})
    tick = Ticker(progress, batch_count(n, bs) * (1 + len(hide_through)) + batch_count(len(fake), bs) + batch_count(len(subset), bs) * 2 * len(ablate_layers))

    tick.note = "clean pass"
    sites = ("resid_post", "attn_out", "mlp_out", "neurons", "concat", "final_attn", "z", "final_resid")
    top1: list = []
    clean, logprobs = capture(model, encoded, list(range(n)), sites, bs, answer_ids, cancel, tick, top1=top1)
    correct_lp = logprobs[torch.arange(n), torch.tensor(labels)].numpy()
    predicted = logprobs.argmax(-1).numpy()
    set_mass = logprobs.logsumexp(-1)
    top1_ids, top1_lp = torch.cat([ids for ids, _ in top1]), torch.cat([lp for _, lp in top1])
    correct_ids = np.array(answer_ids)[labels]

    tick.note = "probes"
    score = functools.partial(probes.score, folds=params.folds, c=params.c, seed=params.seed, n_permutations=params.n_permutations, n_bootstrap=params.n_bootstrap)
    probe_rows: dict[str, list] = {key: [] for key in ("site", "layer", "measure", "accuracy", "ci_low", "ci_high", "p_value", "n_permutations", "n_entities", "folds")}
    null_rows: dict[str, list] = {key: [] for key in ("site", "layer", "permutation", "accuracy")}
    for site in params.site_list():
        features = clean[site].numpy()
        for layer in range(n_layers):
            check_cancel(cancel)
            scored = score(features[layer], labels)
            for measure, value, low, high, p in probe_measures(scored):
                for key, item in zip(probe_rows, (site, layer, measure, value, low, high, p, params.n_permutations, n, params.folds)):
                    probe_rows[key].append(item)
            for key, items in zip(null_rows, ([site] * len(scored.null), [layer] * len(scored.null), range(len(scored.null)), scored.null)):
                null_rows[key].extend(items)

    tick.note = "made-up names"
    fake_targets = capture(model, fake_encoded, list(range(len(fake))), ("mlp_out", "neurons"), bs, None, cancel, tick)[0] if fake else {}

    tick.note = "ablations"
    sub_labels = torch.tensor(labels[subset])
    clean_sub = logprobs[subset]
    columns = ("component", "layer", "logprob_drop", "logprob_drop_low", "logprob_drop_high", "set_mass_drop", "set_mass_drop_low", "set_mass_drop_high",
               "within_set_drop", "within_set_drop_low", "within_set_drop_high", "top1_among_answers_clean", "top1_among_answers_ablated",
               "top1_among_answers_drop", "top1_vocab_clean", "top1_vocab_ablated", "n_entities")
    ablation_rows: dict[str, list] = {key: [] for key in columns}
    pad_id = model_pad_id(model)
    sub_batches = engine.make_batches(encoded, subset, bs, pad_id, model.device)
    sub_correct_ids = torch.as_tensor(correct_ids[subset])
    top1_clean = float((clean_sub.argmax(-1) == sub_labels).double().mean())
    vocab_clean = float((top1_ids[subset] == sub_correct_ids).double().mean())
    for component in ("mlp", "attn"):
        site = f"{component}_out"
        for layer in ablate_layers:
            mean = clean[site][layer].mean(0)
            hook_name = engine.SITE_HOOKS[site].format(layer=layer)
            ablated_top1: list = []
            ablated = engine.run_batches(model, sub_batches, lambda batch, mean=mean, hook_name=hook_name: [(hook_name, engine.replace_hook(mean, batch))], answer_ids, cancel, tick, top1=ablated_top1)
            parts = np.stack(decompose(clean_sub, ablated, sub_labels), 1)  # [n, 3]: total, leaves the set, within the set
            low, high = bootstrap_means(parts, params.n_bootstrap, params.seed)
            means = parts.mean(0)
            top1 = float((ablated.argmax(-1) == sub_labels).double().mean())
            vocab = float((torch.cat([ids for ids, _ in ablated_top1]) == sub_correct_ids).double().mean())
            row = (component, layer, means[0], low[0], high[0], means[1], low[1], high[1], means[2], low[2], high[2],
                   top1_clean, top1, top1_clean - top1, vocab_clean, vocab, len(subset))
            for key, item in zip(ablation_rows, row):
                ablation_rows[key].append(item)

    tick.note = "hidden name tokens"
    hidden_rows: dict[str, list] = {key: [] for key in ("hidden_through", "probe_layer", "measure", "accuracy", "ci_low", "ci_high", "p_value")}
    baseline = score(clean["resid_post"][concat_layer].numpy(), labels)
    multi = np.array([encoded.last_name_pos[i] > encoded.first_name_pos[i] for i in range(n)])
    hiding_works = True
    all_batches = engine.make_batches(encoded, list(range(n)), bs, pad_id, model.device)
    for through in [-1] + hide_through:
        if through == -1:
            scored = baseline
        elif not hiding_works:
            scored = None
        else:
            state = torch.zeros(1, n, model.d_model)
            spec = [(f"blocks.{layer}.attn.hook_pattern", lambda batch: engine.hide_name_hook(batch)) for layer in range(through + 1)]
            spec.append((engine.SITE_HOOKS["resid_post"].format(layer=concat_layer), lambda batch, state=state: engine.capture_hook(state, 0, batch, "last_name")))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                engine.run_batches(model, all_batches, engine.hooks_for(spec), None, cancel, tick, stop_at_layer=concat_layer + 1)
            discarded = any("discarded" in str(item.message) for item in caught)
            unchanged = multi.any() and torch.equal(state[0][multi], clean["resid_post"][concat_layer][multi])
            hiding_works = not (discarded or (through == 0 and unchanged))
            scored = score(state[0].numpy(), labels) if hiding_works else None
        for measure, value, low, high, p in probe_measures(scored) if scored is not None else [(m, *[float("nan")] * 4) for m in ("probe", "control", "null_q95")]:
            if measure == "majority":
                continue
            for key, item in zip(hidden_rows, (through, concat_layer, measure, value, low, high, p)):
                hidden_rows[key].append(item)

    from analyses.fact_lookup.summaries import concat_table, heads_table, neuron_table, norms_table, summary_table

    tables = {
        "fact_lookup_entities": arrow_table("fact_lookup_entities", {
            "input_id": [item.input_id for item in inputs], "entity": [e.name for e in entities], "attribute": [e.value for e in entities],
            "predicted_among_answers": [values[i] for i in predicted], "correct_logprob": correct_lp, "top1_among_answers_correct": predicted == labels,
            "answer_set_prob": set_mass.exp().numpy(), "correct_within_set_prob": np.exp(correct_lp - set_mass.numpy()),
            "top1_token": model.token_strings(top1_ids.tolist()), "top1_token_id": top1_ids.numpy(), "top1_prob": top1_lp.exp().numpy(),
            "top1_is_correct": top1_ids.numpy() == correct_ids,
            "n_name_tokens": [encoded.last_name_pos[i] - encoded.first_name_pos[i] + 1 for i in range(n)], "last_name_pos": list(encoded.last_name_pos),
        }),
        "fact_lookup_probe": arrow_table("fact_lookup_probe", probe_rows),
        "fact_lookup_probe_null": arrow_table("fact_lookup_probe_null", null_rows),
        "fact_lookup_concat": concat_table(clean["concat"].numpy(), multi),
        "fact_lookup_hidden": arrow_table("fact_lookup_hidden", hidden_rows),
        "fact_lookup_ablation": arrow_table("fact_lookup_ablation", ablation_rows),
        "fact_lookup_norms": norms_table(clean["mlp_out"], fake_targets.get("mlp_out")),
        "fact_lookup_neurons": neuron_table(model, clean, fake_targets, made_up, labels, params),
        "fact_lookup_heads": heads_table(model, clean, labels, answer_ids),
        "fact_lookup_recombined": arrow_table("fact_lookup_recombined", {
            "name": [m.name for m in made_up], "first_of": [inputs[m.first_of].input_id for m in made_up], "last_of": [inputs[m.last_of].input_id for m in made_up],
        }),
    }
    tables["fact_lookup_prompts"] = prompts.prompts_table(choice)
    untested = sorted(set(range(n_layers)) - set(ablate_layers))
    tables["fact_lookup_summary"] = summary_table(tables)
    progress(tick.total, tick.total, "done")
    tokens = tokens_table_of((item.input_id, list(ids), model.token_strings(list(ids))) for item, ids in zip(inputs, encoded.ids))
    notes = {
        **bos.record(), "prompt": str(choice["prompt"]), "prompt_measures": {m.name: {"answer_set_prob": m.answer_set_prob, "top1_in_set": m.top1_in_set}
                                                                          for m in prompts.measures_of_state(choice)},
        "answer_tokens": dict(zip(values, answer_ids)), "concat_layer": concat_layer,
        "intervention_entities": len(subset), "made_up_names": len(made_up), "ablated_layers": ablate_layers, "untested_layers": untested,
        "hidden_through": hide_through,
        "hiding": "pattern hook honoured" if hiding_works else "this family's pattern hook is read-only: hidden-name accuracies are NaN",
    }
    return Result(tables=tables, tokens=tokens, notes=notes)
