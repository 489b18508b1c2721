"""A cancel in the middle of a generation keeps the steps made so far: the run ends 'cancelled'
with those steps stored and readable (a partial shard, apart from the computed ones), and a resume
drops them and computes the whole generation, equal to an uninterrupted run, with no row twice."""
from __future__ import annotations

import threading

import pytest

from analyses.core.contract import Input, no_progress
from analyses.core.errors import Cancelled
from app.run.session import Session

PROMPT = "I think that you are"
COLUMNS = "input_id, step, pos, token_id, token, prob, rank, entropy_bits"


def _steps(store, run_id: int) -> list[tuple]:
    return store.query(f"SELECT {COLUMNS} FROM generation_steps WHERE run_id = ? ORDER BY input_id, step", [run_id]).rows


def _count(store, table: str, run_id: int) -> int:
    return store.query(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).rows[0][0]


def _cancel_after(steps: int) -> tuple[threading.Event, object]:
    """A cancel event set by the progress callback once ``steps`` tokens are made (the worker's
    cancel arrives the same way: an event the engine checks between and inside steps)."""
    cancel = threading.Event()

    def progress(done: int, total: int, note: str = "") -> None:
        if done >= steps and "token" in note:
            cancel.set()

    return cancel, progress


def test_a_cancel_mid_generation_keeps_its_steps_and_a_resume_finishes_it(store, tiny_model):
    params = {"max_new_tokens": "40", "stop_at_eos": "false", "steer": " Love| Hate", "steer_layer": "1"}
    inputs = (Input(0, "prompt", PROMPT), Input(1, "prompt", "Hello there"))
    session = Session(store)
    whole_id = session.run(tiny_model, Session.prepare("generate", inputs, params), no_progress)
    whole = _steps(store, whole_id)
    assert len(whole) == 80

    # Cut short after 43 tokens: input 0 is finished (40 steps), input 1 has 3.
    cancel, progress = _cancel_after(43)
    begun: list[int] = []
    with pytest.raises(Cancelled):
        session.run(tiny_model, Session.prepare("generate", inputs, params), progress, cancel, on_begin=begun.append)
    run_id = begun[0]
    row = store.run_row(run_id)
    assert row["status"] == "cancelled"
    assert "1 of 2 inputs finished; input 1 cut short after 3 of 40 steps" in row["error"]
    assert row["shards_done"] == 0 and store.has_partial(run_id)
    kept = _steps(store, run_id)
    assert kept == whole[:43]  # the same tokens and numbers as the uninterrupted run, whole steps only
    layers = tiny_model.n_layers + 1
    assert _count(store, "generation_lens", run_id) == 43 * layers
    assert _count(store, "generation_topk", run_id) == 43 * layers * 5
    assert _count(store, "tokens", run_id) > 0

    # A resume drops the partial rows and computes the shard whole: equal to the uninterrupted run.
    assert session.resume(tiny_model, run_id, no_progress) == run_id
    assert store.run_row(run_id)["status"] == "done" and not store.has_partial(run_id)
    assert _steps(store, run_id) == whole
    assert _count(store, "generation_lens", run_id) == _count(store, "generation_lens", whole_id)
    assert _count(store, "generation_topk", run_id) == _count(store, "generation_topk", whole_id)
    assert _count(store, "tokens", run_id) == _count(store, "tokens", whole_id)


def test_a_cancel_before_the_first_token_keeps_no_steps(store, tiny_model):
    cancel = threading.Event()
    cancel.set()
    begun: list[int] = []
    with pytest.raises(Cancelled):
        Session(store).run(tiny_model, Session.prepare("generate", (Input(0, "prompt", PROMPT),), {"max_new_tokens": "5"}),
                           no_progress, cancel, on_begin=begun.append)
    row = store.run_row(begun[0])
    assert row["status"] == "cancelled" and row["error"] == "cancelled by the user"
    assert not store.has_partial(begun[0]) and not row["shards_done"]
