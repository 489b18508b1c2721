"""Edge attribution patching: estimates against brute-force exact edge patching (first order, every
family the bridge splits per head), the edges into an input summing to its own score, the upstream
writes rebuilding the residual stream, the pruning, and a stored run."""
from __future__ import annotations

import numpy as np
import pytest

from analyses.attribution_patching import circuit, edges, engine
from analyses.core.contract import Input, no_progress
from app import charts
from app.run.runner import RunRequest, execute, prepare

PROMPT = "The Eiffel Tower is located in the city of"


def _setup(model, scale: float, samples: int = 2, denoise: bool = False) -> engine.Setup:
    import torch

    tokens = model.to_tokens(PROMPT, prepend_bos="auto")
    with torch.inference_mode():
        target = int(model.bridge(tokens)[0, -1].argmax())
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((samples, 3, model.d_model))).float() * scale
    clean, corrupt = engine.RunInput(tokens), engine.RunInput(tokens, noise, (1, 4))
    base, source = (corrupt, clean) if denoise else (clean, corrupt)
    return engine.Setup(base, source, engine.Metric("logprob", target))


def test_families_without_per_head_inputs_say_why(family_model):
    reason = edges.unavailable(family_model)
    from analyses.model.adapters import adapter_for

    family = adapter_for(family_model).family
    if reason is not None:
        # GPT-J and Phi: one norm feeds attention and MLP; the bridge has no MLP input before it.
        assert reason.startswith("edges: "), reason
        assert family in ("gptj", "phi"), family
        return
    assert family in ("gpt2", "llama", "gemma3", "neox"), family
    for scale in (3e-2, 3e-3):
        setup = _setup(family_model, scale)
        scored = edges.edge_scores(family_model, setup)
        assert np.isnan(scored.scores).sum() > 0 and (~np.isnan(scored.scores)).sum() > 100
        pairs = circuit.top_edges(scored.scores, 30)
        exact = np.array(edges.exact_edges(family_model, setup, scored, pairs))
        estimate = np.array([scored.scores[pair] for pair in pairs])
        assert np.all(np.abs(exact) > 0)
        error = np.linalg.norm(estimate - exact) / np.linalg.norm(exact)
        if scale == 3e-2:
            large = error
        # The edges into an input add up to that input's own score: exactly where the residual
        # stream is the plain sum of its writers, to first order through Gemma 3's post-norms.
        sums = np.nansum(scored.scores, axis=0)
        mismatch = np.max(np.abs(sums - scored.input_scores)) / np.max(np.abs(scored.input_scores))
        if scored.exact_sum:
            assert mismatch < 1e-4, mismatch  # float32 activations: differences of near-equal values
        elif scale == 3e-2:
            large_mismatch = mismatch
        else:
            assert mismatch < large_mismatch / 3, (mismatch, large_mismatch)
    # First order: the error falls about tenfold with the perturbation.
    assert error < 0.1, (error, large)
    assert error < large / 3, (error, large)


def test_every_edge_matches_brute_force_patching_at_a_small_perturbation(tiny_model):
    # Small next to this model's embeddings (std 0.02): 1.5% of them.
    setup = _setup(tiny_model, 3e-4, samples=1, denoise=True)
    scored = edges.edge_scores(tiny_model, setup)
    pairs = [tuple(int(i) for i in pair) for pair in np.argwhere(~np.isnan(scored.scores))]
    exact = np.array(edges.exact_edges(tiny_model, setup, scored, pairs, batch_rows=128))
    estimate = np.array([scored.scores[pair] for pair in pairs])
    big = np.abs(exact) > 0.05 * np.abs(exact).max()
    assert big.sum() > 10
    assert np.max(np.abs(estimate[big] - exact[big]) / np.abs(exact[big])) < 0.2
    assert np.linalg.norm(estimate - exact) / np.linalg.norm(exact) < 0.06
    # An edge that does not exist (a later node into an earlier input) is not scored.
    ups, downs = edges.nodes(tiny_model)
    later = next(i for i, up in enumerate(ups) if up.name == "L2.MLP")
    earlier = next(j for j, down in enumerate(downs) if down.name == "L1.MLP")
    assert np.isnan(scored.scores[later, earlier])


def test_the_upstream_writes_rebuild_the_final_residual_stream(tiny_model):
    # Patching every edge into the logits at once is patching the final residual stream: the
    # metric becomes the source run's. An independent check of the writes (no gradients).
    import torch

    setup = _setup(tiny_model, 0.5, samples=2)
    scored = edges.edge_scores(tiny_model, setup)
    total = scored.up_deltas.sum(1)  # every upstream node feeds the logits: [S, T, d]

    def add_all(tensor, hook):
        return tensor + total.to(tensor.dtype)

    with edges.edge_hooks(tiny_model), torch.inference_mode():
        patched = setup.metric(engine.forward(tiny_model, setup.base, setup.base_rows(), [(f"blocks.{tiny_model.n_layers - 1}.hook_resid_post", add_all)]))
        source = setup.metric(engine.forward(tiny_model, setup.source, setup.source_rows(), []))
        unpatched = setup.metric(engine.forward(tiny_model, setup.base, setup.base_rows(), []))
    np.testing.assert_allclose(patched.numpy(), source.numpy(), rtol=1e-4, atol=1e-4)
    assert float((patched - unpatched).abs().max()) > 1e-2
    # The bridge's flags are back as they were.
    assert not tiny_model.bridge.cfg.use_split_qkv_input and not tiny_model.bridge.cfg.use_attn_result


