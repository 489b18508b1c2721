"""fact-lookup sharded by entity: the run-level state (``prepare``), one shard's per-entity states
(``compute_shard``) and the tables over every entity (``finalize``).

- ``prepare`` (every entity, once per run): the prompt choice (prompts.choice_state), each entity's
  prompted template (a few-shot prompt depends on its row and on the whole table), the answer set,
  the made-up names, the intervention subset, and one forward over every entity for what the
  shards need from all of them: the mean MLP and attention outputs at the last name token (what an
  ablation puts there) and, per layer, the neurons best aligned with the probe directions (fitted
  on every entity's resid_post there).
- ``compute_shard`` (the shard's entities): the clean pass, the shard's made-up names, the
  ablations of the shard's entities of the intervention subset and the hidden-name passes; it
  stores per entity what the aggregates need (STATE_TABLES: the probed states, per layer the
  MLP-output norm, the name attention, each head's direct effect and the chosen neurons'
  activations, the per-entity ablation effects, the hidden-name states) and the entities table.
- ``finalize`` (no model): every entity's states in table order, then probes with their
  permutation nulls and bootstrap intervals, means and intervals over all entities, the summary.

A one-shard run goes through the same three steps, so a run split into shards differs from it only
where a forward's float32 bits depend on which entities share its batch (see tests/test_fact_lookup_shards.py).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any

from analyses.core.contract import CancelEvent, Input, Progress, Result, ResultTable, check_cancel

STATE_TABLES = (
    ResultTable(
        "fact_lookup_features",
        (("site", "VARCHAR"), ("layer", "INTEGER"), ("entity", "INTEGER"), ("input_id", "INTEGER"), ("features", "FLOAT[]")),
        "per shard: each entity's state at the last name token (the probed sites at every layer, and resid_post at concat_layer); "
        "entity = its row in the table; fact_lookup_probe and fact_lookup_hidden are fitted on every shard's rows",
    ),
    ResultTable(
        "fact_lookup_entity_layers",
        (("layer", "INTEGER"), ("entity", "INTEGER"), ("input_id", "INTEGER"), ("mlp_norm", "DOUBLE"), ("name_attention", "FLOAT[]"),
         ("final_attention", "FLOAT[]"), ("direct_effect", "FLOAT[]"), ("neurons", "FLOAT[]")),
        "per shard, per entity and layer: the MLP output norm at the last name token, per head the attention from the last name "
        "token to the earlier name tokens and from the final token to the name, and the head's direct effect on the answer margin, "
        "and the activations of the layer's neurons chosen in prepare (best aligned with the probe directions)",
    ),
    ResultTable(
        "fact_lookup_made_up_layers",
        (("layer", "INTEGER"), ("made_up", "INTEGER"), ("mlp_norm", "DOUBLE"), ("neurons", "FLOAT[]")),
        "per shard, per made-up name (its row in fact_lookup_recombined, computed by the shard of its first name's entity) and "
        "layer: the MLP output norm and the chosen neurons' activations at the last name token",
    ),
    ResultTable(
        "fact_lookup_entity_ablation",
        (("component", "VARCHAR"), ("layer", "INTEGER"), ("entity", "INTEGER"), ("input_id", "INTEGER"), ("logprob_drop", "DOUBLE"),
         ("set_mass_drop", "DOUBLE"), ("within_set_drop", "DOUBLE"), ("top1_among_answers_ablated", "BOOLEAN"), ("top1_vocab_ablated", "BOOLEAN")),
        "per shard, per entity of the intervention subset: the effects of each mean ablation; fact_lookup_ablation is their means "
        "and bootstrap intervals over every shard's entities",
    ),
    ResultTable(
        "fact_lookup_hidden_features",
        (("hidden_through", "INTEGER"), ("entity", "INTEGER"), ("input_id", "INTEGER"), ("features", "FLOAT[]"), ("unchanged", "BOOLEAN"),
         ("discarded", "BOOLEAN")),
        "per shard: each entity's resid_post at concat_layer with the earlier name tokens hidden in layers 0..hidden_through; "
        "unchanged: equal to the clean state; discarded: the family's pattern hook ignored the edit (then later passes are skipped)",
    ),
)
ABLATED = ("mlp", "attn")  # the order of the components in the state's ablation means


def _state_table(name: str, columns: dict[str, Any]) -> Any:
    """An Arrow table of a declared state table; FLOAT[] columns from [rows, k] float32 arrays (or lists of them)."""
    import numpy as np
    import pyarrow as pa

    from analyses.core.tables import ARROW_TYPES

    declared = next(table for table in STATE_TABLES if table.name == name)
    arrays = {}
    for column, kind in declared.columns:
        values = columns[column]
        if kind == "FLOAT[]":
            matrix = np.asarray(values, dtype=np.float32)
            matrix = matrix.reshape(len(matrix), -1) if len(matrix) else np.zeros((0, 0), np.float32)
            offsets = pa.array(np.arange(len(matrix) + 1, dtype=np.int32) * matrix.shape[1], pa.int32())
            arrays[column] = pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), pa.float32()))
        else:
            items = values.tolist() if hasattr(values, "tolist") else list(values)
            arrays[column] = pa.array(items, type=getattr(pa, ARROW_TYPES[kind])())
    return pa.table(arrays)


def _matrix(table: Any, column: str) -> Any:
    """A FLOAT[] column as a [rows, k] float32 array."""
    import numpy as np

    values = table[column].combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(values), -1) if len(values) else flat.reshape(0, 0)


def _sorted(table: Any, key: str = "entity") -> Any:
    return table.sort_by([(key, "ascending")])


def layer_plan(n_layers: int, params: Any) -> tuple[list[int], int, list[int]]:
    """(ablated layers, concat_layer, hidden-through layers) of a run."""
    from analyses.fact_lookup.lookup import strided_layers

    concat_layer = params.concat_layer if params.concat_layer is not None else n_layers // 2
    return strided_layers(n_layers, params.layer_stride), concat_layer, strided_layers(concat_layer + 1, params.layer_stride)


def prepare(model, inputs: list[Input], params: Any, progress: Progress, cancel: CancelEvent) -> dict:
    """The run-level state (plain arrays): see the module's docstring."""
    import numpy as np
    import torch

    from analyses.fact_lookup import engine, probes, prompts
    from analyses.fact_lookup.lookup import Ticker, batch_count, capture, neuron_out_weights
    from analyses.inputs.entities import entities_of_inputs, recombine

    entities = entities_of_inputs(inputs)
    # Progress per forward batch of every candidate measured: on the embedded model this phase is
    # minutes, and one note at its start said nothing for all of them (issue 19, item 6).
    names = prompts.candidates(model.tokenizer) if params.prompt == "auto" else (params.prompt,)
    measured = Ticker(progress, len(names) * batch_count(len(prompts.sample_rows(len(entities), params.prompt_entities)), params.batch_size))
    measured.note = "measuring the candidate prompts"
    progress(0, measured.total, measured.note)
    state = prompts.choice_state(model, entities, params, cancel, measured)
    bos = model.bos(params.prepend_bos)
    entities = prompts.prompted(str(state["prompt"]), entities, model.tokenizer, bos.prepend)
    values = sorted({entity.value for entity in entities})
    labels = np.array([values.index(entity.value) for entity in entities], dtype=np.int64)
    n, n_layers = len(entities), model.n_layers
    made_up = recombine([entity.name for entity in entities])
    k = n if params.intervention_entities == 0 else min(n, params.intervention_entities)
    subset = sorted({int(i) for i in np.linspace(0, n - 1, k).round()}) if n else []
    _, concat_layer, _ = layer_plan(n_layers, params)
    encoded = engine.encode(model.tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], bos.token_id if bos.prepend else None)
    tick = Ticker(progress, batch_count(n, params.batch_size))
    tick.note = "run-level means and probe directions"
    targets, _ = capture(model, encoded, list(range(n)), ("resid_post", "attn_out", "mlp_out"), params.batch_size, None, cancel, tick)
    means = torch.stack([torch.stack([targets[f"{component}_out"][layer].mean(0) for layer in range(n_layers)]) for component in ABLATED])
    tops, alignments = [], []
    for layer in range(n_layers):
        check_cancel(cancel)
        directions = probes.directions(targets["resid_post"][layer].numpy(), labels, params.c, params.seed)
        weights = neuron_out_weights(model, layer).numpy()
        unit = weights / np.linalg.norm(weights, axis=1, keepdims=True).clip(1e-12)
        alignment = np.abs(unit @ directions.T).max(1)
        top = np.argsort(-alignment, kind="stable")[: params.n_neurons]
        tops.append(top)
        alignments.append(alignment[top].astype(np.float64))
    state.update({
        "input_ids": np.array([item.input_id for item in inputs], dtype=np.int64),
        "templates": np.array([entity.template for entity in entities], dtype=str),
        "values": np.array(values, dtype=str), "labels": labels,
        "answer_ids": np.array(engine.answer_token_ids(model.tokenizer, values), dtype=np.int64),
        "made_up_names": np.array([item.name for item in made_up], dtype=str),
        "made_up_first": np.array([item.first_of for item in made_up], dtype=np.int64),
        "made_up_last": np.array([item.last_of for item in made_up], dtype=np.int64),
        "subset": np.array(subset, dtype=np.int64), "concat_layer": np.array(concat_layer, dtype=np.int64),
        "ablation_means": means.numpy(), "top_neurons": np.array(tops, dtype=np.int64).reshape(n_layers, -1),
        "alignments": np.array(alignments, dtype=np.float64).reshape(n_layers, -1),
    })
    progress(1, 1, "prepared")
    return state


