"""fact-lookup on tiny random models: batched states and ablations against independent HF
computations, hiding the earlier name tokens, a planted attribute, and runs stored per family."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from analyses.core.errors import BadInput
from analyses.fact_lookup import Params, engine
from analyses.fact_lookup.lookup import compute
from analyses.inputs.entities import ALL_ATHLETES, Entity, entity_inputs, load_entities
from analyses.model.families import family_of

# Where each family's MLP / attention output enters the residual stream, as HF module paths.
RESIDUAL_WRITERS = {
    "gpt2": ("transformer.h.{layer}.mlp", "transformer.h.{layer}.attn"),
    "neox": ("gpt_neox.layers.{layer}.mlp", "gpt_neox.layers.{layer}.attention"),
    "gptj": ("transformer.h.{layer}.mlp", "transformer.h.{layer}.attn"),
    "llama": ("model.layers.{layer}.mlp", "model.layers.{layer}.self_attn"),
    "phi": ("model.layers.{layer}.mlp", "model.layers.{layer}.self_attn"),
    "gemma3": ("model.layers.{layer}.post_feedforward_layernorm", "model.layers.{layer}.post_attention_layernorm"),
}


def small_table(n_per_value: int = 6) -> list[Entity]:
    everyone = load_entities(str(ALL_ATHLETES))
    table = []
    for value in ("baseball", "basketball", "football"):
        table += [e for e in everyone if e.value == value][:n_per_value]
    return table


def hf_reference(model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model.location, attn_implementation="eager", dtype=torch.float32).eval()


def reference_logprobs(hf, ids, answer_ids, module_path=None, position=None, value=None):
    """One unpadded HF forward; with module_path, that module's output at position replaced by value."""
    handle = None
    if module_path is not None:
        def replace(module, args, output):
            tensor = output[0] if isinstance(output, tuple) else output
            tensor = tensor.clone()
            tensor[0, position] = value
            return (tensor, *output[1:]) if isinstance(output, tuple) else tensor
        handle = hf.get_submodule(module_path).register_forward_hook(replace)
    try:
        with torch.inference_mode():
            logits = hf(torch.tensor([ids])).logits[0, -1].double()
    finally:
        if handle is not None:
            handle.remove()
    return logits.log_softmax(-1)[answer_ids]


def test_batched_clean_and_ablated_runs_equal_unpadded_hf_runs(family_model):
    model, family = family_model, family_of(family_model)
    entities = small_table(2)
    answer_ids = engine.answer_token_ids(model.tokenizer, ["baseball", "basketball", "football"])
    encoded = engine.encode(model.tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], False)
    batches = engine.make_batches(encoded, list(range(len(entities))), 4, 2, "cpu")
    assert len({len(ids) for ids in encoded.ids}) > 1  # padding is exercised
    hf = hf_reference(model)
    clean = engine.run_batches(model, batches, lambda batch: [], answer_ids, threading.Event(), lambda: None)
    layer = 1
    mean = torch.randn(model.d_model) * 0.5
    for slot, (site, path) in enumerate(zip(("mlp_out", "attn_out"), RESIDUAL_WRITERS[family])):
        hook_name = engine.SITE_HOOKS[site].format(layer=layer)
        ablated = engine.run_batches(model, batches, lambda batch, hook_name=hook_name: [(hook_name, engine.replace_hook(mean, batch))], answer_ids, threading.Event(), lambda: None)
        for row, ids in enumerate(encoded.ids):
            if slot == 0:
                assert torch.allclose(clean[row], reference_logprobs(hf, ids, answer_ids), atol=1e-4)
            expected = reference_logprobs(hf, ids, answer_ids, path.format(layer=layer), encoded.last_name_pos[row], mean)
            assert torch.allclose(ablated[row], expected, atol=1e-4), (family, site, row)
            assert not torch.allclose(ablated[row], clean[row], atol=1e-6)


