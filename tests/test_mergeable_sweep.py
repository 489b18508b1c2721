"""The analyses that merge per-shard aggregates, swept over two Ray actors (a real local cluster,
tests/helpers/ray_cluster.py): the sweep equals the inline run with the same shards bit for bit,
partial sums and merged tables alike. One test over every converted analysis: Ray is slow here."""
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
}
# The actors run torch on one thread; the inline twin must too (BLAS sums round with the thread count).
ACTOR_THREADS = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def head():
    yield from running_head("iwb-merge-")


def test_a_two_actor_sweep_of_each_merged_analysis_equals_the_inline_run(head, tmp_path):
    db = tmp_path / "sweep.duckdb"
    prompt_set = tmp_path / "prompts.jsonl"
    prompt_set.write_text("".join(json.dumps({"prompt": text, "subject": subject, "category": category}) + "\n"
                                  for text, subject, category in PROMPT_SET))
    for index, (name, (options, tables)) in enumerate(SWEPT.items()):
        corpus = [] if "--prompts" in options else ["--n-docs", "6", "--max-tokens", "16"]
        options = [str(prompt_set) if option == "PROMPT_SET" else option for option in options]
        run = [name, *corpus, *options, "--shard-docs", "2", "--no-chart"]
        inline = iwb("run", *run, db=db, env=ACTOR_THREADS)
        assert inline.returncode == 0, inline.stderr
        swept = subprocess.run(head.beside([*iwb_command(), "--db", str(db), "sweep", *run, "--ray", head.address, "--actors", "2"]),
                               env={**head.driver_env, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert swept.returncode == 0, swept.stderr[-3000:]
        inline_id, swept_id = 2 * index + 1, 2 * index + 2
        assert rows(db, f"SELECT analysis, n_shards, shards_done, status FROM runs WHERE run_id = {swept_id}") == [(name, 3, 3, "done")]
        same_results(db, inline_id, swept_id, (*tables, "tokens"))
