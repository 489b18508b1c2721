from __future__ import annotations

from pathlib import Path

import pytest

from analyses import layer_interventions as li
from analyses.core.contract import no_progress
from analyses.core.errors import BadInput

PILE_SAMPLE = Path(__file__).parent / "data" / "pile_sample.jsonl"
TEXTS = [
    "The Eiffel Tower is located in the city of Paris, the capital of France.",
    "def add(a, b):\n    return a + b\n",
    "Hello there.",
]


@pytest.fixture
def tiny_setup(family_model):
    """Every family's tiny model, driven through its adapter."""
    import torch

    from analyses.model.adapters import adapter_for

    with torch.no_grad():
        rows = [family_model.to_tokens(text) for text in TEXTS]
        yield family_model, adapter_for(family_model), rows


def full_logits(model, tokens, order=None):
    from analyses.model.adapters import adapter_for

    order = list(range(model.n_layers)) if order is None else order
    with adapter_for(model).blocks_in_order(order):
        return model.bridge(tokens, use_cache=False)


def test_clean_run_matches_the_bridge_exactly(tiny_setup):
    model, decoder, rows = tiny_setup
    clean = li.clean_run(decoder, rows[0])
    assert (clean.logits - model.bridge(rows[0], use_cache=False)).abs().max().item() < 1e-5


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_deleting_a_block_equals_skipping_it(tiny_setup, layer):
    model, decoder, rows = tiny_setup
    clean = li.clean_run(decoder, rows[0])
    deleted = li.intervened_logits(decoder, clean, li.Intervention("block", layer))
    skipped = full_logits(model, rows[0], [index for index in range(model.n_layers) if index != layer])
    assert (deleted - skipped).abs().max().item() < 1e-5


def test_deleting_attention_and_mlp_by_hooks_equals_deleting_the_block(tiny_setup):
    from analyses.layer_interventions.reference import intervened_logits

    model, _, rows = tiny_setup
    both = model.bridge.run_with_hooks(
        rows[0],
        fwd_hooks=[(f"blocks.1.hook_{part}_out", lambda act, hook: act * 0) for part in ("attn", "mlp")],
        use_cache=False,
    )
    assert (both - intervened_logits(model, rows[0], li.Intervention("block", 1))).abs().max().item() == 0.0


def test_swapping_twice_is_the_identity_and_the_order_is_restored(tiny_setup):
    model, decoder, rows = tiny_setup
    original = list(decoder._layer_list())
    swapped = [1, 0, 2]
    with decoder.blocks_in_order(swapped):
        once = model.bridge(rows[0], use_cache=False)
        with decoder.blocks_in_order(swapped):
            twice = model.bridge(rows[0], use_cache=False)
    assert list(decoder._layer_list()) == original
    clean = model.bridge(rows[0], use_cache=False)
    assert (twice - clean).abs().max().item() == 0.0
    assert (once - clean).abs().max().item() > 1e-3
    fast = li.intervened_logits(decoder, li.clean_run(decoder, rows[0]), li.Intervention("swap", 0))
    assert (fast - once).abs().max().item() < 1e-5


def test_a_no_op_has_kl_zero_and_agreement_one(tiny_setup):
    _, decoder, rows = tiny_setup
    batch = li.pack_batches(rows, 4096, pad_id=2)[0]
    clean = li.clean_run(decoder, batch.tokens)
    sums = li.metric_sums(li.clean_reference(clean.logits, batch), clean.logits.clone())
    table = li.summarise(sums[None], [li.Intervention("block", 0)], 3).to_pylist()[0]
    assert table["kl"] == 0.0 and table["top1_agreement"] == 1.0
    assert table["entropy_delta_bits"] == 0.0 and table["loss_delta"] == 0.0
    assert table["n_tokens"] == sum(row.shape[-1] for row in rows)


