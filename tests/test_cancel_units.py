"""Cancel takes effect between small units of work (a block, a chunk), not only between documents:
a cancel event set from inside the progress callback at its k-th call stops the run with Cancelled
after at most one more block of work, counted as calls of the model's MLP modules (every path, the
bridge's forward and the block-by-block adapter, runs them). Progress moves in small units too."""
from __future__ import annotations

import threading

import pytest

from analyses.core.contract import Input
from analyses.core.errors import Cancelled

PROMPT = "The Eiffel Tower is located in the city of"
TEXT = " ".join(["The quick brown fox jumps over the lazy dog while the cat sleeps in the sun."] * 4)


class MlpCounter:
    """Counts calls of the model's per-block MLP modules (forward hooks on the real modules)."""

    def __init__(self, model) -> None:
        from analyses.model.adapters import adapter_for

        self.calls = 0
        adapter = adapter_for(model)
        self.handles = [adapter._parts(layer).mlp.register_forward_hook(self.count) for layer in adapter._layer_list()]
        assert self.handles, "no MLP modules found"

    def count(self, module, args, output) -> None:
        self.calls += 1

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def cancelled_run(model, run, k: int):
    """Run run(progress, cancel) with the cancel set at the k-th progress call; returns (MLP calls
    after the cancel, progress calls, notes), or raises AssertionError when the run was not cancelled."""
    counter = MlpCounter(model)
    cancel = threading.Event()
    notes: list[str] = []
    at_cancel = [None]

    def progress(done: int, total: int, note: str = "") -> None:
        assert 0 <= done <= total
        notes.append(note)
        if len(notes) == k:
            at_cancel[0] = counter.calls
            cancel.set()

    try:
        with pytest.raises(Cancelled):
            run(progress, cancel)
    finally:
        counter.close()
    assert at_cancel[0] is not None, f"only {len(notes)} progress calls"
    return counter.calls - at_cancel[0], counter.calls, notes


def full_run_calls(model, run) -> int:
    counter = MlpCounter(model)
    try:
        run(lambda done, total, note="": None, threading.Event())
    finally:
        counter.close()
    return counter.calls


def test_causal_trace_stops_within_a_block(tiny_model):
    from analyses import causal_trace

    params = causal_trace.Params(subject="Eiffel Tower", samples=3)

    def run(progress, cancel):
        return causal_trace.ANALYSIS.run(tiny_model, [Input(0, "prompt", PROMPT)], params, progress, cancel)

    after, before_and_after, notes = cancelled_run(tiny_model, run, k=3)
    assert after <= 1
    # The whole trace runs many more blocks than were run up to the cancel: the bound is not vacuous.
    assert full_run_calls(tiny_model, run) > before_and_after + 10
    assert any("cells" in note for note in notes)


def test_truncation_stops_within_a_forward(tiny_model):
    from analyses import truncation

    params = truncation.Params(k_max=4, batch_tokens=64)
    inputs = [Input(0, "pile", TEXT, {}), Input(1, "pile", TEXT[:150], {})]

    def run(progress, cancel):
        return truncation.ANALYSIS.run(tiny_model, inputs, params, progress, cancel)

    # k = 2: inside the first forward of the mean pass (one tick per block); k = 8: the windows.
    for k in (2, 8):
        after, before_and_after, notes = cancelled_run(tiny_model, run, k=k)
        assert after <= 1
    assert full_run_calls(tiny_model, run) > before_and_after + 10
    assert any("block" in note for note in notes)


def test_layer_interventions_stop_within_an_intervention(tiny_model):
    from analyses import layer_interventions as li

    inputs = [Input(0, "pile", TEXT, {}), Input(1, "pile", TEXT[:100], {})]

    def run(progress, cancel):
        return li.ANALYSIS.run(tiny_model, inputs, li.Params(batch_tokens=4096), progress, cancel)

    after, before_and_after, notes = cancelled_run(tiny_model, run, k=4)
    assert after <= 1
    assert full_run_calls(tiny_model, run) > before_and_after + 10
    # Progress per intervention, not per batch (one batch here).
    assert sum("intervention" in note for note in notes) >= 2


def test_hooked_batches_stop_within_a_forward(tiny_model):
    from analyses import component_norms

    inputs = [Input(i, "pile", TEXT, {}) for i in range(3)]

    def run(progress, cancel):
        return component_norms.ANALYSIS.run(tiny_model, inputs, component_norms.Params(), progress, cancel)

    after, _, notes = cancelled_run(tiny_model, run, k=2)
    assert after <= 1
    assert "block 1/" in notes[-1]


def test_logit_lens_stops_within_a_forward(tiny_model):
    from analyses import logit_lens
    from analyses.model.hooks import block_checks

    cancel = threading.Event()
    counter = MlpCounter(tiny_model)
    seen = []

    def set_after_first_block(activation, hook):
        seen.append(1)
        cancel.set()

    # The lens forward checks cancel after every block: set after block 0, it stops before block 2.
    try:
        with tiny_model.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_post", set_after_first_block)]), pytest.raises(Cancelled):
            logit_lens.lens_rows(tiny_model, tiny_model.to_tokens(TEXT, prepend_bos="auto"), cancel)
    finally:
        counter.close()
    assert seen == [1]
    assert counter.calls <= 2
    assert len(block_checks(tiny_model.n_layers, cancel)) == tiny_model.n_layers


def test_hooked_batches_stop_inside_a_block(tiny_model):
    """One block of a padded batch at the model's budget is seconds of work on a CPU, so the hooked
    batches check cancel inside every block too: a cancel set after block 0's attention stops the
    forward before block 0's MLP runs, and no hook of a later point or block is called."""
    from analyses.model.hooks import WITHIN_BLOCK, run_hooked_batches

    token_rows = [tiny_model.to_tokens(TEXT, prepend_bos="auto") for _ in range(3)]
    cancel = threading.Event()
    calls: list[str] = []

    def set_cancel(activation, batch):
        calls.append("z0")
        cancel.set()

    def later(activation, batch, name):
        calls.append(name)

    hooks = [("blocks.0.attn.hook_z", set_cancel)] + [
        (name, lambda activation, batch, name=name: later(activation, batch, name))
        for name in ("blocks.0.hook_mlp_out", "blocks.0.hook_resid_post", "blocks.1.attn.hook_z")
    ]
    counter = MlpCounter(tiny_model)
    try:
        with pytest.raises(Cancelled):
            run_hooked_batches(tiny_model, token_rows, hooks, lambda done, total, note="": None, cancel)
    finally:
        counter.close()
    assert calls == ["z0"]
    assert counter.calls == 0
    assert "attn.hook_z" in WITHIN_BLOCK
