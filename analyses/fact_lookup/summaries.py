"""Tables summarising the captured states: name attention, MLP norms, AND-like neurons and the
heads that move the attribute to the final token."""
from __future__ import annotations

from typing import Any

from analyses.fact_lookup import probes
from analyses.fact_lookup.tables import arrow_table


def entity_intervals(values: Any, n_bootstrap: int, seed: int) -> tuple[Any, Any]:
    """95% bootstrap intervals over entities of the means of values [L, N, H] (entities on axis 1):
    low and high [L, H], every cell resampled with the same draws (lookup.bootstrap_means)."""
    import numpy as np

    from analyses.fact_lookup.lookup import bootstrap_means

    n_layers, n, n_heads = values.shape
    low, high = bootstrap_means(np.moveaxis(np.asarray(values, dtype=np.float64), 1, 0).reshape(n, n_layers * n_heads), n_bootstrap, seed)
    return low.reshape(n_layers, n_heads), high.reshape(n_layers, n_heads)


def concat_table(concat: Any, multi_token: Any, n_bootstrap: int = 0, seed: int = 0) -> Any:
    """Mean over multi-token names of the attention [L, N, H] from the last name token to the earlier
    ones, with its 95% bootstrap interval over those names."""
    import numpy as np

    n_layers, _, n_heads = concat.shape
    count = int(multi_token.sum())
    per_entity = concat[:, multi_token]
    means = per_entity.mean(1) if count else np.full((n_layers, n_heads), np.nan)
    low, high = entity_intervals(per_entity, n_bootstrap, seed)
    return arrow_table("fact_lookup_concat", {
        "layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers),
        "attention": means.ravel().astype(float), "attention_low": low.ravel(), "attention_high": high.ravel(),
        "n_entities": [count] * (n_layers * n_heads),
    })


def layer_intervals_table(concat: Any, multi_token: Any, final_attn: Any, n_bootstrap: int = 0, seed: int = 0) -> Any:
    """Per layer, the mean over heads of the name attention [L, N, H], its mean over entities and the
    ends of its 95% bootstrap interval over entities, one curve each: name_attention (last name token
    to the earlier name tokens, multi-token names) and final_to_name (final token to the name, all)."""
    import numpy as np

    columns: dict[str, list] = {key: [] for key in ("measure", "layer", "curve", "value", "n_entities")}
    for measure, values in (("name_attention", concat[:, multi_token]), ("final_to_name", final_attn)):
        per_layer = np.asarray(values, dtype=np.float64).mean(-1)[:, :, None]  # [L, N, 1]
        n_layers, n = per_layer.shape[:2]
        low, high = entity_intervals(per_layer, n_bootstrap, seed)
        estimate = per_layer.mean(1) if n else np.full((n_layers, 1), np.nan)
        for layer in range(n_layers):
            for curve, value in (("estimate", estimate[layer, 0]), ("low", low[layer, 0]), ("high", high[layer, 0])):
                for key, item in zip(columns, (measure, layer, curve, float(value), n)):
                    columns[key].append(item)
    return arrow_table("fact_lookup_intervals", columns)


def norms_table(known: Any, made_up: Any | None) -> Any:
    """Per layer, the mean and std of the MLP output norm [L, N, d] of known and made-up names."""
    columns: dict[str, list] = {key: [] for key in ("layer", "names", "mean_norm", "std_norm", "n_names")}
    groups = [("known", known)] + ([("made_up", made_up)] if made_up is not None else [])
    for layer in range(known.shape[0]):
        for label, states in groups:
            norms = states[layer].double().norm(dim=-1)
            for key, item in zip(columns, (layer, label, float(norms.mean()), float(norms.std()) if len(norms) > 1 else 0.0, len(norms))):
                columns[key].append(item)
    return arrow_table("fact_lookup_norms", columns)