def test_hiding_the_first_name_makes_the_last_name_state_independent_of_it(family_model):
    """With the earlier name tokens hidden from the last one in every layer up to L, swapping the
    first name (same token count) leaves the last name token's state at L unchanged."""
    model = family_model
    if family_of(model) == "gptj":
        pytest.skip("GPT-J's pattern hook is read-only in transformer_lens 4.3 (the run records NaN)")
    template = "Fact: {entity} plays the sport of"
    names = ["Mike Ruth", "John Ruth"]
    entities = [Entity(name, "baseball", template) for name in names]
    encoded = engine.encode(model.tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], False)
    assert len(encoded.ids[0]) == len(encoded.ids[1]) and encoded.ids[0][-5:] == encoded.ids[1][-5:]
    layer = model.n_layers - 1
    batches = engine.make_batches(encoded, [0, 1], 2, 2, "cpu")
    states = {}
    for hide in (False, True):
        state = torch.zeros(1, 2, model.d_model)
        spec = [(f"blocks.{block}.attn.hook_pattern", engine.hide_name_hook) for block in range(layer + 1)] if hide else []
        spec.append((engine.SITE_HOOKS["resid_post"].format(layer=layer), lambda batch, state=state: engine.capture_hook(state, 0, batch, "last_name")))
        engine.run_batches(model, batches, engine.hooks_for(spec), None, threading.Event(), lambda: None, stop_at_layer=layer + 1)
        states[hide] = state[0]
    assert not torch.allclose(states[False][0], states[False][1], atol=1e-5)
    assert torch.allclose(states[True][0], states[True][1], atol=1e-5)


def test_a_planted_attribute_is_found_and_the_control_stays_at_chance(tiny_model):
    """Labels drawn at random; each label's direction added to the embedding of the last name token."""
    model = tiny_model
    everyone = load_entities(str(ALL_ATHLETES))
    encoded = engine.encode(model.tokenizer, [e.prompt for e in everyone], [e.name_span for e in everyone], False)
    last_tokens = [encoded.ids[i][encoded.last_name_pos[i]] for i in range(len(everyone))]
    rng = np.random.default_rng(0)
    label_of_token = {token: int(rng.integers(0, 2)) for token in sorted(set(last_tokens))}
    planted = [Entity(e.name, ("left", "right")[label_of_token[t]], e.template) for e, t in zip(everyone[::3], last_tokens[::3])]
    embed = model.bridge.original_model.get_input_embeddings().weight
    saved = embed.detach().clone()
    directions = torch.randn(2, model.d_model) * 0.2
    try:
        with torch.no_grad():
            for token, label in label_of_token.items():
                embed[token] += directions[label]
        result = compute(model, entity_inputs(planted), Params(folds=3, intervention_entities=6, n_neurons=2, n_permutations=20), lambda *a: None, threading.Event())
    finally:
        with torch.no_grad():
            embed.copy_(saved)
    probe = result.tables["fact_lookup_probe"].to_pylist()
    by = {(r["layer"], r["measure"]): r["accuracy"] for r in probe}
    for layer in range(model.n_layers):
        assert by[(layer, "probe")] > 0.9
        assert by[(layer, "control")] < by[(layer, "majority")] + 0.15


def test_the_analysis_runs_and_stores_on_every_family(family_model, store):
    from app.run.runner import Prepared, execute

    inputs = tuple(entity_inputs(small_table(4)))
    params = Params(folds=3, intervention_entities=6, n_neurons=2, batch_size=5, concat_layer=family_model.n_layers - 1, n_permutations=20)
    from analyses.core.registry import get_analysis

    run_id = execute(store, family_model, Prepared(get_analysis("fact-lookup"), params, inputs), lambda *a: None)
    n_layers = family_model.n_layers
    counts = dict(store.query(
        "SELECT 'probe', count(*) FROM fact_lookup_probe WHERE run_id = ? UNION ALL SELECT 'ablation', count(*) FROM fact_lookup_ablation WHERE run_id = ? "
        "UNION ALL SELECT 'norms', count(*) FROM fact_lookup_norms WHERE run_id = ? UNION ALL SELECT 'entities', count(*) FROM fact_lookup_entities WHERE run_id = ?",
        [run_id] * 4).rows)
    assert counts == {"probe": 4 * n_layers, "ablation": 2 * n_layers, "norms": 2 * n_layers, "entities": 12}
    null = store.query("SELECT count(*), min(permutation), max(permutation) FROM fact_lookup_probe_null WHERE run_id = ?", [run_id]).rows[0]
    assert null == (20 * n_layers, 0, 19)
    # The decomposition of every stored ablation effect adds up; p-values are permutation p-values.
    for total, leaves, within in store.query("SELECT logprob_drop, set_mass_drop, within_set_drop FROM fact_lookup_ablation WHERE run_id = ?", [run_id]).rows:
        assert abs(total - (leaves + within)) < 1e-9
    for p, low, accuracy, high in store.query("SELECT p_value, ci_low, accuracy, ci_high FROM fact_lookup_probe WHERE run_id = ? AND measure = 'probe'", [run_id]).rows:
        assert abs(round(p * 21) - p * 21) < 1e-9 and 1 / 21 <= p <= 1 and low <= accuracy <= high
    # The summary lines are what summary_lines writes from the tables as stored.
    from analyses.fact_lookup.summaries import summary_lines, wrapped
    from analyses.fact_lookup.tables import TABLES

    stored = {}
    for table in TABLES:
        result = store.query(f"SELECT * EXCLUDE (run_id) FROM {table.name} WHERE run_id = ?", [run_id])
        stored[table.name] = [dict(zip(result.columns, row)) for row in result.rows]
    lines = [row["finding"] for row in sorted(stored["fact_lookup_summary"], key=lambda row: row["line"])]
    assert lines == wrapped(summary_lines(stored)) and any("p = " in line for line in lines)
    assert all(len(line) <= 100 for line in lines)
    heads = store.query("SELECT count(*) FROM fact_lookup_heads WHERE run_id = ?", [run_id]).rows[0][0]
    assert heads == n_layers * family_model.bridge.cfg.n_heads
    assert store.run_row(run_id)["status"] == "done"
    unknown = store.query("SELECT count(*) FROM fact_lookup_hidden WHERE run_id = ? AND hidden_through >= 0 AND accuracy IS NULL", [run_id]).rows[0][0]
    assert (unknown > 0) == (family_of(family_model) == "gptj")


