"""neuron-contexts sharded: each shard stores its inputs' rows and its own top_k contexts, finalize
takes the top_k of those. Split into shards, the run equals the one-shard run bit for bit (each input
is its own unpadded forward, so a shard's activations are the one-shard run's; ties, planted here by
repeating texts across shards, go to the earlier input, then the earlier position, in both); the
contexts equal a plain sort of every activation; a stored run stopped after a shard resumes to the
uninterrupted one bit for bit; a 2-actor Ray sweep equals the inline run bit for bit."""
from __future__ import annotations

import subprocess
import threading

import pyarrow as pa
import pytest

from analyses.core.contract import Input, no_progress
from analyses.core.registry import get_analysis
from analyses.neuron_contexts import Params
from tests.helpers.merging import run_in_shards

# Repeated texts in other shards (shards of 2): equal activations at equal positions, so the top
# contexts hold ties across shards.
TEXTS = ("The Eiffel Tower is located in the city of Paris.", "Michael Jordan plays the sport of basketball.",
         "def main():\n    return 0", "The Eiffel Tower is located in the city of Paris.",
         "Once upon a time there was a small village by the sea.", "Michael Jordan plays the sport of basketball.",
         "The Eiffel Tower is located in the city of Paris.")
INPUTS = [Input(i, "prompt", text) for i, text in enumerate(TEXTS)]
FINAL = ("neuron_contexts", "neuron_contexts_inputs")


def every_activation(model, params: Params) -> list[tuple[float, int, int]]:
    """(activation, input order, pos) of every token of every input, from the same per-input forwards."""
    from analyses.model.hooks import hook_upto_layer

    hook = f"blocks.{params.layer}.mlp.out.hook_in"
    found = []
    for index, _, _, activation in hook_upto_layer(model, INPUTS, hook, params.layer, params.prepend_bos, no_progress, threading.Event()):
        found += [(act, index, pos) for pos, act in enumerate(activation[0, :, params.neuron].float().tolist())]
    return found


def test_merged_shards_equal_the_one_shard_run_and_a_plain_sort(tiny_model):
    analysis = get_analysis("neuron-contexts")
    assert analysis.sharded
    params = Params(layer=1, neuron=7, top_k=9, context=3)
    whole = analysis.run(tiny_model, INPUTS, params)
    merged = run_in_shards(analysis, tiny_model, INPUTS, params, shard_docs=2)  # 4 shards: 2, 2, 2, 1 inputs
    assert merged["neuron_contexts_candidates"].num_rows > params.top_k  # every shard's own top_k
    for name in FINAL:
        assert merged[name].num_rows == whole.tables[name].num_rows > 0, name
        assert merged[name].equals(whole.tables[name]), name
    assert merged["tokens"].equals(whole.tokens)
    # The reference: every activation sorted by activation descending, then input order, then position.
    expected = sorted(every_activation(tiny_model, params), key=lambda row: (-row[0], row[1], row[2]))[: params.top_k]
    contexts = merged["neuron_contexts"].to_pylist()
    assert [(row["activation"], row["input_id"], row["pos"]) for row in contexts] == expected
    assert [row["rank"] for row in contexts] == list(range(1, params.top_k + 1))
    # The planted ties are there: an activation held by several inputs, listed in input order.
    activations = [row["activation"] for row in contexts]
    assert len(set(activations)) < len(activations)
    assert merged["neuron_contexts"].schema == pa.schema([("rank", pa.int32()), ("activation", pa.float64()), ("token", pa.string()),
                                                          ("context", pa.string()), ("input_id", pa.int32()), ("pos", pa.int32())])


def test_a_stored_run_stopped_after_a_shard_resumes_to_the_uninterrupted_one_bit_for_bit(tiny_model, db_path):
    from app.run.runner import RunRequest, execute, prepare, resume
    from store import Store
    from tests.helpers.shards import rows, same_results, stop_after_shard

    store = Store(db_path)
    prepared = prepare(RunRequest("neuron-contexts", tuple(INPUTS), {"layer": "2", "neuron": "3", "top_k": "8", "context": "2"}))
    reference = execute(store, tiny_model, prepared, no_progress, shard_docs=3)
    assert rows(db_path, f"SELECT n_shards, shards_done, status FROM runs WHERE run_id = {reference}") == [(3, 3, "done")]
    stopped = stop_after_shard(store, tiny_model, prepared, stored=1, n_shards=3, shard_docs=3)
    assert rows(db_path, f"SELECT status, shards_done FROM runs WHERE run_id = {stopped}") == [("cancelled", 1)]
    notes: list[str] = []
    resume(store, tiny_model, stopped, lambda done, total, note="": notes.append(note))
    assert not any("shard 1/3" in note for note in notes)  # the stored shard is not computed again
    same_results(db_path, reference, stopped, (*FINAL, "neuron_contexts_candidates", "tokens"))
    assert rows(db_path, f"SELECT count(*), min(rank), max(rank) FROM neuron_contexts WHERE run_id = {stopped}") == [(8, 1, 8)]


@pytest.fixture(scope="module")
def head():
    pytest.importorskip("ray")
    from tests.helpers.ray_cluster import running_head

    yield from running_head("iwb-nctx-")


@pytest.mark.integration
def test_a_two_actor_sweep_equals_the_inline_run(head, tmp_path):
    """As tests/test_mergeable_sweep.py: a real local Ray head (2 actors), the embedded model, 6 Pile
    documents of 16 tokens in shards of 2; the sweep's tables equal the inline run's bit for bit."""
    from tests.helpers.cli import iwb, iwb_command
    from tests.helpers.ray_cluster import REPO
    from tests.helpers.shards import rows, same_results

    db = tmp_path / "sweep.duckdb"
    run = ["neuron-contexts", "--n-docs", "6", "--max-tokens", "16", "--param", "layer=3", "--param", "neuron=11",
           "--param", "top_k=10", "--shard-docs", "2", "--no-chart"]
    inline = iwb("run", *run, db=db, env={"OMP_NUM_THREADS": "1"})  # the actors run torch on one thread
    assert inline.returncode == 0, inline.stderr
    swept = subprocess.run(head.beside([*iwb_command(), "--db", str(db), "sweep", *run, "--ray", head.address, "--actors", "2"]),
                           env={**head.driver_env, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert rows(db, "SELECT analysis, n_shards, shards_done, status FROM runs WHERE run_id = 2") == [("neuron-contexts", 3, 3, "done")]
    same_results(db, 1, 2, (*FINAL, "neuron_contexts_candidates", "tokens"))
    assert rows(db, "SELECT count(*) FROM neuron_contexts WHERE run_id = 2") == [(10,)]