def test_pruning_keeps_strong_edges_connected_to_the_logits():
    found = [("L0.H1", "L2.MLP", 1.0), ("L2.MLP", "logits", -0.8), ("L0.H2", "L1.H3", 0.9), ("embed", "L0.KV0", 0.5),
             ("embed", "L0.H1", 0.01)]
    kept = circuit.prune(found, 0.05, {"L0.KV0": ["L0.H0", "L0.H1"]})
    # L1.H3 reaches nothing; L0.KV0 reaches the logits through its head L0.H1; the last is too weak.
    assert kept == [True, True, False, True, False]


def test_a_run_stores_edges_a_circuit_and_its_checks(tiny_model, store):
    raw = {"subject": "Eiffel Tower", "samples": "2", "top_k": "3", "random_checks": "4", "top_edges": "25", "edge_threshold": "0.1"}
    run_id = execute(store, tiny_model, prepare(RunRequest("attribution-patching", (Input(0, "prompt", PROMPT),), raw)), no_progress)
    rows = store.query("SELECT rank, upstream, node, estimate, exact, in_circuit FROM atp_edges WHERE run_id = ? ORDER BY rank", [run_id]).rows
    assert len(rows) == 25 and all(row[4] is not None for row in rows)
    magnitudes = [abs(row[3]) for row in rows]
    assert magnitudes == sorted(magnitudes, reverse=True)
    kept = [(row[1], row[2]) for row in rows if row[5]]
    assert kept and any(node == "logits" for _, node in kept)
    assert all(abs(row[3]) >= 0.1 * magnitudes[0] for row in rows if row[5])
    nodes = {row[0] for row in store.query("SELECT node FROM atp_circuit WHERE run_id = ?", [run_id]).rows}
    assert nodes == {name for pair in kept for name in pair}
    heads = store.query("SELECT node, estimate, exact FROM atp_circuit WHERE run_id = ? AND kind = 'head'", [run_id]).rows
    for node, estimate, effect in heads:
        layer, head = (int(part) for part in node[1:].split(".H"))
        stored = store.query("SELECT estimate, exact FROM atp_heads WHERE run_id = ? AND kind = 'head_total' AND layer = ? AND head = ?",
                             [run_id, layer, head]).rows[0]
        assert estimate == pytest.approx(stored[0]) and effect is not None
        if stored[1] is not None:
            assert effect == pytest.approx(stored[1], rel=1e-6)
    check = store.query("SELECT nodes, checked, spearman FROM atp_checks WHERE run_id = ? AND kind = 'edge'", [run_id]).rows
    assert check and check[0][1] == 25 + 4 and check[0][2] > 0.5
    ok = store.query("SELECT ok, value FROM run_checks WHERE run_id = ? AND \"check\" = 'invariant_edges_sum_to_input'", [run_id]).rows
    assert ok[0][0] is True and ok[0][1] < 1e-5
    graph = next(chart for chart in _spec().charts if chart.kind == "graph")
    (data,) = charts.load_charts(store, graph, run_id)
    assert set(data.circuit.nodes) == nodes
    off = execute(store, tiny_model, prepare(RunRequest("attribution-patching", (Input(0, "prompt", PROMPT),), {**raw, "edges": "false"})), no_progress)
    assert store.query("SELECT count(*) FROM atp_edges WHERE run_id = ?", [off]).rows == [(0,)]
    # iwb compare aligns the heatmaps of two runs and leaves the circuit (no axes to align) out.
    from app.run.compare import compare_runs

    compared = compare_runs(store, run_id, off)
    assert compared.charts and not any(isinstance(item.chart, type(graph)) for item in compared.charts)
    assert not any("Circuit" in line for line in compared.skipped), compared.skipped


def _spec():
    from analyses import attribution_patching

    return attribution_patching.SPEC


def test_progress_only_moves_forward_through_scores_checks_and_edges(tiny_model, store):
    seen: list[float] = []

    def record(done: int, total: int, note: str = "") -> None:
        if total:
            seen.append(done / total)

    raw = {"subject": "Eiffel Tower", "samples": "1", "graddrop": "false", "top_k": "2", "random_checks": "2", "top_edges": "5"}
    execute(store, tiny_model, prepare(RunRequest("attribution-patching", (Input(0, "prompt", PROMPT),), raw)), record)
    assert len(seen) > 5 and seen == sorted(seen), seen