def and_scores(real: Any, fake: Any, made_up: list) -> tuple[Any, Any, Any, Any]:
    """Per neuron: mean activation on "First Last", "First Other", "Other Last" and the AND score,
    over the entities that have both made-up partners. real [N, k], fake [M, k] (numpy)."""
    import numpy as np

    n = real.shape[0]
    first_other = np.full(real.shape, np.nan)
    other_last = np.full(real.shape, np.nan)
    for index, item in enumerate(made_up):
        first_other[item.first_of] = fake[index]
        other_last[item.last_of] = fake[index]
    both = ~np.isnan(first_other[:, 0]) & ~np.isnan(other_last[:, 0]) if n else np.zeros(0, bool)
    if not both.any():
        nan = np.full(real.shape[1], np.nan)
        return nan, nan, nan, 0
    fl, fo, ol = real[both].mean(0), first_other[both].mean(0), other_last[both].mean(0)
    return fl, fo, ol, int(both.sum())


def neuron_table(model, clean: dict, fake: dict, made_up: list, labels: Any, params: Any) -> Any:
    """Per layer, the n_neurons whose output weights align best with the probe directions, with
    their activations on real and recombined names and the AND score."""
    import numpy as np

    from analyses.fact_lookup.lookup import neuron_out_weights

    columns: dict[str, list] = {key: [] for key in ("layer", "neuron", "alignment", "act_first_last", "act_first_other", "act_other_last", "and_score", "n_entities")}
    for layer in range(model.n_layers):
        directions = probes.directions(clean["resid_post"][layer].numpy(), labels, params.c, params.seed)
        weights = neuron_out_weights(model, layer).numpy()
        unit = weights / np.linalg.norm(weights, axis=1, keepdims=True).clip(1e-12)
        alignment = np.abs(unit @ directions.T).max(1)
        top = np.argsort(-alignment, kind="stable")[: params.n_neurons]
        real = clean["neurons"][layer][:, top].double().numpy()
        fake_acts = fake["neurons"][layer][:, top].double().numpy() if "neurons" in fake else np.zeros((0, len(top)))
        fl, fo, ol, count = and_scores(real, fake_acts, made_up)
        score = fl - (fo + ol) / 2
        for slot, neuron in enumerate(top):
            row = (layer, int(neuron), float(alignment[neuron]), float(fl[slot]), float(fo[slot]), float(ol[slot]), float(score[slot]), count)
            for key, item in zip(columns, row):
                columns[key].append(item)
    return arrow_table("fact_lookup_neurons", columns)


def head_outputs(model, z_layer: Any, layer: int) -> Any:
    """Each head's output [N, H, d] from its z [N, H, d_head] and the output projection (bias left out)."""
    import torch

    from analyses.fact_lookup.lookup import head_out_weights

    return torch.einsum("nhk,hkd->nhd", z_layer, head_out_weights(model, layer, z_layer.shape[1]))


def answer_margin(model, resid: Any, labels: Any, answer_ids: list[int]) -> Any:
    """The correct answer's logit minus the mean of the other answers' logits, from final residuals [..., N, d]."""
    import torch

    from analyses.model.weights import apply_norm, model_weights

    weights = model_weights(model)
    unembed = weights.W_U[:, answer_ids].cpu()  # [d, A]
    scores = apply_norm(weights.ln_final, resid.cpu()) @ unembed  # [..., N, A]
    if weights.b_U is not None:
        scores = scores + weights.b_U[answer_ids].cpu()
    correct = scores.gather(-1, torch.as_tensor(labels).reshape(-1, 1).expand(*scores.shape[:-1], 1)).squeeze(-1)
    others = (scores.sum(-1) - correct) / max(1, len(answer_ids) - 1)
    return correct - others


