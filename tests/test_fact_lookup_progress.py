"""fact-lookup's prepare step reports progress while it measures the candidate prompts: one report
per forward batch of every candidate, counting up to the whole (on the embedded model this phase
took 99 s with no report after its first note: benchmarks/cancel_latency.py's longest gap)."""
from __future__ import annotations

import threading

from analyses.core.registry import get_analysis
from analyses.fact_lookup import Params
from analyses.fact_lookup.lookup import batch_count
from analyses.fact_lookup.prompts import candidates
from analyses.inputs.entities import entity_inputs
from tests.test_fact_lookup import small_table


def test_measuring_the_candidate_prompts_reports_every_batch(tiny_model):
    inputs = entity_inputs(small_table(4))  # 12 entities, 3 values
    params = Params(folds=3, intervention_entities=6, n_neurons=2, batch_size=4, n_permutations=10, n_bootstrap=50,
                    prompt="auto", prompt_entities=10, sites="resid_post,mlp_out")
    reports: list[tuple[int, int, str]] = []
    get_analysis("fact-lookup").prepare(tiny_model, inputs, params, lambda done, total, note="": reports.append((done, total, note)),
                                        threading.Event())
    measuring = [(done, total) for done, total, note in reports if note == "measuring the candidate prompts"]
    total = len(candidates(tiny_model.tokenizer)) * batch_count(10, 4)
    assert total > 1
    assert measuring == [(done, total) for done in range(total + 1)]  # the start, then one per batch of every candidate
