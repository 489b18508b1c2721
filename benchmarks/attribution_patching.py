"""Attribution patching against exact patching on one prompt: the time of all node scores (plain AtP,
AtP* with and without GradDrop) against exact patching of every head at every position (batched),
in seconds and in forward passes; Spearman rank correlation of the estimates with exact patching
of every resid / attn / MLP position node and every head (signed, and of the sizes |.|); the false negatives found by the full
exact pass next to the run's sampled estimate. Prints a table.

What each side times. AtP: engine.node_scores only, i.e. the base and source runs (one forward
of both runs' rows in one batch, caching every node), the QK pass (heads; from the cached q, k, v where the model's scores
are scale . q k + mask, a batched forward per position otherwise), one backward, the estimates;
GradDrop adds one backward per layer (batched variants) and is reported apart. The run's in-run
exact checks (top-k and sampled nodes) are not timed: they are a separate verification. Exact:
one row per head and position (every head at every position, L x H x T rows) patched through
the bridge's hooks in batches of the model layer's token budget, the forward stopped after the
last block and unembedded at the last position only. Forward equivalents: a time divided by the
CPU time of one plain forward of the same batch shape (one row of the prompt), the
machine-independent cost.

    PYTHONPATH=. python benchmarks/attribution_patching.py [--model smollm2-135m] [--samples 1] [--corrupt-prompt TEXT] [--repeat 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"
TARGET = " Paris"
METRIC_TEXT = {"logprob": "log p({target!r})", "logit_diff": "logit({target!r}) - logit({foil!r})", "kl": "KL(clean || patched)"}


def _timed(fn):
    """(value, (wall seconds, CPU seconds of this process)): on a shared machine the CPU time is the
    steadier measure of work, the wall time the one a user waits."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, (time.perf_counter() - start, time.process_time() - cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--corrupt-prompt", default=None, help="a corrupt prompt of the same length instead of subject noise")
    parser.add_argument("--metric", default="logprob", help="logprob, logit_diff (needs --foil) or kl, as the analysis's parameter")
    parser.add_argument("--foil", default=None, help="foil token text for --metric logit_diff, e.g. ' London'")
    parser.add_argument("--direction", default="auto", help="noising, denoising or auto (denoising for kl), as the analysis's parameter")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--random-checks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="AtP timings: the median of this many runs (by CPU time)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default). With several threads the CPU time of small one-row forwards counts the "
                             "threads' waiting, so 1 is the steadier measure on a shared machine; both sides run with the same setting")
    args = parser.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from scipy.stats import spearmanr

    from analyses.attribution_patching import Params, engine, exact
    from analyses.attribution_patching import setup as atp_setup
    from analyses.attribution_patching.tables import check_summary, choose_checks, live_nodes
    from analyses.causal_trace.engine import batch_tokens_limit
    from analyses.core.contract import Input
    from analyses.model.loading import load_model

    model = load_model(args.model, device=args.device, dtype="float32")
    raw = {"target": TARGET, "samples": args.samples, "metric": args.metric, "direction": args.direction}
    if args.foil:
        raw["foil"] = args.foil
    raw.update({"corrupt_prompt": args.corrupt_prompt} if args.corrupt_prompt else {"subject": SUBJECT})
    params = Params(**raw)
    item = Input(0, "prompt", PROMPT)
    change = atp_setup.locate_change(model, item, params)
    state = atp_setup.run_state(model, [item], params)
    target_id, foil_id = atp_setup.metric_tokens(model, params)
    setup, _ = atp_setup.build_setup(model, item, params, state, change, target_id, foil_id)
    seq_len = len(change.ids)
    batch_rows = max(1, batch_tokens_limit(model, seq_len) // seq_len)
    n_layers, n_heads = model.n_layers, model.bridge.cfg.n_heads
    direction = params.resolved_direction()
    print(f"model {model.name} on {model.device}, torch threads {torch.get_num_threads()}, {seq_len} tokens, "
          f"corruption {change.corruption} on tokens {change.changed}, samples {setup.samples}, metric {METRIC_TEXT[params.metric].format(target=TARGET, foil=args.foil)}, "
          f"{direction} ({'the clean run patched from the corrupt one' if direction == 'noising' else 'the corrupt run patched from the clean one'})")

    tokens = setup.base.tokens
    with torch.inference_mode():
        model.bridge(tokens)
        forwards = []
        for _ in range(5):
            _, seconds = _timed(lambda: model.bridge(tokens))
            forwards.append(seconds)
    forward_s = statistics.median(cpu for _, cpu in forwards)

    def median_timed(fn):
        runs = [_timed(fn) for _ in range(max(1, args.repeat))]
        runs.sort(key=lambda run: run[1][1])
        return runs[len(runs) // 2]

    (plain, _, source), plain_s = median_timed(lambda: engine.node_scores(model, setup, "atp", graddrop=False, batch_rows=batch_rows))
    (star, _, _), star_s = median_timed(lambda: engine.node_scores(model, setup, "atp_star", graddrop=False, batch_rows=batch_rows))
    # Before issue 21's fix the QK pass was always a batched forward per position: the same code, forced.
    cached_scales = engine.qk_scales
    engine.qk_scales = lambda *_: None  # type: ignore[assignment]
    try:
        _, plain_fwd_s = median_timed(lambda: engine.node_scores(model, setup, "atp", graddrop=False, batch_rows=batch_rows))
        _, star_fwd_s = median_timed(lambda: engine.node_scores(model, setup, "atp_star", graddrop=False, batch_rows=batch_rows))
    finally:
        engine.qk_scales = cached_scales  # type: ignore[method-assign]
    (star_gd, _, _), star_gd_s = _timed(lambda: engine.node_scores(model, setup, "atp_star", graddrop=True, batch_rows=batch_rows))
    # Where AtP*'s time goes (CPU seconds, one run of each part).
    (base_cache, _, _, source_cache, _), both_s = _timed(lambda: engine.both_runs(model, setup))
    qk_source = "cached q, k, v" if engine.qk_scales(model, base_cache, source_cache) is not None else "forward per position"
    _, qk_s = _timed(lambda: engine.qk_pass(model, setup, base_cache, source_cache, batch_rows))

    heads = [exact.Node("head", (layer, head, pos)) for layer in range(n_layers) for head in range(n_heads) for pos in range(seq_len)]
    head_exact, heads_s = _timed(lambda: exact.exact_effects(model, setup, heads, source, star.z_patched, batch_rows))
    positions = [exact.Node(kind, (layer, pos)) for kind in ("resid", "attn", "mlp") for layer in range(n_layers) for pos in range(seq_len)]
    position_exact, positions_s = _timed(lambda: exact.exact_effects(model, setup, positions, source, star.z_patched, batch_rows))

    exact_of = {"head": np.array(head_exact).reshape(n_layers, n_heads, seq_len)}
    position_array = np.array(position_exact).reshape(3, n_layers, seq_len)
    for index, kind in enumerate(("resid", "attn", "mlp")):
        exact_of[kind] = position_array[index]
    first = change.changed[0]

    def kept(values, kind):
        # Positions before the first changed token (the noised subject, or the first token where the
        # corrupt prompt differs) are exactly 0 in every estimate and in exact patching alike: ties
        # that would only inflate the rank correlation.
        return values[..., first:].ravel()

    # A batched exact forward costs less per row than a forward of one row (the weights are read
    # once per batch, the fixed Python cost of a call is shared): measured on one full batch of the
    # exact path's own forward (unembedding the last position only, as the exact rows do).
    with torch.inference_mode():
        _, batch_s = _timed(lambda: engine.forward(model, setup.base, [0] * batch_rows, []))

    print()
    print(f"one forward of the prompt (1 x {seq_len} tokens): {forward_s * 1000:.1f} ms CPU (median of 5); forwards and ratios below are in CPU time")
    print(f"AtP timings: median of {max(1, args.repeat)} runs; GradDrop one run")
    print(f"{'what':52s} {'wall s':>8s} {'CPU s':>8s} {'forwards':>9s} {'x faster than exact heads (CPU / wall)':>40s}")
    for label, (wall, cpu) in (("AtP, every node", plain_s), ("AtP* (QK fix), every node", star_s), ("AtP* (QK fix + GradDrop ranking), every node", star_gd_s),
                               ("AtP, QK pass forced through the forward (before)", plain_fwd_s), ("AtP*, QK pass forced through the forward (before)", star_fwd_s),
                               (f"exact: every head at every position ({len(heads)} nodes)", heads_s),
                               (f"exact: every resid/attn/mlp position node ({len(positions)})", positions_s)):
        print(f"{label:52s} {wall:8.2f} {cpu:8.2f} {cpu / forward_s:9.1f} {heads_s[1] / cpu:28.1f} / {heads_s[0] / wall:9.1f}")
    print(f"AtP* parts (CPU s / forwards): base and source runs, one forward + backward {both_s[1]:.3f} / {both_s[1] / forward_s:.1f}, "
          f"QK pass ({qk_source}) {qk_s[1]:.3f} / {qk_s[1] / forward_s:.1f}")
    print(f"exact batches: {batch_rows} rows x {seq_len} tokens per forward, {batch_s[1]:.3f} s CPU = {batch_s[1] / forward_s:.1f} forwards of one row "
          f"({batch_rows * forward_s / batch_s[1]:.1f}x cheaper per row than one-row forwards); exact heads cost "
          f"{heads_s[1] / forward_s / len(heads):.3f} forwards per node")
    # One forward per head (the unbatched way) costs nodes x one forward: an estimate from the measured forward, not a run.
    print(f"AtP* (QK fix) vs one forward per head, estimated as {len(heads)} x one forward: {len(heads) * forward_s / star_s[1]:.0f}x")

    print()
    # Signed ranks, and the ranks of the sizes |estimate| against |exact| (which nodes matter, the
    # ranking the top-k checks and the false negatives use).
    print(f"{'kind':8s} {'nodes':>6s} {'Spearman AtP':>13s} {'Spearman AtP*':>14s} {'|.| AtP*':>9s} {'true FN (AtP*)':>15s} {'sampled FN est.':>16s} {'FN threshold':>13s}")
    rng = np.random.default_rng(0)
    for kind in ("resid", "attn", "mlp", "head"):
        truth = exact_of[kind]
        atp_rho = spearmanr(kept(plain.estimate[kind], kind), kept(truth, kind)).statistic
        star_rho = spearmanr(kept(star_gd.estimate[kind], kind), kept(truth, kind)).statistic
        size_rho = spearmanr(np.abs(kept(star_gd.estimate[kind], kind)), np.abs(kept(truth, kind))).statistic
        ranking = star_gd.graddrop[kind]
        top, sampled, frame = choose_checks(ranking, args.top_k, args.random_checks, rng, live_nodes(kind, truth.shape, first))
        flat_truth = truth.ravel()
        summary = check_summary(kind, star_gd.estimate[kind], plain.estimate[kind], {i: float(flat_truth[i]) for i in top + sampled},
                                top, sampled, params.fn_threshold, frame)
        threshold = params.fn_threshold * np.abs(flat_truth).max()
        outside = np.setdiff1d(np.arange(flat_truth.size), top)
        true_fn = int((np.abs(flat_truth[outside]) >= threshold).sum())
        print(f"{kind:8s} {kept(truth, kind).size:6d} {atp_rho:13.3f} {star_rho:14.3f} {size_rho:9.3f} {true_fn:15d} {summary['fn_estimate']:16.1f} {threshold:13.4f}")

    order = np.argsort(-np.abs(star_gd.estimate["head"]).ravel())[:8]
    print()
    print("top heads (layer, head, pos): AtP* estimate / plain AtP / exact")
    for flat in order:
        layer, head, pos = np.unravel_index(flat, star_gd.estimate["head"].shape)
        print(f"  L{layer} H{head} pos {pos} ({model.token_strings([change.ids[pos]])[0]!r}): "
              f"{star_gd.estimate['head'][layer, head, pos]:+.4f} / {plain.estimate['head'][layer, head, pos]:+.4f} / {exact_of['head'][layer, head, pos]:+.4f}")
    totals = star_gd.estimate["head_total"]
    print("top whole heads (layer, head): AtP estimate", ", ".join(
        f"L{layer}H{head} {totals[layer, head]:+.3f}" for layer, head in zip(*np.unravel_index(np.argsort(-np.abs(totals).ravel())[:6], totals.shape))))
    for kind in ("neuron_last", "neuron_sum"):
        values = star_gd.estimate[kind]
        best = np.argsort(-star_gd.graddrop[kind].ravel())[:6]
        print(f"top neurons ({kind}, by GradDrop): " + ", ".join(f"L{layer}N{neuron} {values[layer, neuron]:+.3f}" for layer, neuron in zip(*np.unravel_index(best, values.shape))))
    print(f"metric on the base run {star.base_metric:.4f}, on the source run {star.source_metric:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
