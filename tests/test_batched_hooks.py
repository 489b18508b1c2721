"""Length-batched hooked forwards (analyses/model/hooks.py) against one forward per document, for
the three analyses that use them: attention-locality, component-norms and first-layer-heads' corpus
pass, on a tiny random model of every family with documents of different lengths (right padding).
A batch of one must equal the unpadded one-by-one reference exactly; a padded batch to float
tolerance (float32 forwards of a different shape)."""
from __future__ import annotations

import functools
import threading

import numpy as np
import pytest

from analyses import attention_locality, component_norms
from analyses.core.contract import Input, no_progress
from analyses.first_layer_heads import engine
from analyses.model.hooks import DocumentBatch, document_tokens, run_hooked_batches, run_hooked_documents
from analyses.model.tokens import length_batches
from tests.helpers.planted import word_documents

# Budget for the padded runs: lengths 40, 33 | 17, 9, 5, 2, 1 -> two batches, both padded.
BUDGET = 100
LENGTHS = (17, 40, 2, 9, 33, 1, 5)


def documents(model) -> list:
    """Token rows of the lengths above (word documents cut by max_tokens), asserting the batching
    really pads: some batch mixes lengths."""
    inputs = [Input(i, "pile", doc.text, {"max_tokens": size}) for i, (doc, size) in enumerate(zip(word_documents(len(LENGTHS), 60), LENGTHS))]
    rows = document_tokens(model, inputs, "auto")
    assert tuple(row.shape[-1] for row in rows) == LENGTHS
    groups = length_batches(LENGTHS, BUDGET)
    assert len(groups) > 1 and all(len({LENGTHS[i] for i in group}) > 1 for group in groups)
    return rows


RUNNERS = {
    "reference": run_hooked_documents,
    "padded": functools.partial(run_hooked_batches, batch_tokens=BUDGET),
    "default budget": run_hooked_batches,
}
ONE_BY_ONE = functools.partial(run_hooked_batches, batch_tokens=1)


def longest_first(rows: list) -> list:
    """The rows in the order length_batches visits them, so that batches of one add the documents
    to the float64 sums in the reference's order and the two must agree to the bit."""
    return sorted(rows, key=lambda row: -row.shape[-1])


def test_attention_locality_batched_equals_one_by_one(family_model):
    rows = documents(family_model)
    tables = {}
    for name, runner in RUNNERS.items():
        sums = attention_locality.locality_sums(family_model, rows, 4, no_progress, threading.Event(), runner)
        tables[name] = attention_locality.locality_tables(sums)
    reference = tables.pop("reference")
    ordered = longest_first(rows)
    one = attention_locality.locality_sums(family_model, ordered, 4, no_progress, threading.Event(), ONE_BY_ONE)
    assert attention_locality.locality_tables(one) == attention_locality.locality_tables(
        attention_locality.locality_sums(family_model, ordered, 4, no_progress, threading.Event(), run_hooked_documents))
    for name in ("padded", "default budget"):
        for table in reference:
            for column in reference[table].column_names:
                got, want = tables[name][table][column].to_numpy(), reference[table][column].to_numpy()
                if column.startswith("n_"):
                    assert np.array_equal(got, want), (name, table, column)
                else:
                    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"{name} {table} {column}")
    # Pad queries dropped: n_queries counts heads x (length - 1) of the real documents only.
    n_heads = family_model.bridge.cfg.n_heads
    assert reference["attention_locality_summary"]["n_queries"].to_pylist() == [n_heads * sum(size - 1 for size in LENGTHS)] * family_model.n_layers


def test_component_norms_batched_equals_one_by_one(family_model):
    import torch

    rows = documents(family_model)
    sums = {name: component_norms.norm_sums(family_model, rows, no_progress, threading.Event(), runner) for name, runner in RUNNERS.items()}
    ordered = longest_first(rows)
    assert torch.equal(component_norms.norm_sums(family_model, ordered, no_progress, threading.Event(), ONE_BY_ONE),
                       component_norms.norm_sums(family_model, ordered, no_progress, threading.Event(), run_hooked_documents))
    for name in ("padded", "default budget"):
        torch.testing.assert_close(sums[name], sums["reference"], rtol=0, atol=1e-5 * sum(LENGTHS))
        means = component_norms.norms_table(sums[name], sum(size - 1 for size in LENGTHS))
        want = component_norms.norms_table(sums["reference"], sum(size - 1 for size in LENGTHS))
        for column in ("attn_out_norm", "mlp_out_norm", "resid_post_norm", "attn_to_mlp_ratio"):
            np.testing.assert_allclose(means[column].to_numpy(), want[column].to_numpy(), rtol=0, atol=1e-5, err_msg=f"{name} {column}")


