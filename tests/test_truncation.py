"""Truncation analysis: the window trick against the naive per-k forward, categories, centring, storage."""
from __future__ import annotations

import numpy as np
import pytest

from analyses.core.contract import Input
from analyses.core.errors import BadInput
from analyses.inputs import corpus
from analyses.truncation import Params, token_category
from analyses.truncation.engine import DocTokens, analysed_positions, full_context_mean, truncated_cosines
from analyses.truncation.reference import naive_cosines


def make_docs(model, lengths, prepend_bos=True, min_context=4):
    inputs, _ = corpus.sample_documents(None, len(lengths), seed=2)
    docs = []
    for item, length in zip(inputs, lengths):
        ids = model.to_tokens(item.text, prepend_bos=prepend_bos, max_tokens=length)[0].tolist()
        docs.append(DocTokens(item.input_id, tuple(ids), analysed_positions(len(ids), int(prepend_bos), min_context)))
    return docs


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_window_trick_equals_naive_per_k_forward(family_model, prepend_bos):
    import torch

    docs = make_docs(family_model, [13, 17, 9], prepend_bos)
    bos_id = 1 if prepend_bos else None
    with torch.inference_mode():
        mean = full_context_mean(family_model, docs, batch_tokens=30)
        # A small batch budget forces padded cross-document batches and several window forwards.
        fast = truncated_cosines(family_model, docs, 4, bos_id, mean, batch_tokens=30)
        naive, naive_mean = naive_cosines(family_model, docs, 4, bos_id)
    assert torch.allclose(mean, naive_mean, atol=1e-6)
    for doc in docs:
        assert fast[doc.input_id].shape == (len(doc.positions), family_model.n_layers, 4)
        assert np.abs(fast[doc.input_id] - naive[doc.input_id]).max() < 1e-5
    # Truncation really changes something, and context k = whole document gives exactly 1.
    assert np.abs(fast[docs[0].input_id] - 1).max() > 0.01


def test_context_covering_the_whole_document_gives_cosine_one(tiny_model):
    import torch

    ids = tiny_model.to_tokens("one two three four five six", prepend_bos=True)[0].tolist()
    doc = DocTokens(0, tuple(ids), (4,))  # 3 earlier tokens: context k = 4 is the full context
    with torch.inference_mode():
        mean = full_context_mean(tiny_model, [doc], 64)
        cos = truncated_cosines(tiny_model, [doc], 4, 1, mean + 0.5, 64)[0]
    assert np.allclose(cos[0, :, 3], 1.0, atol=1e-5)
    assert (cos[0, :, 0] < 0.9999).all()


def test_mean_centring_excludes_bos_and_unanalysed_positions(tiny_model):
    import torch

    docs = make_docs(tiny_model, [15, 20])
    with torch.inference_mode():
        mean = full_context_mean(tiny_model, docs, 4096)
        names = [f"blocks.{layer}.hook_resid_post" for layer in range(tiny_model.n_layers)]
        analysed, with_bos = [], []
        for doc in docs:
            _, cache = tiny_model.bridge.run_with_cache(torch.tensor([doc.ids]), names_filter=lambda n: n in names)
            stack = torch.stack([cache[n][0] for n in names])  # [layers, T, d]
            analysed.append(stack[:, list(doc.positions)])
            with_bos.append(stack[:, [0, *doc.positions]])
    expected = torch.cat(analysed, dim=1).double().mean(1).float()
    assert torch.allclose(mean, expected, atol=1e-5)
    including_bos = torch.cat(with_bos, dim=1).double().mean(1).float()
    assert (mean - including_bos).abs().max() > 1e-3


def test_hooks_do_not_leak_after_the_early_stop(tiny_model):
    import torch

    tokens = torch.tensor([[1, 300, 301, 302, 303, 304]])
    with torch.inference_mode():
        before = tiny_model.bridge(tokens)
        docs = [DocTokens(0, tuple(tokens[0].tolist()), (3, 4, 5))]
        truncated_cosines(tiny_model, docs, 2, 1, full_context_mean(tiny_model, docs, 64), 64)
        after = tiny_model.bridge(tokens)
    assert torch.equal(before, after)


@pytest.mark.parametrize(
    ("token", "category"),
    [
        ("\n", "newline"), ("\n\n", "newline"), (" \n", "newline"), (".", "full stop"), (" .", "full stop"),
        (",", "comma"), (" ,", "comma"), (" the", "common word"), ("The", "common word"), (" I", "common word"),
        ("its", "common word"), (" WHICH", "common word"), (" there", "alphabetic"), ("ing", "alphabetic"),
        (" élan", "alphabetic"), ("..", "other"), ("),", "other"), (" 42", "other"), ("  the", "other"),
        (" ", "other"), ("the.", "other"), ("a1", "other"),
    ],
)
def test_token_categories(token, category):
    assert token_category(token) == category