def test_fast_equals_naive_for_every_intervention_over_padded_batches(tiny_setup):
    import torch

    from analyses.layer_interventions.reference import naive_batch_sums

    model, decoder, rows = tiny_setup
    interventions = li.list_interventions(model.n_layers, li.INTERVENTION_KINDS)
    assert len(interventions) == 3 * 3 + 2
    batches = li.pack_batches(rows, 40, pad_id=2)
    assert len(batches) >= 2 and any(len(set(b.lengths)) > 1 for b in batches)
    fast = sum(li.fast_batch_sums(decoder, b, interventions) for b in batches)
    naive = sum(naive_batch_sums(model, b, interventions) for b in batches)
    # Llama-family models give identical float32 ops on both paths; other families' bridges
    # reorder a few (fused QKV): entropy sums are differences of ~10-nat values over ~30 positions.
    assert ((fast - naive).abs() <= 1e-6 * naive.abs() + 1e-4).all()
    assert torch.equal(fast[:, 1], naive[:, 1])


def test_right_padding_is_exact(tiny_setup):
    _, decoder, rows = tiny_setup
    interventions = li.list_interventions(3, ("block", "swap"))
    together = li.fast_batch_sums(decoder, li.pack_batches(rows, 4096, pad_id=2)[0], interventions)
    alone = sum(li.fast_batch_sums(decoder, li.pack_batches([row], 4096, pad_id=2)[0], interventions) for row in rows)
    # Float32 sums of per-position differences of ~10-nat entropies: shape-dependent rounding only.
    assert ((together - alone).abs() <= 1e-5 * alone.abs() + 1e-4).all()


def test_pack_batches_keeps_every_row_and_the_budget():
    import torch

    rows = [torch.arange(n)[None] for n in (5, 9, 3, 9, 7)]
    batches = li.pack_batches(rows, 18, pad_id=0)
    assert sorted(length for b in batches for length in b.lengths) == [3, 5, 7, 9, 9]
    for batch in batches:
        assert batch.tokens.shape[1] == max(batch.lengths)
        assert batch.tokens.numel() <= 18
        for row, length in zip(batch.tokens, batch.lengths):
            assert row[:length].tolist() == list(range(length)) and (row[length:] == 0).all()


def test_params_refuse_unknown_kinds():
    with pytest.raises(BadInput):
        li.Params(interventions="block,twist").check()


def test_run_on_every_family_gives_one_row_per_intervention(family_model, cancel):
    from analyses.inputs.corpus import sample_documents

    inputs, _ = sample_documents(str(PILE_SAMPLE), 3, seed=1)
    result = li.ANALYSIS.run(family_model, inputs, li.Params(batch_tokens=200), no_progress, cancel)
    rows = result.tables["layer_interventions"].to_pylist()
    assert [(r["intervention"], r["layer"]) for r in rows] == [(i.kind, i.layer) for i in li.list_interventions(3, li.INTERVENTION_KINDS)]
    assert all(r["kl"] >= -1e-7 and 0.0 <= r["top1_agreement"] <= 1.0 for r in rows)
    assert rows[-1]["relative_depth"] == 0.5
    assert result.tokens.num_rows == rows[0]["n_tokens"]


@pytest.mark.integration
def test_layer_interventions_store_and_draw_on_the_embedded_model(embedded_model, store):
    from analyses.inputs.corpus import sample_documents
    from app import charts
    from app.run.runner import RunRequest, execute, prepare

    inputs, _ = sample_documents(str(PILE_SAMPLE), 2, seed=0)
    inputs = tuple(type(i)(i.input_id, i.source, i.text, {**i.meta, "max_tokens": 16}) for i in inputs)
    prepared = prepare(RunRequest("layer-interventions", inputs, {"interventions": "block,swap"}))
    run_id = execute(store, embedded_model, prepared, no_progress)
    count, worst = store.query(
        "SELECT count(*), arg_max(layer, kl) FROM layer_interventions WHERE run_id = ? AND intervention = 'block'", [run_id]
    ).rows[0]
    assert count == 30
    assert worst == 0
    n_swaps = store.query("SELECT count(*) FROM layer_interventions WHERE run_id = ? AND intervention = 'swap'", [run_id]).rows[0][0]
    assert n_swaps == 29
    for chart in prepared.analysis.spec.charts:
        data = charts.load_chart(store, chart, run_id)
        assert data is not None
        assert charts.render_text(data, 80, 20, use_colour=False)