def test_too_few_entities_per_value_is_refused_before_the_run(tiny_model):
    from analyses import fact_lookup

    inputs = entity_inputs(small_table(2))
    with pytest.raises(BadInput, match="at least 3 entities"):
        fact_lookup.ANALYSIS.check(tiny_model, inputs, Params(folds=3))
    with pytest.raises(BadInput, match="sites"):
        Params(sites="resid_post,nope").check()


def _plain_bootstrap(values: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, float]:
    """The 95% percentile interval of the mean of values [N], one resample at a time (the same seeded draws)."""
    draws = np.random.default_rng(seed).integers(0, len(values), (n_bootstrap, len(values)))
    means = [float(np.mean([values[i] for i in draw])) for draw in draws]
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_name_attention_and_direct_effect_intervals_equal_a_plain_numpy_recomputation(tiny_model):
    """Per entity, each head's direct effect recomputed in numpy from the captured final residual and
    z with the HF model's own weights (o_proj, final RMSNorm, unembedding); then every mean and
    bootstrap interval over entities redone one resample at a time; and the summary lines quote them."""
    from analyses.fact_lookup.lookup import capture
    from analyses.fact_lookup.sharded import head_effects
    from analyses.fact_lookup.summaries import concat_table, heads_table, layer_intervals_table, summary_lines

    model = tiny_model
    entities = small_table(3)
    values = ["baseball", "basketball", "football"]
    labels = np.array([values.index(e.value) for e in entities])
    answer_ids = engine.answer_token_ids(model.tokenizer, values)
    encoded = engine.encode(model.tokenizer, [e.prompt for e in entities], [e.name_span for e in entities], None)
    n, n_boot, seed = len(entities), 40, 3
    clean, _ = capture(model, encoded, list(range(n)), ("concat", "final_attn", "z", "final_resid"), 4, answer_ids, threading.Event(), lambda: None)

    hf = hf_reference(model)
    norm = hf.model.norm
    w_norm, eps = norm.weight.detach().double().numpy(), norm.variance_epsilon
    unembed = hf.lm_head.weight.detach().double().numpy()[answer_ids]  # [A, d]
    n_layers, _, n_heads = clean["final_attn"].shape
    d_head = clean["z"].shape[-1]

    def margin(resid: np.ndarray, label: int) -> float:
        scores = unembed @ (resid / np.sqrt(np.mean(resid**2) + eps) * w_norm)
        return float(scores[label] - (scores.sum() - scores[label]) / (len(answer_ids) - 1))

    effects = np.zeros((n_layers, n, n_heads))
    for layer in range(n_layers):
        w_o = hf.model.layers[layer].self_attn.o_proj.weight.detach().double().numpy()  # [d, H * d_head]
        for row in range(n):
            resid = clean["final_resid"][row].double().numpy()
            for head in range(n_heads):
                out = w_o[:, head * d_head : (head + 1) * d_head] @ clean["z"][layer, row, head].double().numpy()
                effects[layer, row, head] = margin(resid, labels[row]) - margin(resid - out, labels[row])

    heads = {(row["layer"], row["head"]): row for row in heads_table(clean["final_attn"].numpy(), head_effects(model, clean, labels, answer_ids), n_boot, seed).to_pylist()}
    attention = clean["final_attn"].double().numpy()
    for (layer, head), row in heads.items():
        for name, per_entity in (("direct_effect", effects[layer, :, head]), ("attn_to_name", attention[layer, :, head])):
            low, high = _plain_bootstrap(per_entity, n_boot, seed)
            assert row[name] == pytest.approx(per_entity.mean(), abs=2e-5), (layer, head, name)
            assert (row[f"{name}_low"], row[f"{name}_high"]) == pytest.approx((low, high), abs=2e-5), (layer, head, name)
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"] and row["n_entities"] == n
    assert np.abs(effects).max() > 1e-3  # the heads do move the margin: the comparison is not of zeros

    multi = np.array([encoded.last_name_pos[i] > encoded.first_name_pos[i] for i in range(n)])
    assert multi.all()  # every name here has several tokens; leave some out as single-token names would be
    multi[::4] = False
    concat = clean["concat"].double().numpy()
    for row in concat_table(clean["concat"].numpy(), multi, n_boot, seed).to_pylist():
        per_entity = concat[row["layer"], multi, row["head"]]
        assert row["attention"] == pytest.approx(per_entity.mean(), abs=1e-6)
        assert (row["attention_low"], row["attention_high"]) == pytest.approx(_plain_bootstrap(per_entity, n_boot, seed), abs=1e-6)
    curves = {(row["measure"], row["layer"], row["curve"]): row["value"]
              for row in layer_intervals_table(clean["concat"].numpy(), multi, clean["final_attn"].numpy(), n_boot, seed).to_pylist()}
    for measure, per_entity in (("name_attention", concat[:, multi].mean(-1)), ("final_to_name", attention.mean(-1))):
        for layer in range(n_layers):
            low, high = _plain_bootstrap(per_entity[layer], n_boot, seed)
            assert [curves[(measure, layer, curve)] for curve in ("estimate", "low", "high")] == pytest.approx([per_entity[layer].mean(), low, high], abs=1e-6)

    top = max(heads.values(), key=lambda row: abs(row["direct_effect"]))
    lines = summary_lines({"fact_lookup_entities": [], "fact_lookup_probe": [], "fact_lookup_ablation": [], "fact_lookup_hidden": [],
                           "fact_lookup_heads": list(heads.values()),
                           "fact_lookup_concat": concat_table(clean["concat"].numpy(), multi, n_boot, seed).to_pylist(),
                           "fact_lookup_intervals": [{"measure": m, "layer": layer, "curve": c, "value": v, "n_entities": int(multi.sum())}
                                                     for (m, layer, c), v in curves.items()]})
    quoted = f"{top['layer']}.{top['head']} ({top['direct_effect']:+.3f} [{top['direct_effect_low']:.3f}, {top['direct_effect_high']:.3f}]"
    assert any(quoted in line for line in lines), lines
    assert any(line.startswith("last name token -> earlier name tokens") and "95% intervals over names" in line for line in lines), lines


def test_the_largest_ablation_line_quotes_the_drop_inside_its_own_interval():
    """The line read 'log p(correct) -0.588 [0.25, 0.94]': the drop negated beside the drop's interval."""
    from analyses.fact_lookup.summaries import summary_lines

    def row(component, layer, leaves, within):
        total = leaves + within
        return {"component": component, "layer": layer, "logprob_drop": total, "logprob_drop_low": total - 0.3, "logprob_drop_high": total + 0.3,
                "set_mass_drop": leaves, "set_mass_drop_low": leaves - 0.2, "set_mass_drop_high": leaves + 0.2,
                "within_set_drop": within, "within_set_drop_low": within - 0.1, "within_set_drop_high": within + 0.1}

    lines = summary_lines({"fact_lookup_entities": [], "fact_lookup_probe": [], "fact_lookup_hidden": [],
                           "fact_lookup_ablation": [row("mlp", 1, 0.44, 0.148), row("attn", 0, -0.1, 0.05)]})
    assert "largest ablation: mlp 1, log p(correct) drops 0.588 [0.29, 0.89] nats" in lines
    assert "  of which leaving the answer set 0.440 [0.24, 0.64], the choice within it 0.148 [0.05, 0.25]" in lines
