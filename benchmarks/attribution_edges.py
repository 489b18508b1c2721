"""Edge attribution patching against exact edge patching on one prompt: the time of every edge's
score (EAP: a source run and one gradient pass) in seconds and forward passes, exact edge patching
of the top edges and of a random sample of the rest (batched), the Spearman rank correlation over
each set, the sampled false-negative estimate, and how the edges into each input sum to its score.

    PYTHONPATH=. nice -n 10 python benchmarks/attribution_edges.py [--model smollm2-135m] [--samples 1] [--top 100] [--sample 200]
"""
from __future__ import annotations

import argparse
import statistics

from benchmarks.attribution_patching import PROMPT, SUBJECT, TARGET, _timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--corrupt-prompt", default=None)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()

    import numpy as np
    import torch

    from analyses.attribution_patching import Params, circuit, edges
    from analyses.attribution_patching import setup as atp_setup
    from analyses.attribution_patching.tables import check_summary, spearman
    from analyses.causal_trace.engine import batch_tokens_limit
    from analyses.core.contract import Input
    from analyses.model.loading import load_model

    model = load_model(args.model, device=args.device, dtype="float32")
    raw = {"target": TARGET, "samples": args.samples}
    raw.update({"corrupt_prompt": args.corrupt_prompt} if args.corrupt_prompt else {"subject": SUBJECT})
    params = Params(**raw)
    item = Input(0, "prompt", PROMPT)
    change = atp_setup.locate_change(model, item, params)
    state = atp_setup.run_state(model, [item], params)
    target_id, _ = atp_setup.metric_tokens(model, params)
    setup, _ = atp_setup.build_setup(model, item, params, state, change, target_id, None)
    seq_len = len(change.ids)
    batch_rows = max(1, batch_tokens_limit(model, seq_len) // seq_len)
    print(f"model {model.name}, torch threads {torch.get_num_threads()}, {seq_len} tokens, corruption {change.corruption}, samples {setup.samples}")
    with torch.inference_mode():
        model.bridge(setup.base.tokens)
        forward_s = statistics.median(_timed(lambda: model.bridge(setup.base.tokens))[1][1] for _ in range(5))

    scored, eap_s = _timed(lambda: edges.edge_scores(model, setup))
    valid = [tuple(int(i) for i in pair) for pair in np.argwhere(~np.isnan(scored.scores))]
    top = circuit.top_edges(scored.scores, args.top)
    top_set = set(top)
    rest = [pair for pair in valid if pair not in top_set]
    rng = np.random.default_rng(0)
    sampled = [rest[int(i)] for i in sorted(rng.choice(len(rest), size=min(args.sample, len(rest)), replace=False))]
    effects, exact_s = _timed(lambda: edges.exact_edges(model, setup, scored, top + sampled, batch_rows))
    exact_of = dict(zip(top + sampled, effects))
    per_edge = exact_s[1] / len(top + sampled)

    print(f"one forward: {forward_s * 1000:.1f} ms CPU (median of 5)")
    print(f"EAP, all {len(valid)} edges: {eap_s[0]:.2f} s wall, {eap_s[1]:.2f} s CPU = {eap_s[1] / forward_s:.1f} forwards")
    print(f"exact edge patching, {len(top + sampled)} edges batched: {exact_s[0]:.2f} s wall, {exact_s[1]:.2f} s CPU, "
          f"{per_edge * 1000:.1f} ms CPU per edge; all edges at that rate: {per_edge * len(valid):.0f} s CPU = "
          f"{per_edge * len(valid) / eap_s[1]:.0f}x EAP (projected from the measured rate, not run)")
    for name, chosen in (("top", top), ("random sample", sampled), ("both", top + sampled)):
        rho = spearman([float(scored.scores[pair]) for pair in chosen], [exact_of[pair] for pair in chosen])
        print(f"Spearman(EAP, exact) over the {name} edges ({len(chosen)}): {rho:.3f}")
    index_of = {pair: i for i, pair in enumerate(valid)}
    flat = scored.scores[tuple(np.array(valid).T)]
    summary = check_summary("edge", flat, flat, {index_of[p]: v for p, v in exact_of.items()}, [index_of[p] for p in top],
                            [index_of[p] for p in sampled], params.fn_threshold)
    print(f"false negatives in the sample: {summary['false_negatives']} (|exact| >= {summary['threshold']:.4f}); estimated among all: {summary['fn_estimate']:.1f}")
    sums = np.nansum(scored.scores, axis=0)
    print(f"edges into an input vs its score: max |difference| / max |score| = {np.max(np.abs(sums - scored.input_scores)) / np.max(np.abs(scored.input_scores)):.2e}"
          f" ({'exact decomposition' if scored.exact_sum else 'first order (post-norms)'})")
    print("top edges (EAP / exact):")
    for pair in top[:10]:
        print(f"  {scored.ups[pair[0]].name} -> {scored.downs[pair[1]].name}: {scored.scores[pair]:+.3f} / {exact_of[pair]:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
