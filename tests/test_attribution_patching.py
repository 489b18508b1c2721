"""Attribution patching: estimates against exact patching (first order, every family), the exact
path against causal tracing's restore, the QK fix on heads only and on a planted saturated head,
and runs stored through the runner."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analyses import attribution_patching
from analyses.attribution_patching import engine, exact
from analyses.causal_trace import engine as causal_engine
from analyses.core.contract import Input, no_progress
from app import charts
from app.run.runner import RunRequest, execute, prepare

PROMPT = "The Eiffel Tower is located in the city of"
NODES = (("resid", (1, 3)), ("attn", (1, 5)), ("mlp", (0, 2)), ("head", (1, 2, 3)), ("head", (0, 1, 2)), ("head", (2, 3, 6)),
         ("head_total", (1, 2)), ("neuron_sum", (1, 5)), ("neuron_last", (2, 7)))


def _tokens(model, text: str = PROMPT):
    return model.to_tokens(text, prepend_bos="auto")


def _noise_setup(model, scale: float, samples: int = 2, metric: str = "logprob", denoise: bool = False) -> engine.Setup:
    import torch

    tokens = _tokens(model)
    with torch.inference_mode():
        target = int(model.bridge(tokens)[0, -1].argmax())
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((samples, 3, model.d_model))) * scale
    clean, corrupt = engine.RunInput(tokens), engine.RunInput(tokens, noise, (1, 4))
    base, source = (corrupt, clean) if denoise else (clean, corrupt)
    return engine.Setup(base, source, engine.Metric(metric, target))


def _estimate_and_exact(model, setup):
    scores, _, source = engine.node_scores(model, setup, "atp_star", graddrop=False)
    nodes = [exact.Node(kind, index) for kind, index in NODES]
    exact_values = np.array(exact.exact_effects(model, setup, nodes, source, scores.z_patched))
    return np.array([scores.estimate[kind][index] for kind, index in NODES]), exact_values


def test_estimates_equal_exact_effects_to_first_order(family_model):
    # The estimate is the first-order term of the exact effect: its error falls like the square of
    # the perturbation, so the relative error falls tenfold when the noise does.
    errors = []
    for scale in (3e-2, 3e-3):
        estimate, exact_values = _estimate_and_exact(family_model, _noise_setup(family_model, scale))
        assert np.all(np.abs(exact_values) > 0)
        errors.append(np.linalg.norm(estimate - exact_values) / np.linalg.norm(exact_values))
    assert errors[1] < 0.05, errors
    assert errors[1] < errors[0] / 3, errors


def test_the_exact_check_equals_causal_tracing_restore(family_model):
    # Denoising a resid node is causal tracing's restore of that state; one noise sample, so that
    # exp(log p) of the patched run is the trace's probability.
    setup = _noise_setup(family_model, 0.5, samples=1, denoise=True)
    scores, _, source = engine.node_scores(family_model, setup, "atp", graddrop=False)
    trace = causal_engine.trace_fast(family_model, causal_engine.TraceSetup(setup.source.tokens, (1, 4), setup.metric.target_id, setup.base.noise),
                                     ("resid",), window=2)
    cells = [(layer, pos) for layer in range(family_model.n_layers) for pos in (1, 3, 5, 9)]
    effects = exact.exact_effects(family_model, setup, [exact.Node("resid", cell) for cell in cells], source, scores.z_patched)
    low = math.exp(scores.base_metric)
    assert low == pytest.approx(trace.low, rel=1e-5)
    for (layer, pos), effect in zip(cells, effects):
        assert math.exp(scores.base_metric + effect) == pytest.approx(trace.probs["resid"][pos, layer], rel=1e-4), (layer, pos)
    assert np.ptp([trace.probs["resid"][pos, layer] for layer, pos in cells]) > 1e-3 * trace.low


def test_the_qk_pass_from_the_caches_equals_the_forward_qk_pass(family_model):
    # Where the cached (rotated) q and k reproduce the model's scores, the QK pass is computed from
    # the caches, not by a forward per position; it must equal the forward QK pass (the model's own
    # attention on the patched input) to float32 rounding (3e-7 measured; 1e-5 relative to the
    # largest change), and give exactly 0 where query, key and value do not change (before the subject).
    import torch

    from analyses.model.families import family_of

    setup = _noise_setup(family_model, 1.0)
    base, _ = engine.capture(family_model, setup.base)
    source, _ = engine.capture(family_model, setup.source)
    scales = engine.qk_scales(family_model, base, source)
    rotary_unhooked = family_of(family_model) in ("neox", "gptj")
    assert (scales is None) == rotary_unhooked
    if scales is None:
        return
    from_cache = engine._qk_from_cache(family_model, setup, base, source, scales)
    forward = engine._qk_forward(family_model, setup, base, source, batch_rows=64)
    for cached, patched in zip(from_cache, forward):
        for layer in range(family_model.n_layers):
            scale = float(patched[layer].abs().max())
            assert scale > 0
            torch.testing.assert_close(cached[layer], patched[layer], rtol=0, atol=1e-5 * scale)
            assert float(cached[layer][0].abs().max()) == 0.0


@pytest.mark.parametrize("corruption", ["noising", "denoising", "corrupt prompt"])
def test_both_runs_in_one_batch_equal_the_two_runs_apart(family_model, corruption):
    # node_scores runs the source rows in the base run's batch (one forward, not two): the caches,
    # logits and gradients must equal the two runs captured apart and the gradient run alone, to float32
    # rounding, whichever run carries the noise or a corrupt prompt.
    import torch

    if corruption == "corrupt prompt":
        tokens = _tokens(family_model)
        other = _tokens(family_model, "The Colosseum is located in the city of")
        if other.shape != tokens.shape:
            pytest.skip("the corrupt prompt has another token length in this tokenizer")
        setup = engine.Setup(engine.RunInput(tokens), engine.RunInput(other), engine.Metric("logprob", 0))
    else:
        setup = _noise_setup(family_model, 1.0, samples=2, denoise=corruption == "denoising")
    base, base_logits = engine.capture(family_model, setup.base)
    source, source_logits = engine.capture(family_model, setup.source)
    grads = engine.gradients(family_model, setup, [0])
    base2, base_logits2, grads2, source2, source_logits2 = engine.both_runs(family_model, setup)
    assert base_logits2.shape == base_logits.shape and source_logits2.shape == source_logits.shape
    torch.testing.assert_close(base_logits2, base_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(source_logits2, source_logits, rtol=1e-4, atol=1e-4)
    for apart, together in ((base, base2), (source, source2), (grads, grads2)):
        assert set(apart) == set(together)
        for key in apart:
            scale = float(apart[key].abs().max())
            torch.testing.assert_close(together[key], apart[key], rtol=0, atol=1e-4 * max(scale, 1e-6), msg=str(key))
    assert not torch.allclose(base2[("resid", 0)][0], source2[("resid", 0)][0])  # the two runs did not swap or merge


def test_the_qk_fix_changes_only_attention_head_estimates(tiny_model):
    setup = _noise_setup(tiny_model, 1.0)
    star, _, _ = engine.node_scores(tiny_model, setup, "atp_star", graddrop=False)
    plain, _, _ = engine.node_scores(tiny_model, setup, "atp", graddrop=False)
    for kind in ("resid", "attn", "mlp", "head_total", "neuron_sum", "neuron_last"):
        np.testing.assert_array_equal(star.estimate[kind], plain.estimate[kind], err_msg=kind)
    assert not np.allclose(star.estimate["head"], plain.estimate["head"], rtol=1e-3, atol=0)
    np.testing.assert_array_equal(plain.estimate["head"], star.atp["head"])


def test_graddrop_scores_are_means_of_absolute_layer_estimates(tiny_model):
    # A node in the last layer has no later layer to drop: every variant's estimate is the plain
    # one but its own layer's (where its own contribution is detached, 0), so its score is |AtP|.
    setup = _noise_setup(tiny_model, 1.0)
    scores, _, _ = engine.node_scores(tiny_model, setup, "atp_star", graddrop=True)
    last = tiny_model.n_layers - 1
    np.testing.assert_allclose(scores.graddrop["mlp"][last], np.abs(scores.estimate["mlp"][last]), rtol=1e-4)
    assert scores.graddrop["resid"].min() >= 0


def _planted_saturated_gpt2(folder):
    """A one-layer GPT-2 with linear norms and no MLP whose head 0 attends from every query to
    position 0 with a score gap of 20 (saturated), unless a token carrying a marker (' fish') sits
    at an earlier position: its key scores 40 and takes the attention. Only head 0 writes."""
    import torch

    from analyses.model.loading import load_model
    from tests.helpers.planted import _linear_norm_gpt2, _set_embeddings

    model, generator = _linear_norm_gpt2(folder)
    d = 64
    with torch.no_grad():
        body = model.transformer
        wpe = torch.zeros(256, d)
        wpe[0, 5] = 1.0
        block = _set_embeddings(body, wpe, generator)
        marker = _fish_id(folder)
        body.wte.weight[marker, 6] += 1.0
        body.wte.weight[marker, 62] -= 1.0
        w, bias = torch.zeros(d, 3 * d), torch.zeros(3 * d)
        w[5, d + 0], w[6, d + 0], bias[0] = 20.0, 40.0, 4.0  # score = q . k / 4 = k[0]
        w[16:48, 2 * d : 2 * d + 16] = torch.randn(32, 16, generator=generator)
        block.attn.c_attn.weight.copy_(w)
        block.attn.c_attn.bias.copy_(bias)
        c_proj = torch.zeros(d, d)
        c_proj[0:16, 16:48] = torch.randn(16, 32, generator=generator)
        block.attn.c_proj.weight.copy_(c_proj)
        block.attn.c_proj.bias.zero_()
        for parameter in block.mlp.parameters():
            parameter.zero_()
    model.save_pretrained(folder)
    return load_model(str(folder), device="cpu", dtype="float32")


def _fish_id(folder) -> int:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(folder)(" fish", add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]


def test_the_qk_fix_recovers_a_saturated_head_that_plain_atp_misses(tmp_path):
    model = _planted_saturated_gpt2(tmp_path / "saturated")
    clean, corrupt = _tokens(model, "cat dog tree house river stone cloud"), _tokens(model, "cat dog tree fish river stone cloud")
    assert clean.shape == corrupt.shape
    target, foil = (model.tokenizer.encode(word, add_special_tokens=False)[0] for word in (" cat", " dog"))
    setup = engine.Setup(engine.RunInput(clean), engine.RunInput(corrupt), engine.Metric("logit_diff", target, foil))
    star, _, source = engine.node_scores(model, setup, "atp_star", graddrop=False)
    node = (0, 0, 3)  # head 0 reading the marked token
    effect = exact.exact_effects(model, setup, [exact.Node("head", node)], source, star.z_patched)[0]
    assert abs(effect) > 1.0
    # Plain AtP linearises the saturated softmax: the key's gradient is ~exp(-20) of what it moves.
    assert abs(star.atp["head"][node]) < 1e-3 * abs(effect)
    # AtP* recomputes the pattern through the softmax; everything downstream is linear here.
    assert star.estimate["head"][node] == pytest.approx(effect, rel=1e-4)


def _run(model, store, raw: dict, text: str = PROMPT) -> int:
    prepared = prepare(RunRequest("attribution-patching", (Input(0, "prompt", text),), raw))
    return execute(store, model, prepared, no_progress)


def test_a_run_stores_estimates_beside_exact_checks_and_draws(tiny_model, store):
    run_id = _run(tiny_model, store, {"subject": "Eiffel Tower", "samples": "2", "top_k": "3", "random_checks": "4"})
    n_layers, seq_len = tiny_model.n_layers, _tokens(tiny_model).shape[1]
    counts = dict(store.query("SELECT kind, count(*) FROM attribution_patching WHERE run_id = ? GROUP BY 1", [run_id]).rows)
    assert counts == dict.fromkeys(("resid", "attn", "mlp"), n_layers * seq_len)
    checked = store.query("SELECT kind, checked, count(*) FROM attribution_patching WHERE run_id = ? AND exact IS NOT NULL GROUP BY ALL ORDER BY ALL", [run_id]).rows
    assert {(kind, label): n for kind, label, n in checked} == {(kind, label): n for kind in ("attn", "mlp", "resid") for label, n in (("sample", 4), ("top", 3))}
    # The random checks are drawn from nodes that can have an effect: none before the noised subject.
    first = store.query("SELECT min(pos) FROM attribution_patching WHERE run_id = ? AND estimate <> 0", [run_id]).rows[0][0]
    assert first > 0
    sampled_positions = store.query("SELECT min(pos) FROM attribution_patching WHERE run_id = ? AND checked = 'sample'", [run_id]).rows[0][0]
    assert sampled_positions >= first
    rows = store.query("SELECT kind, spearman, false_negatives, checked FROM atp_checks WHERE run_id = ? ORDER BY kind", [run_id]).rows
    assert [row[0] for row in rows] == sorted(("resid", "attn", "mlp", "head", "head_total", "neuron_sum", "neuron_last", "edge"))
    assert all(row[3] == 7 for row in rows if row[0] != "edge")
    # spearman_abs ranks the sizes: recomputed from the stored checked nodes of each position kind.
    from scipy.stats import spearmanr

    for kind in ("resid", "attn", "mlp"):
        pairs = store.query("SELECT abs(estimate), abs(exact) FROM attribution_patching WHERE run_id = ? AND kind = ? AND exact IS NOT NULL",
                            [run_id, kind]).rows
        stored = store.query("SELECT spearman_abs FROM atp_checks WHERE run_id = ? AND kind = ?", [run_id, kind]).rows[0][0]
        expected = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
        assert stored == pytest.approx(expected, abs=1e-9) or (math.isnan(stored) and math.isnan(expected)), kind
    status = store.query("SELECT ok FROM run_checks WHERE run_id = ? AND \"check\" = 'invariant_unchanged_nodes_zero'", [run_id]).rows
    assert status == [(True,)]
    for chart in attribution_patching.SPEC.charts:
        assert charts.load_charts(store, chart, run_id), chart.title


def test_a_run_without_edges_draws_in_a_store_that_never_held_an_edge_table(tiny_model, store):
    # Found driving the TUI: a store whose attribution-patching runs all had edges=false has no
    # atp_edges table, and the circuit chart's query failed the whole run's charts ("Catalog
    # Error: Table with name atp_edges does not exist"). A chart of a table that does not exist has no data.
    run_id = _run(tiny_model, store, {"subject": "Eiffel Tower", "samples": "1", "edges": "false", "graddrop": "false"})
    tables = {row[0] for row in store.query("SELECT table_name FROM information_schema.tables").rows}
    assert "atp_edges" not in tables
    loaded = {chart.table: charts.load_charts(store, chart, run_id) for chart in attribution_patching.SPEC.charts}
    assert loaded["atp_edges"] == []
    assert loaded["attribution_patching"] and loaded["atp_heads"]


def test_a_prompt_set_is_sharded_by_prompt_with_the_mean(tiny_model, store):
    from analyses.attribution_patching import AttributionPatching

    texts = [(PROMPT, "Eiffel Tower"), ("The Colosseum is located in the city of", "Colosseum")]
    inputs = tuple(Input(i, "prompt_set", text, {"subject": subject}) for i, (text, subject) in enumerate(texts))
    assert AttributionPatching().shards(list(inputs), 1) == [[0], [1]]
    prepared = prepare(RunRequest("attribution-patching", inputs, {"samples": "1", "top_k": "2", "random_checks": "2", "graddrop": "false"}))
    run_id = execute(store, tiny_model, prepared, no_progress, shard_docs=1)
    per_prompt = store.query("SELECT input_id, layer, head, estimate FROM atp_heads WHERE run_id = ? AND kind = 'head_total'", [run_id]).rows
    means = {(layer, index): value for layer, index, value in store.query(
        "SELECT layer, \"index\", mean_estimate FROM atp_mean WHERE run_id = ? AND kind = 'head_total'", [run_id]).rows}
    expected: dict = {}
    for _, layer, head, value in per_prompt:
        expected.setdefault((layer, head), []).append(value)
    assert means.keys() == expected.keys()
    for key, values in expected.items():
        assert len(values) == 2
        assert means[key] == pytest.approx(sum(values) / 2, rel=1e-12)


def test_random_checks_skip_nodes_before_the_change_and_the_false_negatives_scale_to_that_frame():
    from analyses.attribution_patching.tables import check_summary, choose_checks, live_nodes

    shape = (3, 6)  # layers x positions; the change starts at position 2
    ranking = np.arange(18, dtype=float).reshape(shape)[::-1].copy()
    live = live_nodes("resid", shape, 2)
    assert live.reshape(shape)[:, :2].sum() == 0 and live.reshape(shape)[:, 2:].all()
    assert live_nodes("neuron_sum", (3, 5), 2).all() and not live_nodes("head", (3, 2, 6), 2).reshape(3, 2, 6)[..., :2].any()
    for seed in range(20):
        top, sampled, frame = choose_checks(ranking, 2, 5, np.random.default_rng(seed), live)
        assert all(flat % 6 >= 2 for flat in sampled) and not set(top) & set(sampled)
        assert frame == int(live.sum()) - sum(1 for flat in top if live[flat])
    # Two of the five sampled nodes miss: 2 x frame / 5 false negatives, not 2 x (all nodes - top) / 5.
    top, sampled, frame = choose_checks(ranking, 2, 5, np.random.default_rng(0), live)
    exact_values = dict.fromkeys(top + sampled, 0.0)
    exact_values[top[0]] = 1.0
    exact_values[sampled[0]] = exact_values[sampled[1]] = 0.5
    estimate = np.zeros(18)
    summary = check_summary("resid", estimate, estimate, exact_values, top, sampled, 0.1, frame)
    assert summary["false_negatives"] == 2 and summary["fn_estimate"] == pytest.approx(2 * frame / 5)


def test_the_unchanged_nodes_invariant_is_relative_to_the_largest_effect_and_catches_a_leak():
    """Float32 rounding before the subject (the clean run is one row, the noised runs a batch) passes;
    an estimate of a tenth of the largest before the subject (noise leaking) fails."""
    import pyarrow as pa

    from analyses.attribution_patching.tables import invariants

    def read_with(before: float):
        tables = {
            "atp_inputs": pa.table({"input_id": [0], "corruption": ["noise"], "changed_start": [2]}),
            "attribution_patching": pa.table({"input_id": [0] * 4, "pos": [0, 1, 2, 3], "estimate": [before, 0.0, -0.8, 0.3],
                                              "exact": [None, before / 2, -1.2, None]}),
        }
        return lambda name, columns: tables[name].select(columns)

    (name, value, tolerance, ok, detail), = invariants(None, read_with(7.6e-7))
    assert name == "invariant_unchanged_nodes_zero" and ok and abs(value - 7.6e-7 / 1.2) < 1e-12 and "relative to the largest 1.2" in detail
    (_, value, _, ok, _), = invariants(None, read_with(0.12))
    assert not ok and abs(value - 0.1) < 1e-12