def head_effects(model, clean: dict, labels: Any, answer_ids: list[int]) -> Any:
    """Per layer, entity and head [L, N, H] (float32): the head's direct effect on the answer margin
    (the final norm recomputed without the head's output at the final position)."""
    import torch

    from analyses.fact_lookup.summaries import answer_margin, head_outputs

    final_resid = clean["final_resid"]
    n_layers, n, n_heads = clean["final_attn"].shape
    effects = torch.zeros((n_layers, n, n_heads))
    with torch.inference_mode():
        base = answer_margin(model, final_resid, labels, answer_ids)
        for layer in range(n_layers):
            outputs = head_outputs(model, clean["z"][layer], layer)  # [N, H, d]
            without = final_resid[None, :, :] - outputs.permute(1, 0, 2)  # [H, N, d]
            effects[layer] = (base[None, :] - answer_margin(model, without, labels, answer_ids)).T
    return effects.numpy()


def compute_shard(model, inputs: list[Input], params: Any, state: dict, progress: Progress, cancel: CancelEvent) -> Result:
    """One shard's entities table and per-entity states (STATE_TABLES), given the run-level state."""
    import numpy as np
    import torch

    from analyses.core.tables import tokens_table_of
    from analyses.fact_lookup import engine, prompts
    from analyses.fact_lookup.lookup import Ticker, batch_count, capture, decompose
    from analyses.fact_lookup.tables import arrow_table
    from analyses.inputs.entities import Entity, entities_of_inputs
    from analyses.model.tokens import pad_id as model_pad_id

    row_of = {int(input_id): row for row, input_id in enumerate(state["input_ids"])}
    rows = np.array([row_of[item.input_id] for item in inputs], dtype=np.int64)  # each input's row in the table
    entities = [Entity(e.name, e.value, str(state["templates"][row])) for e, row in zip(entities_of_inputs(inputs), rows)]
    values = [str(value) for value in state["values"]]
    answer_ids = [int(token) for token in state["answer_ids"]]
    labels = state["labels"][rows]
    tokenizer, n_layers, bs = model.tokenizer, model.n_layers, params.batch_size
    bos = model.bos(params.prepend_bos)
    bos_id = bos.token_id if bos.prepend else None
    encoded = engine.encode(tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], bos_id)
    n = len(entities)
    local = {int(row): slot for slot, row in enumerate(rows)}
    fakes = [j for j, first in enumerate(state["made_up_first"]) if int(first) in local]  # the made-up names of this shard's first names
    fake = [Entity(str(state["made_up_names"][j]), entities[local[int(state["made_up_first"][j])]].value,
                   entities[local[int(state["made_up_first"][j])]].template) for j in fakes]
    fake_encoded = engine.encode(tokenizer, [e.prompt for e in fake], [e.name_span for e in fake], bos_id) if fake else None
    ablate_layers, concat_layer, hide_through = layer_plan(n_layers, params)
    in_subset = set(state["subset"].tolist())
    sub = [slot for slot, row in enumerate(rows) if int(row) in in_subset]
    tick = Ticker(progress, batch_count(n, bs) * (1 + len(hide_through)) + batch_count(len(fake), bs) + batch_count(len(sub), bs) * 2 * len(ablate_layers))

    tick.note = "clean pass"
    sites = {"resid_post", "mlp_out", "neurons", "concat", "final_attn", "z", "final_resid", *params.site_list()}
    top1: list = []
    clean, logprobs = capture(model, encoded, list(range(n)), tuple(sorted(sites)), bs, answer_ids, cancel, tick, top1=top1)
    correct_lp = logprobs[torch.arange(n), torch.tensor(labels)].numpy()
    predicted = logprobs.argmax(-1).numpy()
    set_mass = logprobs.logsumexp(-1)
    top1_ids = torch.cat([ids for ids, _ in top1]) if top1 else torch.zeros(0, dtype=torch.long)
    top1_lp = torch.cat([lp for _, lp in top1]) if top1 else torch.zeros(0, dtype=torch.float64)
    correct_ids = np.array(answer_ids)[labels]
    input_ids = [item.input_id for item in inputs]

    feature_rows: dict[str, list] = {key: [] for key in ("site", "layer", "entity", "input_id", "features")}

    def add_features(site: str, layer: int, states: Any) -> None:
        feature_rows["site"] += [site] * n
        feature_rows["layer"] += [layer] * n
        feature_rows["entity"] += rows.tolist()
        feature_rows["input_id"] += input_ids
        feature_rows["features"] += list(states.numpy())

    for site in params.site_list():
        for layer in range(n_layers):
            add_features(site, layer, clean[site][layer])
    if "resid_post" not in params.site_list():
        add_features("resid_post", concat_layer, clean["resid_post"][concat_layer])

    tops = torch.as_tensor(state["top_neurons"])
    effects = head_effects(model, clean, labels, answer_ids)  # [L, n, H]
    mlp_norms = clean["mlp_out"].double().norm(dim=-1).numpy()  # [L, n]
    layer_rows = {
        "layer": np.repeat(np.arange(n_layers), n), "entity": np.tile(rows, n_layers), "input_id": np.tile(input_ids, n_layers),
        "mlp_norm": mlp_norms.ravel(), "name_attention": clean["concat"].numpy().reshape(n_layers * n, -1),
        "final_attention": clean["final_attn"].numpy().reshape(n_layers * n, -1), "direct_effect": effects.reshape(n_layers * n, -1),
        "neurons": torch.stack([clean["neurons"][layer][:, tops[layer]] for layer in range(n_layers)]).numpy().reshape(n_layers * n, -1),
    }

    tick.note = "made-up names"
    fake_rows: dict[str, Any] = {"layer": [], "made_up": [], "mlp_norm": [], "neurons": np.zeros((0, tops.shape[1]), np.float32)}
    if fake:
        targets = capture(model, fake_encoded, list(range(len(fake))), ("mlp_out", "neurons"), bs, None, cancel, tick)[0]
        fake_rows = {
            "layer": np.repeat(np.arange(n_layers), len(fake)), "made_up": np.tile(fakes, n_layers),
            "mlp_norm": targets["mlp_out"].double().norm(dim=-1).numpy().ravel(),
            "neurons": torch.stack([targets["neurons"][layer][:, tops[layer]] for layer in range(n_layers)]).numpy().reshape(n_layers * len(fake), -1),
        }

    tick.note = "ablations"
    ablation_rows: dict[str, list] = {key: [] for key in ("component", "layer", "entity", "input_id", "logprob_drop", "set_mass_drop", "within_set_drop",
                                                          "top1_among_answers_ablated", "top1_vocab_ablated")}
    pad_id = model_pad_id(model)
    if sub:
        sub_labels = torch.tensor(labels[sub])
        clean_sub = logprobs[sub]
        sub_batches = engine.make_batches(encoded, sub, bs, pad_id, model.device)
        sub_correct_ids = torch.as_tensor(correct_ids[sub])
        for component_index, component in enumerate(ABLATED):
            hook_template = engine.SITE_HOOKS[f"{component}_out"]
            for layer in ablate_layers:
                mean = torch.as_tensor(state["ablation_means"][component_index, layer])
                hook_name = hook_template.format(layer=layer)
                ablated_top1: list = []
                ablated = engine.run_batches(model, sub_batches, lambda batch, mean=mean, hook_name=hook_name: [(hook_name, engine.replace_hook(mean, batch))],
                                             answer_ids, cancel, tick, top1=ablated_top1)
                total, leaves, within = decompose(clean_sub, ablated, sub_labels)
                vocab = torch.cat([ids for ids, _ in ablated_top1]) == sub_correct_ids
                for key, items in zip(ablation_rows, ([component] * len(sub), [layer] * len(sub), rows[sub].tolist(), [input_ids[s] for s in sub],
                                                      total, leaves, within, (ablated.argmax(-1) == sub_labels).tolist(), vocab.tolist())):
                    ablation_rows[key].extend(items)

    tick.note = "hidden name tokens"
    hidden_rows: dict[str, list] = {key: [] for key in ("hidden_through", "entity", "input_id", "features", "unchanged", "discarded")}
    all_batches = engine.make_batches(encoded, list(range(n)), bs, pad_id, model.device)
    for through in hide_through:
        hidden = torch.zeros(1, n, model.d_model)
        spec = [(f"blocks.{layer}.attn.hook_pattern", lambda batch: engine.hide_name_hook(batch)) for layer in range(through + 1)]
        spec.append((engine.SITE_HOOKS["resid_post"].format(layer=concat_layer), lambda batch, hidden=hidden: engine.capture_hook(hidden, 0, batch, "last_name")))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.run_batches(model, all_batches, engine.hooks_for(spec), None, cancel, tick, stop_at_layer=concat_layer + 1)
        discarded = any("discarded" in str(item.message) for item in caught)
        unchanged = (hidden[0] == clean["resid_post"][concat_layer]).all(-1)
        for key, items in zip(hidden_rows, ([through] * n, rows.tolist(), input_ids, list(hidden[0].numpy()), unchanged.tolist(), [discarded] * n)):
            hidden_rows[key].extend(items)
        if discarded:  # this family's pattern hook is read-only: every later pass would be too
            break

    tables = {
        "fact_lookup_entities": arrow_table("fact_lookup_entities", {
            "input_id": input_ids, "entity": [e.name for e in entities], "attribute": [e.value for e in entities],
            "predicted_among_answers": [values[i] for i in predicted], "correct_logprob": correct_lp, "top1_among_answers_correct": predicted == labels,
            "answer_set_prob": set_mass.exp().numpy(), "correct_within_set_prob": np.exp(correct_lp - set_mass.numpy()),
            "top1_token": model.token_strings(top1_ids.tolist()), "top1_token_id": top1_ids.numpy(), "top1_prob": top1_lp.exp().numpy(),
            "top1_is_correct": top1_ids.numpy() == correct_ids,
            "n_name_tokens": [encoded.last_name_pos[i] - encoded.first_name_pos[i] + 1 for i in range(n)], "last_name_pos": list(encoded.last_name_pos),
        }),
        "fact_lookup_features": _state_table("fact_lookup_features", feature_rows),
        "fact_lookup_entity_layers": _state_table("fact_lookup_entity_layers", layer_rows),
        "fact_lookup_made_up_layers": _state_table("fact_lookup_made_up_layers", fake_rows),
        "fact_lookup_entity_ablation": _state_table("fact_lookup_entity_ablation", ablation_rows),
        "fact_lookup_hidden_features": _state_table("fact_lookup_hidden_features", hidden_rows),
    }
    progress(tick.total, tick.total, "done")
    tokens = tokens_table_of((item.input_id, list(ids), model.token_strings(list(ids))) for item, ids in zip(inputs, encoded.ids))
    untested = sorted(set(range(n_layers)) - set(ablate_layers))
    notes = {
        **bos.record(), "prompt": str(state["prompt"]), "prompt_measures": {m.name: {"answer_set_prob": m.answer_set_prob, "top1_in_set": m.top1_in_set}
                                                                          for m in prompts.measures_of_state(state)},
        "answer_tokens": dict(zip(values, answer_ids)), "concat_layer": concat_layer,
        "intervention_entities": len(state["subset"]), "made_up_names": len(state["made_up_names"]), "ablated_layers": ablate_layers, "untested_layers": untested,
        "hidden_through": hide_through,
    }
    return Result(tables=tables, tokens=tokens, notes=notes)


