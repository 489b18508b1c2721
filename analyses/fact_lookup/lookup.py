"""fact-lookup's run: the clean pass, the made-up names, the ablations and the hidden-name passes,
then probes and tables. Every pass is batched over the whole table (or the intervention subset)."""
from __future__ import annotations

import warnings
from typing import Any

from analyses.core.contract import CancelEvent, Input, Progress, Result
from analyses.fact_lookup import engine, probes
from analyses.fact_lookup.tables import arrow_table


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


class Ticker:
    """Progress counted in forward batches, with the current stage as the note."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done, self.note = progress, total, 0, ""

    def __call__(self) -> None:
        self.done += 1
        self.progress(min(self.done, self.total), self.total, self.note)


def capture(model, encoded, rows, sites: tuple[str, ...], batch_size: int, answer_ids, cancel, tick) -> tuple[dict, Any]:
    """One pass over rows capturing the named sites; returns the targets and the answer log-probs."""
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
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    batches = engine.make_batches(encoded, rows, batch_size, pad_id, model.device)
    logprobs = engine.run_batches(model, batches, engine.hooks_for(engine.capture_spec(targets, n_layers)), answer_ids, cancel, tick)
    return targets, logprobs


def compute(model, inputs: list[Input], params, progress: Progress, cancel: CancelEvent) -> Result:
    import numpy as np
    import torch

    from analyses.core.tables import tokens_table_of
    from analyses.inputs.entities import Entity, entities_of_inputs, recombine

    entities = entities_of_inputs(inputs)
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
    ablate_layers = list(range(0, n_layers, step))
    concat_layer = params.concat_layer if params.concat_layer is not None else n_layers // 2
    hide_through = list(range(0, concat_layer + 1, step))
    k = n if params.intervention_entities == 0 else min(n, params.intervention_entities)
    subset = sorted({int(i) for i in np.linspace(0, n - 1, k).round()})
    tick = Ticker(progress, batch_count(n, bs) * (1 + len(hide_through)) + batch_count(len(fake), bs) + batch_count(len(subset), bs) * 2 * len(ablate_layers))

    tick.note = "clean pass"
    sites = ("resid_post", "attn_out", "mlp_out", "neurons", "concat", "final_attn", "z", "final_resid")
    clean, logprobs = capture(model, encoded, list(range(n)), sites, bs, answer_ids, cancel, tick)
    correct_lp = logprobs[torch.arange(n), torch.tensor(labels)].numpy()
    predicted = logprobs.argmax(-1).numpy()

    tick.note = "probes"
    probe_rows: dict[str, list] = {key: [] for key in ("site", "layer", "measure", "accuracy", "n_entities", "folds")}
    for site in params.site_list():
        features = clean[site].numpy()
        for layer in range(n_layers):
            scored = probes.score(features[layer], labels, params.folds, params.c, params.seed)
            for measure, value in (("probe", scored.accuracy), ("control", scored.control), ("majority", scored.majority)):
                for key, item in zip(probe_rows, (site, layer, measure, value, n, params.folds)):
                    probe_rows[key].append(item)

    tick.note = "made-up names"
    fake_targets = capture(model, fake_encoded, list(range(len(fake))), ("mlp_out", "neurons"), bs, None, cancel, tick)[0] if fake else {}

    tick.note = "ablations"
    sub_labels = torch.tensor(labels[subset])
    clean_sub = logprobs[subset]
    ablation_rows: dict[str, list] = {key: [] for key in ("component", "layer", "logprob_drop", "top1_clean", "top1_ablated", "top1_drop", "n_entities")}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sub_batches = engine.make_batches(encoded, subset, bs, pad_id, model.device)
    top1_clean = float((clean_sub.argmax(-1) == sub_labels).double().mean())
    for component in ("mlp", "attn"):
        site = f"{component}_out"
        for layer in ablate_layers:
            mean = clean[site][layer].mean(0)
            hook_name = engine.SITE_HOOKS[site].format(layer=layer)
            ablated = engine.run_batches(model, sub_batches, lambda batch, mean=mean, hook_name=hook_name: [(hook_name, engine.replace_hook(mean, batch))], answer_ids, cancel, tick)
            rows = torch.arange(len(subset))
            drop = float((clean_sub[rows, sub_labels] - ablated[rows, sub_labels]).mean())
            top1 = float((ablated.argmax(-1) == sub_labels).double().mean())
            for key, item in zip(ablation_rows, (component, layer, drop, top1_clean, top1, top1_clean - top1, len(subset))):
                ablation_rows[key].append(item)

    tick.note = "hidden name tokens"
    hidden_rows: dict[str, list] = {key: [] for key in ("hidden_through", "probe_layer", "measure", "accuracy")}
    baseline = probes.score(clean["resid_post"][concat_layer].numpy(), labels, params.folds, params.c, params.seed)
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
            scored = probes.score(state[0].numpy(), labels, params.folds, params.c, params.seed) if hiding_works else None
        for measure in ("probe", "control"):
            value = float("nan") if scored is None else (scored.accuracy if measure == "probe" else scored.control)
            for key, item in zip(hidden_rows, (through, concat_layer, measure, value)):
                hidden_rows[key].append(item)

    from analyses.fact_lookup.summaries import concat_table, heads_table, neuron_table, norms_table

    tables = {
        "fact_lookup_entities": arrow_table("fact_lookup_entities", {
            "input_id": [item.input_id for item in inputs], "entity": [e.name for e in entities], "attribute": [e.value for e in entities],
            "predicted": [values[i] for i in predicted], "correct_logprob": correct_lp, "top1_correct": predicted == labels,
            "n_name_tokens": [encoded.last_name_pos[i] - encoded.first_name_pos[i] + 1 for i in range(n)], "last_name_pos": list(encoded.last_name_pos),
        }),
        "fact_lookup_probe": arrow_table("fact_lookup_probe", probe_rows),
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
    progress(tick.total, tick.total, "done")
    tokens = tokens_table_of((item.input_id, list(ids), model.token_strings(list(ids))) for item, ids in zip(inputs, encoded.ids))
    notes = {
        **bos.record(), "answer_tokens": dict(zip(values, answer_ids)), "concat_layer": concat_layer,
        "intervention_entities": len(subset), "made_up_names": len(made_up),
        "hiding": "pattern hook honoured" if hiding_works else "this family's pattern hook is read-only: hidden-name accuracies are NaN",
    }
    return Result(tables=tables, tokens=tokens, notes=notes)
