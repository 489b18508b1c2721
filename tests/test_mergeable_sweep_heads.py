"""first-layer-heads swept over two Ray actors (a real local cluster, tests/helpers/ray_cluster.py):
the sweep equals the inline run with the same shards bit for bit, per-shard partial rows and merged
tables alike (NaN where NaN). Kept apart from tests/test_mergeable_sweep.py, which other analyses
extend, and as small: six 16-token documents in three shards."""
from __future__ import annotations

import subprocess

import pytest

pytest.importorskip("ray")

from tests.helpers.cli import iwb, iwb_command  # noqa: E402
from tests.helpers.ray_cluster import REPO, running_head  # noqa: E402
from tests.helpers.shards import rows, same_results  # noqa: E402
from tests.test_mergeable_sweep import ACTOR_THREADS  # noqa: E402

pytestmark = pytest.mark.integration

# analysis -> (its extra run options, the tables compared: final ones, then the per-shard partial ones)
SWEPT = {
    "first-layer-heads": (["--param", "dest_positions=8,15", "--param", "score_from=2", "--param", "bootstrap=100"],
                          ("first_layer_heads_pattern", "first_layer_heads_mass", "first_layer_heads_width", "first_layer_heads_normaliser",
                           "first_layer_heads_class", "first_layer_heads_intervals", "first_layer_heads_docs", "first_layer_heads_logz", "first_layer_heads_doc_scores",
                           "first_layer_heads_duplicates", "first_layer_heads_attn_sums")),
}


@pytest.fixture(scope="module")
def head():
    yield from running_head("iwb-merge-heads-")


def test_a_two_actor_sweep_equals_the_inline_run(head, tmp_path):
    db = tmp_path / "sweep.duckdb"
    for index, (name, (options, tables)) in enumerate(SWEPT.items()):
        run = [name, "--n-docs", "6", "--max-tokens", "16", *options, "--shard-docs", "2", "--no-chart"]
        inline = iwb("run", *run, db=db, env=ACTOR_THREADS)
        assert inline.returncode == 0, inline.stderr
        swept = subprocess.run(head.beside([*iwb_command(), "--db", str(db), "sweep", *run, "--ray", head.address, "--actors", "2"]),
                               env={**head.driver_env, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert swept.returncode == 0, swept.stderr[-3000:]
        inline_id, swept_id = 2 * index + 1, 2 * index + 2
        assert rows(db, f"SELECT analysis, n_shards, shards_done, status FROM runs WHERE run_id = {swept_id}") == [(name, 3, 3, "done")]
        same_results(db, inline_id, swept_id, (*tables, "tokens"))