def _features(read, site: str, layer: int, n: int) -> Any:
    """Every entity's stored state at (site, layer) [N, d] float32, in table order."""
    table = read("fact_lookup_features", ["entity", "features"], {"site": site, "layer": layer})
    if table is None or table.num_rows != n:
        raise ValueError(f"fact-lookup: {0 if table is None else table.num_rows} of {n} entities stored at {site} layer {layer}")
    return _matrix(_sorted(table), "features")


def finalize(params: Any, state: dict, read, progress: Progress, cancel: CancelEvent) -> Result:
    """Every table over all entities from the shards' per-entity states (no model)."""
    import numpy as np
    import pyarrow.compute as pc
    import torch

    from analyses.fact_lookup import probes, prompts
    from analyses.fact_lookup.lookup import bootstrap_means, probe_measures
    from analyses.fact_lookup.summaries import and_scores, concat_table, heads_table, layer_intervals_table, summary_table
    from analyses.fact_lookup.tables import arrow_table
    from analyses.inputs.entities import Recombined

    entities_read = read("fact_lookup_entities")
    if entities_read is None or entities_read.num_rows == 0:
        return Result({}, None, {})
    row_of = {int(input_id): row for row, input_id in enumerate(state["input_ids"])}
    order = np.argsort([row_of[int(i)] for i in entities_read["input_id"].to_pylist()], kind="stable")
    entities = entities_read.take(order)
    labels = state["labels"]
    n = len(labels)
    n_layers = int(state["top_neurons"].shape[0])
    ablate_layers, concat_layer, hide_through = layer_plan(n_layers, params)
    score = functools.partial(probes.score, folds=params.folds, c=params.c, seed=params.seed, n_permutations=params.n_permutations, n_bootstrap=params.n_bootstrap)
    ticks = len(params.site_list()) * n_layers + 1 + len(hide_through)
    done = [0]

    def tick(note: str) -> None:
        check_cancel(cancel)
        done[0] += 1
        progress(min(done[0], ticks), ticks, note)

    probe_rows: dict[str, list] = {key: [] for key in ("site", "layer", "measure", "accuracy", "ci_low", "ci_high", "p_value", "n_permutations", "n_entities", "folds")}
    null_rows: dict[str, list] = {key: [] for key in ("site", "layer", "permutation", "accuracy")}
    for site in params.site_list():
        for layer in range(n_layers):
            tick("probes")
            scored = score(_features(read, site, layer, n), labels)
            for measure, value, low, high, p in probe_measures(scored):
                for key, item in zip(probe_rows, (site, layer, measure, value, low, high, p, params.n_permutations, n, params.folds)):
                    probe_rows[key].append(item)
            for key, items in zip(null_rows, ([site] * len(scored.null), [layer] * len(scored.null), range(len(scored.null)), scored.null)):
                null_rows[key].extend(items)

    tick("ablations")
    subset = state["subset"]
    flags = {name: entities[name].to_numpy(zero_copy_only=False) for name in ("top1_among_answers_correct", "top1_is_correct")}
    top1_clean = float(flags["top1_among_answers_correct"][subset].astype(np.float64).mean()) if len(subset) else float("nan")
    vocab_clean = float(flags["top1_is_correct"][subset].astype(np.float64).mean()) if len(subset) else float("nan")
    columns = ("component", "layer", "logprob_drop", "logprob_drop_low", "logprob_drop_high", "set_mass_drop", "set_mass_drop_low", "set_mass_drop_high",
               "within_set_drop", "within_set_drop_low", "within_set_drop_high", "top1_among_answers_clean", "top1_among_answers_ablated",
               "top1_among_answers_drop", "top1_vocab_clean", "top1_vocab_ablated", "n_entities")
    ablation_rows: dict[str, list] = {key: [] for key in columns}
    for component in ABLATED:
        for layer in ablate_layers:
            stored = read("fact_lookup_entity_ablation", None, {"component": component, "layer": layer})
            if stored is None or stored.num_rows != len(subset):
                raise ValueError(f"fact-lookup: ablation of {component} {layer} stored for {0 if stored is None else stored.num_rows} of {len(subset)} entities")
            stored = _sorted(stored)
            parts = np.stack([stored[name].to_numpy() for name in ("logprob_drop", "set_mass_drop", "within_set_drop")], 1)  # [k, 3]
            low, high = bootstrap_means(parts, params.n_bootstrap, params.seed)
            means = parts.mean(0)
            top1 = float(stored["top1_among_answers_ablated"].to_numpy(zero_copy_only=False).astype(np.float64).mean())
            vocab = float(stored["top1_vocab_ablated"].to_numpy(zero_copy_only=False).astype(np.float64).mean())
            row = (component, layer, means[0], low[0], high[0], means[1], low[1], high[1], means[2], low[2], high[2],
                   top1_clean, top1, top1_clean - top1, vocab_clean, vocab, len(subset))
            for key, item in zip(ablation_rows, row):
                ablation_rows[key].append(item)

    # Per layer: every entity's name attention, final-token attention, direct effects, MLP norms and chosen neurons.
    layers = _sorted(read("fact_lookup_entity_layers"), "entity")
    by_layer = [layers.filter(pc.equal(layers["layer"], layer)) for layer in range(n_layers)]
    concat = np.stack([_matrix(table, "name_attention") for table in by_layer])  # [L, N, H]
    final_attn = np.stack([_matrix(table, "final_attention") for table in by_layer])
    effects = np.stack([_matrix(table, "direct_effect") for table in by_layer])
    multi = entities["n_name_tokens"].to_numpy() > 1
    made_up = [Recombined(str(name), int(first), int(last)) for name, first, last in zip(state["made_up_names"], state["made_up_first"], state["made_up_last"])]
    fake_layers = read("fact_lookup_made_up_layers")
    norms_rows: dict[str, list] = {key: [] for key in ("layer", "names", "mean_norm", "std_norm", "n_names")}
    neuron_rows: dict[str, list] = {key: [] for key in ("layer", "neuron", "alignment", "act_first_last", "act_first_other", "act_other_last", "and_score", "n_entities")}
    for layer in range(n_layers):
        fake = _sorted(fake_layers.filter(pc.equal(fake_layers["layer"], layer)), "made_up") if fake_layers is not None and made_up else None
        groups = [("known", by_layer[layer]["mlp_norm"].to_numpy())] + ([("made_up", fake["mlp_norm"].to_numpy())] if made_up and fake is not None else [])
        for label, values in groups:
            norms = torch.tensor(values, dtype=torch.float64)
            for key, item in zip(norms_rows, (layer, label, float(norms.mean()), float(norms.std()) if len(norms) > 1 else 0.0, len(norms))):
                norms_rows[key].append(item)
        real = _matrix(by_layer[layer], "neurons").astype(np.float64)
        fake_acts = _matrix(fake, "neurons").astype(np.float64) if fake is not None and fake.num_rows else np.zeros((0, real.shape[1]))
        fl, fo, ol, count = and_scores(real, fake_acts, made_up)
        and_score = fl - (fo + ol) / 2
        for slot, neuron in enumerate(state["top_neurons"][layer]):
            row = (layer, int(neuron), float(state["alignments"][layer][slot]), float(fl[slot]), float(fo[slot]), float(ol[slot]), float(and_score[slot]), count)
            for key, item in zip(neuron_rows, row):
                neuron_rows[key].append(item)

    hidden_rows: dict[str, list] = {key: [] for key in ("hidden_through", "probe_layer", "measure", "accuracy", "ci_low", "ci_high", "p_value")}
    tick("hidden name tokens")
    baseline = score(_features(read, "resid_post", concat_layer, n), labels)
    hiding_works = True
    for through in [-1] + hide_through:
        scored = None
        if through == -1:
            scored = baseline
        elif hiding_works:
            tick("hidden name tokens")
            stored = read("fact_lookup_hidden_features", None, {"hidden_through": through})
            discarded = stored is None or stored.num_rows != n or bool(pc.any(stored["discarded"]).as_py())
            unchanged = False
            if not discarded:
                stored = _sorted(stored)
                same = stored["unchanged"].to_numpy(zero_copy_only=False)
                unchanged = bool(multi.any() and same[multi].all())
            hiding_works = not (discarded or (through == 0 and unchanged))
            scored = score(_matrix(stored, "features"), labels) if hiding_works else None
        for measure, value, low, high, p in probe_measures(scored) if scored is not None else [(m, *[float("nan")] * 4) for m in ("probe", "control", "null_q95")]:
            if measure == "majority":
                continue
            for key, item in zip(hidden_rows, (through, concat_layer, measure, value, low, high, p)):
                hidden_rows[key].append(item)

    input_ids = state["input_ids"]
    tables = {
        "fact_lookup_entities": entities,
        "fact_lookup_probe": arrow_table("fact_lookup_probe", probe_rows),
        "fact_lookup_probe_null": arrow_table("fact_lookup_probe_null", null_rows),
        "fact_lookup_concat": concat_table(concat, multi, params.n_bootstrap, params.seed),
        "fact_lookup_intervals": layer_intervals_table(concat, multi, final_attn, params.n_bootstrap, params.seed),
        "fact_lookup_hidden": arrow_table("fact_lookup_hidden", hidden_rows),
        "fact_lookup_ablation": arrow_table("fact_lookup_ablation", ablation_rows),
        "fact_lookup_norms": arrow_table("fact_lookup_norms", norms_rows),
        "fact_lookup_neurons": arrow_table("fact_lookup_neurons", neuron_rows),
        "fact_lookup_heads": heads_table(final_attn, effects, params.n_bootstrap, params.seed),
        "fact_lookup_recombined": arrow_table("fact_lookup_recombined", {
            "name": [m.name for m in made_up], "first_of": [int(input_ids[m.first_of]) for m in made_up], "last_of": [int(input_ids[m.last_of]) for m in made_up],
        }),
        "fact_lookup_prompts": prompts.prompts_table(state),
    }
    tables["fact_lookup_summary"] = summary_table(tables)
    del tables["fact_lookup_entities"]  # stored by the shards
    notes = {"hiding": "pattern hook honoured" if hiding_works else "this family's pattern hook is read-only: hidden-name accuracies are NaN"}
    return Result(tables=tables, tokens=None, notes=notes)