def test_first_layer_heads_corpus_batched_equals_one_by_one(family_model):
    import torch

    from analyses.model.weights import model_weights

    rows = documents(family_model)
    weights = model_weights(family_model)
    set_names = [f"set {i % 2}" for i in range(len(rows))]
    layers = (0, family_model.n_layers - 1)
    corpora = {name: engine.collect(family_model, weights, rows, set_names, layers, 1, no_progress, threading.Event(), runner)
               for name, runner in RUNNERS.items()}
    ordered = longest_first(rows)
    exact = [engine.collect(family_model, weights, ordered, set_names, layers, 1, no_progress, threading.Event(), runner)
             for runner in (ONE_BY_ONE, run_hooked_documents)]

    def fields(entry):
        return {"attn_sum": entry.attn_sum, "doc_count": entry.doc_count, "dup_attn_sum": entry.dup_attn_sum, "dup_count": entry.dup_count,
                "scale_sum": torch.tensor(entry.scale_sum), "scale_sq_sum": torch.tensor(entry.scale_sq_sum),
                "n_scaled": torch.tensor(entry.n_scaled)}

    for layer in layers:
        reference = corpora["reference"][layer]
        assert [name for name, _ in reference.residual_logz] == set_names
        assert [logz.shape[-1] for _, logz in reference.residual_logz] == list(LENGTHS)
        one, old = exact[0][layer], exact[1][layer]
        for key, value in fields(old).items():
            assert torch.equal(fields(one)[key], value), (layer, key)
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(one.residual_logz, old.residual_logz))
        for name in ("padded", "default budget"):
            entry = corpora[name][layer]
            assert [set_name for set_name, _ in entry.residual_logz] == set_names
            for key, value in fields(reference).items():
                torch.testing.assert_close(fields(entry)[key], value, rtol=1e-6, atol=1e-5, msg=f"{name} layer {layer} {key}")
            for (_, got), (_, want) in zip(entry.residual_logz, reference.residual_logz):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
            # The per-document class scores, in document order whatever order the batches ran.
            assert len(entry.documents) == len(reference.documents) == len(rows)
            for got_doc, want_doc in zip(entry.documents, reference.documents):
                torch.testing.assert_close(got_doc.rows, want_doc.rows, rtol=1e-6, atol=1e-5, equal_nan=True)
                assert torch.equal(got_doc.dup_cells, want_doc.dup_cells)
                torch.testing.assert_close(got_doc.dup_attn, want_doc.dup_attn, rtol=1e-6, atol=1e-5)


def test_document_batch_drops_pad_positions():
    import torch

    batch = DocumentBatch((4, 2), (3, 1), 3)
    assert batch.padded
    assert batch.real(start=1).tolist() == [[True, True], [False, False]]
    values = torch.arange(6.0).reshape(2, 3)
    assert batch.keep(values).tolist() == [0.0, 1.0, 2.0, 3.0]
    full = DocumentBatch((0,), (3,), 3)
    assert not full.padded and full.keep(values) is values


def test_pattern_sums_drop_pad_queries():
    import torch

    # Row 0 is real to length 3, row 1 to 4; pad queries of row 0 carry junk (even NaN) that must not count.
    pattern = torch.rand(2, 2, 4, 4)
    pattern[0, :, 3, :] = float("nan")
    sums, counts, bos = attention_locality.pattern_sums(pattern, 2, lengths=(3, 4))
    want_sums, want_counts, want_bos = [], [0, 0, 0], 0.0
    for row, size in enumerate((3, 4)):
        one = attention_locality.pattern_sums(pattern[row: row + 1, :, :size, :size], 2)
        want_sums.append(one[0])
        want_counts = [a + b for a, b in zip(want_counts, one[1])]
        want_bos += float(one[2])
    torch.testing.assert_close(sums, want_sums[0] + want_sums[1])
    assert counts == want_counts == [2 * (2 + 3), 2 * (2 + 3), 2 * (1 + 2)]
    assert float(bos) == pytest.approx(want_bos)


def test_cancel_is_checked_between_batches(tiny_model):
    from analyses.core.errors import Cancelled

    rows = documents(tiny_model)
    cancel, seen = threading.Event(), []

    def hook(activation, batch):
        seen.append(batch.indices)
        cancel.set()  # as if the user cancelled during the first forward

    with pytest.raises(Cancelled):
        run_hooked_batches(tiny_model, rows, [("blocks.0.hook_resid_pre", hook)], no_progress, cancel, batch_tokens=BUDGET)
    # Cancel, set during the first forward, stopped it after its first block: no second batch.
    assert seen == [(1, 4)]