def test_params_checks():
    from analyses.core.params import parse_params

    with pytest.raises(BadInput, match="min_context"):
        parse_params(Params, {"k_max": "10", "min_context": "5"})
    with pytest.raises(BadInput, match="k_max"):
        parse_params(Params, {"k_max": "0"})
    assert parse_params(Params, {"k_max": "3", "min_context": "7"}).min_context == 7


def test_short_documents_are_refused_before_storing(tiny_model):
    from analyses import truncation

    inputs = [Input(0, "pile", "too short", {})]
    with pytest.raises(BadInput, match="earlier tokens"):
        truncation.ANALYSIS.check(tiny_model, inputs, Params())


def test_run_stores_consistent_tables(tiny_model, store):
    from analyses.core.contract import no_progress
    from app.run.runner import RunRequest, execute, prepare

    inputs, _ = corpus.sample_documents(None, 3, seed=5, max_tokens=24)
    prepared = prepare(RunRequest("truncation", tuple(inputs), {"k_max": "5", "batch_tokens": "64", "n_lowest": "4"}))
    run_id = execute(store, tiny_model, prepared, no_progress)
    n_tokens = store.query("SELECT count(DISTINCT (input_id, pos)) FROM truncation WHERE run_id = ?", [run_id]).rows[0][0]
    assert n_tokens == 3 * (24 - 1 - 5)
    rows = store.query("SELECT count(*), min(context), max(context), min(layer), max(layer), min(pos) FROM truncation WHERE run_id = ?", [run_id]).rows[0]
    assert rows == (n_tokens * 5 * tiny_model.n_layers, 1, 5, 0, tiny_model.n_layers - 1, 6)
    mismatch = store.query(
        """SELECT max(abs(s.mean - d.m)), min(s.n = d.n) FROM truncation_summary s JOIN
           (SELECT layer, context, avg(cos) m, count(*) n FROM truncation WHERE run_id = ? GROUP BY ALL) d
           USING (layer, context) WHERE s.run_id = ? AND s.category = 'all'""",
        [run_id, run_id],
    ).rows[0]
    assert mismatch[0] < 1e-9 and mismatch[1]
    ordered = store.query(
        "SELECT bool_and(q05 <= q25 AND q25 <= median AND median <= q75 AND q75 <= q95), sum(n) FROM truncation_summary WHERE run_id = ? AND category <> 'all' AND layer = 0 AND context = 1",
        [run_id],
    ).rows[0]
    assert ordered == (True, n_tokens)
    lowest = store.query("SELECT rank, cos, context FROM truncation_lowest WHERE run_id = ? ORDER BY rank", [run_id]).rows
    assert [r[0] for r in lowest] == [1, 2, 3, 4] and [r[1] for r in lowest] == sorted(r[1] for r in lowest)
    worst = store.query("SELECT min(cos) FROM truncation WHERE run_id = ? AND context = 5", [run_id]).rows[0][0]
    assert lowest[0][1] == pytest.approx(worst) and lowest[0][2] == 5


def test_cli_uses_the_default_corpus_for_document_only_analyses():
    from app.cli.commands import build_inputs, build_parser

    args = build_parser().parse_args(["run", "truncation", "--n-docs", "3", "--max-tokens", "40", "--pile-set", "PSF docs"])
    inputs = build_inputs(args)
    assert len(inputs) == 3 and {i.meta["pile_set_name"] for i in inputs} == {"PSF docs"}
    assert all(i.meta["max_tokens"] == 40 and i.source == "pile" for i in inputs)
    prompt_args = build_parser().parse_args(["run", "logit-lens"])
    with pytest.raises(BadInput, match="prompt is empty"):
        build_inputs(prompt_args)


@pytest.mark.integration
def test_truncation_on_the_embedded_model(embedded_model, store):
    from analyses import truncation
    from analyses.core.contract import no_progress
    from app import charts
    from app.run.runner import RunRequest, execute, prepare

    inputs, _ = corpus.sample_documents(None, 2, seed=0, set_name="PSF docs", max_tokens=22)
    run_id = execute(store, embedded_model, prepare(RunRequest("truncation", tuple(inputs), {})), no_progress)
    by_k = dict(store.query(
        "SELECT context, mean FROM truncation_summary WHERE run_id = ? AND category = 'all' AND layer = 0", [run_id]
    ).rows)
    assert by_k[10] > by_k[1] and by_k[10] < 1.0
    for chart in truncation.SPEC.charts:
        assert charts.load_chart(store, chart, run_id) is not None, chart.title


def test_cancel_stops_between_forwards(tiny_model, cancel):
    import torch

    from analyses.core.errors import Cancelled

    docs = make_docs(tiny_model, [14])
    cancel.set()
    with torch.inference_mode(), pytest.raises(Cancelled):
        full_context_mean(tiny_model, docs, 64, cancel)
    with torch.inference_mode(), pytest.raises(Cancelled):
        truncated_cosines(tiny_model, docs, 4, 1, torch.zeros(tiny_model.n_layers, tiny_model.d_model), 64, cancel)
