"""The analyses that merge per-shard aggregates, swept over two Ray actors (a real local cluster,
tests/helpers/ray_cluster.py): the sweep equals the inline run with the same shards bit for bit,
partial sums and merged tables alike. One Ray head for every converted analysis (module scope): Ray is slow here."""
from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("ray")

from tests.helpers.cli import iwb, iwb_command  # noqa: E402
from tests.helpers.ray_cluster import REPO, running_head  # noqa: E402
from tests.helpers.shards import rows, same_results  # noqa: E402
from tests.test_mergeable import PROMPT_SET  # noqa: E402

pytestmark = pytest.mark.integration

# analysis -> (its extra run options, the tables compared: final ones, then the per-shard partial one)
SWEPT = {
    "component-norms": ([], ("component_norms", "component_norms_sums")),
    "attention-locality": (["--param", "window=3"], ("attention_locality", "attention_locality_summary", "attention_locality_sums")),
    "layer-interventions": (["--param", "interventions=block,swap"], ("layer_interventions", "layer_interventions_sums")),
    "causal-trace": (["--prompts", "PROMPT_SET", "--param", "kinds=resid", "--param", "samples=2", "--param", "window=2", "--param", "threshold=-1"],
                     ("causal_trace_buckets", "causal_trace", "causal_trace_inputs", "causal_trace_bucket_inputs")),
    # Six entities, two values: few permutations and resamples, every tenth layer ablated and hidden.
    "fact-lookup": (["--entities", "ENTITIES", *(f"--param={item}" for item in ("folds=3", "n_permutations=5", "n_bootstrap=20", "layer_stride=10",
                                                                                 "intervention_entities=3", "n_neurons=1", "prompt=table", "concat_layer=4"))],
                    ("fact_lookup_probe", "fact_lookup_probe_null", "fact_lookup_ablation", "fact_lookup_hidden", "fact_lookup_heads",
                     "fact_lookup_concat", "fact_lookup_norms", "fact_lookup_neurons", "fact_lookup_recombined", "fact_lookup_summary",
                     "fact_lookup_entities", "fact_lookup_features", "fact_lookup_entity_layers", "fact_lookup_entity_ablation",
                     "fact_lookup_made_up_layers", "fact_lookup_hidden_features")),
    # Head 0 given by hand (the embedded model's classes on 16-token documents are not the point); two fitted documents.
    "contextual-neurons": (["--param", "heads=0", "--param", "dest_positions=8,15", "--param", "fit_docs=2", "--param", "top_k=3"],
                           ("contextual_neurons_fit", "contextual_neurons_curve", "contextual_neurons_heads", "contextual_neurons_tokens",
                            "contextual_neurons_sums", "contextual_neurons_bins", "contextual_neurons_content")),
}
ENTITIES = ("Babe Ruth,baseball", "Hank Aaron,baseball", "Willie Mays,baseball", "Tom Brady,football", "Peyton Manning,football", "Joe Montana,football")
# The actors run torch on one thread; the inline twin must too (BLAS sums round with the thread count).
ACTOR_THREADS = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def head():
    yield from running_head("iwb-merge-")


@pytest.mark.parametrize("name", list(SWEPT))
def test_a_two_actor_sweep_of_each_merged_analysis_equals_the_inline_run(head, tmp_path, name):
    db = tmp_path / "sweep.duckdb"
    prompt_set = tmp_path / "prompts.jsonl"
    prompt_set.write_text("".join(json.dumps({"prompt": text, "subject": subject, "category": category}) + "\n"
                                  for text, subject, category in PROMPT_SET))
    entities = tmp_path / "entities.csv"
    entities.write_text("entity,attribute\n" + "\n".join(ENTITIES) + "\n")
    options, tables = SWEPT[name]
    corpus = [] if "--prompts" in options or "--entities" in options else ["--n-docs", "6", "--max-tokens", "16"]
    options = [{"PROMPT_SET": str(prompt_set), "ENTITIES": str(entities)}.get(option, option) for option in options]
    run = [name, *corpus, *options, "--shard-docs", "2", "--no-chart"]
    inline = iwb("run", *run, db=db, env=ACTOR_THREADS)
    assert inline.returncode == 0, inline.stderr
    swept = subprocess.run(head.beside([*iwb_command(), "--db", str(db), "sweep", *run, "--ray", head.address, "--actors", "2"]),
                           env={**head.driver_env, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert rows(db, "SELECT analysis, n_shards, shards_done, status FROM runs WHERE run_id = 2") == [(name, 3, 3, "done")]
    same_results(db, 1, 2, (*tables, "tokens"))