def heads_table(attention: Any, effects: Any, n_bootstrap: int = 0, seed: int = 0) -> Any:
    """Per head: attention from the final token to the name and the direct effect on the answer
    margin (per layer, entity and head [L, N, H]: analyses.fact_lookup.sharded.head_effects), means
    over entities with their 95% bootstrap intervals over entities."""
    import numpy as np

    n_layers, n, n_heads = attention.shape
    columns: dict[str, Any] = {"layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers)}
    for name, values in (("attn_to_name", np.asarray(attention, dtype=np.float64)), ("direct_effect", np.asarray(effects, dtype=np.float64))):
        low, high = entity_intervals(values, n_bootstrap, seed)
        columns.update({name: values.mean(1).ravel(), f"{name}_low": low.ravel(), f"{name}_high": high.ravel()})
    columns["n_entities"] = [n] * (n_layers * n_heads)
    return arrow_table("fact_lookup_heads", columns)


def _ranges(layers: list[int]) -> str:
    """'0-3, 7, 9-11' from sorted layer numbers."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs) or "none"


def _ci(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]"


def summary_lines(rows: dict[str, list[dict]]) -> list[str]:
    """What the run supports, from its tables as rows (table name -> list of column dicts, as
    stored): each line a score with its 95% interval, against the permutation null where there is one."""
    import math
    from collections import Counter

    lines: list[str] = []
    measured = rows.get("fact_lookup_prompts") or []
    for row in sorted(measured, key=lambda row: not row["chosen"]):
        lines.append(f"prompt {row['prompt']}{' (chosen)' if row['chosen'] else ''}: answer set p {row['answer_set_prob']:.3f} "
                     f"{_ci(row['answer_set_low'], row['answer_set_high'])}, model's top-1 in the set {row['top1_in_set']:.2f} "
                     f"{_ci(row['top1_in_set_low'], row['top1_in_set_high'])} over {row['n_entities']} entities")
    entities = rows["fact_lookup_entities"]
    n = len(entities)
    if n:
        mass = [row["answer_set_prob"] for row in entities]
        low, high = (float(v) for v in _bootstrap_mean(mass))
        right = sum(bool(row["top1_is_correct"]) for row in entities)
        among = sum(bool(row["top1_among_answers_correct"]) for row in entities)
        token, count = Counter(row["top1_token"] for row in entities).most_common(1)[0]
        lines.append(f"answer set: mean p {sum(mass) / n:.3f} {_ci(low, high)}; top-1 among the answers right for {among}/{n}")
        lines.append(f"the model's own top-1 (whole vocabulary) is the right answer for {right}/{n}; most often {token!r} ({count}/{n})")
    probe = [row for row in rows["fact_lookup_probe"] if row["site"] == "resid_post"] or rows["fact_lookup_probe"]
    by = {(row["layer"], row["measure"]): row for row in probe}
    layers = sorted({row["layer"] for row in probe})
    if layers:
        best = max(layers, key=lambda layer: by[(layer, "probe")]["accuracy"])
        top = by[(best, "probe")]
        n_perm = top["n_permutations"]
        beats = [layer for layer in layers if by[(layer, "probe")]["p_value"] <= 0.05 and n_perm]
        clears = [layer for layer in layers if by[(layer, "probe")]["ci_low"] > by[(layer, "null_q95")]["accuracy"]]
        lines.append(f"probe ({probe[0]['site']}): best layer {best}, accuracy {top['accuracy']:.2f} {_ci(top['ci_low'], top['ci_high'])}, "
                     f"p = {top['p_value']:.3g} against {n_perm} label shuffles (null mean {by[(best, 'control')]['accuracy']:.2f}, "
                     f"95th pct {by[(best, 'null_q95')]['accuracy']:.2f}; majority {by[(best, 'majority')]['accuracy']:.2f})")
        lines.append(f"probe beats its null (p <= 0.05) at layers {_ranges(beats)}")
        lines.append(f"its whole interval is above the null's 95th pct at layers {_ranges(clears)}")
        tied = [layer for layer in layers if layer != best and by[(layer, "probe")]["accuracy"] >= top["ci_low"]]
        lines.append(f"layers inside the best layer's interval (not told apart from it): {_ranges(tied)}")
    ablation = rows["fact_lookup_ablation"]
    if ablation:
        worst = max(ablation, key=lambda row: row["logprob_drop"])
        lines.append(f"largest ablation: {worst['component']} {worst['layer']}, log p(correct) drops {worst['logprob_drop']:.3f} "
                     f"{_ci(worst['logprob_drop_low'], worst['logprob_drop_high'])} nats")
        lines.append(f"  of which leaving the answer set {worst['set_mass_drop']:.3f} {_ci(worst['set_mass_drop_low'], worst['set_mass_drop_high'])}, "
                     f"the choice within it {worst['within_set_drop']:.3f} {_ci(worst['within_set_drop_low'], worst['within_set_drop_high'])}")
        choice = max(ablation, key=lambda row: row["within_set_drop"])
        rivals = [f"{row['component']} {row['layer']}" for row in ablation if row is not choice and row["within_set_drop_high"] >= choice["within_set_drop_low"]]
        lines.append(f"largest drop in the choice among answers: {choice['component']} {choice['layer']}, {choice['within_set_drop']:.3f} "
                     f"{_ci(choice['within_set_drop_low'], choice['within_set_drop_high'])}; intervals overlapping it: {', '.join(rivals) or 'none'}")
        tested = {row["layer"] for row in ablation}
        untested = [layer for layer in layers if layer not in tested]
        if untested:
            lines.append(f"layers not ablated (layer_stride): {_ranges(untested)}")
    lines += attention_lines(rows)
    hidden = {(row["hidden_through"], row["measure"]): row for row in rows["fact_lookup_hidden"]}
    throughs = sorted(through for through, measure in hidden if measure == "probe" and through >= 0)
    if throughs and (-1, "probe") in hidden:
        base, last = hidden[(-1, "probe")], hidden[(throughs[-1], "probe")]
        if last["accuracy"] is None or math.isnan(last["accuracy"]):
            lines.append("hiding the earlier name tokens: not measured on this family")
        else:
            overlap = last["ci_high"] >= base["ci_low"] and base["ci_high"] >= last["ci_low"]
            verdict = "intervals overlap: no drop supported" if overlap else "intervals apart: a drop"
            lines.append(f"name hidden through layer {throughs[-1]}: probe {base['accuracy']:.2f} {_ci(base['ci_low'], base['ci_high'])} -> "
                         f"{last['accuracy']:.2f} {_ci(last['ci_low'], last['ci_high'])}, p = {last['p_value']:.3g}; {verdict}")
    return lines


def _value_ci(row: dict, name: str, fmt: str = ".2f") -> str:
    """'0.48 [0.45, 0.51]' from a row's name, name_low and name_high ('0.48, no interval' without them)."""
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    if low is None or high is None or low != low:
        return f"{row[name]:{fmt}}, no interval"
    bound = fmt.lstrip("+")
    return f"{row[name]:{fmt}} [{low:{bound}}, {high:{bound}}]"


def _others_overlapping(rows: list[dict], best: dict, name: str, key: Any) -> str:
    """The rows other than best whose interval of name overlaps best's (on best's side of zero), up to 6 named."""
    if best.get(f"{name}_low") is None:
        return "not measured"
    positive = best[name] >= 0
    rivals = [row for row in rows if row is not best and row.get(f"{name}_low") is not None and (
        row[f"{name}_high"] >= best[f"{name}_low"] if positive else row[f"{name}_low"] <= best[f"{name}_high"])]
    rivals.sort(key=lambda row: -abs(row[name]))
    named = ", ".join(key(row) for row in rivals[:6])
    return f"{named}{f' and {len(rivals) - 6} more' if len(rivals) > 6 else ''}" if rivals else "none"


def attention_lines(rows: dict[str, list[dict]]) -> list[str]:
    """The name-attention and extraction-head lines: each mean with its 95% interval over entities
    and which others the interval does not tell apart from the top one."""
    import math

    lines: list[str] = []
    curves: dict[int, dict] = {}
    for row in rows.get("fact_lookup_intervals") or []:
        if row["measure"] == "name_attention" and row["value"] is not None and not math.isnan(row["value"]):
            curves.setdefault(row["layer"], {"layer": row["layer"], "n": row["n_entities"]})[
                {"estimate": "attention", "low": "attention_low", "high": "attention_high"}[row["curve"]]] = row["value"]
    concat = [row for row in rows.get("fact_lookup_concat") or [] if row["attention"] is not None and not math.isnan(row["attention"])]
    if concat:
        head = max(concat, key=lambda row: row["attention"])
        top_head = f"top head {head['layer']}.{head['head']} ({_value_ci(head, 'attention')})"
        layers = [row for row in curves.values() if "attention" in row]
        if layers:
            ranked = sorted(layers, key=lambda row: -row["attention"])
            means = ", ".join(f"{row['layer']} ({_value_ci(row, 'attention')})" for row in ranked[:3])
            tied = _others_overlapping(layers, ranked[0], "attention", lambda row: str(row["layer"]))
            lines.append(f"last name token -> earlier name tokens, mean over heads (over {ranked[0]['n']} names, 95% intervals over names): "
                         f"highest in layers {means}; layers whose interval reaches the top one's: {tied}; {top_head}")
        else:  # a run stored before the interval table
            per_layer: dict[int, list[float]] = {}
            for row in concat:
                per_layer.setdefault(row["layer"], []).append(row["attention"])
            ranked_layers = sorted(per_layer, key=lambda layer: -sum(per_layer[layer]) / len(per_layer[layer]))[:3]
            means = ", ".join(f"{layer} ({sum(per_layer[layer]) / len(per_layer[layer]):.2f})" for layer in ranked_layers)
            lines.append(f"last name token -> earlier name tokens, mean over heads (over {concat[0]['n_entities']} names, no interval): "
                         f"highest in layers {means}; {top_head}")
    heads = rows.get("fact_lookup_heads") or []
    if heads:
        def name(row: dict) -> str:
            return f"{row['layer']}.{row['head']}"
        effect = max(heads, key=lambda row: abs(row["direct_effect"]))
        reader = max(heads, key=lambda row: row["attn_to_name"])
        over = f"over {effect['n_entities']} entities, 95% intervals" if effect.get("n_entities") is not None else "means over entities, no interval"
        lines.append(f"final token's heads ({over}): largest direct effect on the answer margin {name(effect)} "
                     f"({_value_ci(effect, 'direct_effect', '+.3f')}, attention to the name {_value_ci(effect, 'attn_to_name')}); "
                     f"heads whose interval reaches it: {_others_overlapping(heads, effect, 'direct_effect', name)}")
        lines.append(f"most attention to the name from the final token: {name(reader)} ({_value_ci(reader, 'attn_to_name')}, "
                     f"direct effect {_value_ci(reader, 'direct_effect', '+.3f')}); heads whose interval reaches it: "
                     f"{_others_overlapping(heads, reader, 'attn_to_name', name)}")
    return lines


def _bootstrap_mean(values: list[float], n_bootstrap: int = 1000, seed: int = 0) -> Any:
    import numpy as np

    from analyses.fact_lookup.lookup import bootstrap_means

    low, high = bootstrap_means(np.asarray(values, dtype=np.float64)[:, None], n_bootstrap, seed)
    return low[0], high[0]


LINE_WIDTH = 96  # a table chart cuts cells at 100 characters


def wrapped(lines: list[str]) -> list[str]:
    """Each line cut at word boundaries to LINE_WIDTH, continuations indented."""
    import textwrap

    return [part for line in lines for part in textwrap.wrap(line, LINE_WIDTH, subsequent_indent="    ", break_long_words=False) or [""]]


def summary_table(tables: dict[str, Any]) -> Any:
    """fact_lookup_summary from the run's other tables (Arrow), through summary_lines."""
    lines = wrapped(summary_lines({name: table.to_pylist() for name, table in tables.items()}))
    return arrow_table("fact_lookup_summary", {"line": list(range(1, len(lines) + 1)), "finding": lines})
