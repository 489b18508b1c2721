"""Sweep throughput on Ray: the same truncation shards on 1 actor and on 2 actors (a private local
Ray instance), each actor with a warm model; rows/s counted from the moment every actor is ready
(model loading excluded) to the last shard, and the results of every configuration checked equal
to the first one's.

The configurations: 1 actor x 1 torch thread, 1 actor x all cores' threads, 2 actors x 1 thread.
Prints rows/s per configuration and the ratios. On a 2-core box the honest comparison is with
the same threads per actor (ratio near 2 when the shards are compute-bound); against one actor
that already uses both cores, a second actor adds little.
    python benchmarks/sweep_scaling.py [--n-docs 24] [--max-tokens 32] [--k-max 5] [--shard-docs 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-docs", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--k-max", type=int, default=5)
    parser.add_argument("--shard-docs", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    import numpy as np

    from analyses.core.contract import no_progress
    from analyses.inputs.corpus import InputChoice, build_inputs
    from analyses.model.loading import load_model
    from app.run.ray_pool import PoolOptions, run_on_actors
    from app.run.runner import RunRequest, prepare, shard_plan
    from app.run.sweep import actor_init, actor_work

    inputs, _ = build_inputs(InputChoice("pile", None, None, args.n_docs, args.max_tokens, 0, None), ("pile",))
    prepared = prepare(RunRequest("truncation", inputs, {"k_max": str(args.k_max)}))
    model = load_model(args.model, device="cpu", dtype="float32")
    state = prepared.analysis.prepare(model, list(inputs), prepared.params, no_progress, threading.Event())
    del model
    by_id = {item.input_id: item for item in inputs}
    plan = shard_plan(prepared.analysis, inputs, args.shard_docs)
    payloads = [(i, ("shard", "truncation", prepared.params, [by_id[x] for x in ids], state)) for i, ids in enumerate(plan)]
    cores = os.cpu_count() or 2
    configs = [("1 actor x 1 thread", 1, 1), (f"1 actor x {cores} threads", 1, cores), ("2 actors x 1 thread", 2, 1)]
    rates, reference, ok = {}, None, True
    for label, actors, threads in configs:
        ready: list[float] = []
        finished: list[tuple[float, int]] = []
        results = {}

        def on_event(text: str, ready: list[float] = ready) -> None:
            if " started " in text:
                ready.append(time.perf_counter())

        def on_result(key, value, finished: list = finished, results: dict = results) -> None:
            table = value["result"].tables["truncation"]
            finished.append((time.perf_counter(), table.num_rows))
            results[key] = table

        options = PoolOptions(address="local", actors=actors, num_gpus=0, num_cpus=0.5 if actors > 1 else 1,
                              threads_per_actor=threads, local_cpus=cores, local_gpus=0)
        run_on_actors(options, actor_init, (args.model, "cpu", "float32"), actor_work, list(payloads), on_result, on_event)
        start = max(ready)
        rows = sum(n for t, n in finished if t >= start)
        seconds = max(t for t, _ in finished) - start
        rates[label] = rows / seconds
        print(f"{label:22s}: {rates[label]:10,.0f} rows/s ({rows:,} rows in {seconds:.1f} s after every actor was ready; "
              f"{len([1 for t, _ in finished if t < start])} shards done before)", flush=True)
        cos = np.concatenate([results[k]["cos"].to_numpy() for k in sorted(results)])
        if reference is None:
            reference = cos
        else:
            same = np.array_equal(cos, reference)
            ok &= same or bool(np.abs(cos - reference).max() <= 1e-5)
            print(f"{'':22s}  results equal to the first configuration: {same} (max diff {np.abs(cos - reference).max():.2e})")
    base1, base_all, two = rates[configs[0][0]], rates[configs[1][0]], rates[configs[2][0]]
    print(f"2 actors / 1 actor, 1 thread each: {two / base1:.2f}x")
    print(f"2 actors x 1 thread / 1 actor x {cores} threads: {two / base_all:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
