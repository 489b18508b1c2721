"""Corpora by reference: a corpus sample stored without its texts (where each document sits, its
hash and length), the texts read back from the corpus when a shard needs them; the results equal a
run that kept its texts; resume refuses a corpus that changed since; the worker gets the reference."""
from __future__ import annotations

import pickle
import threading

import pytest

from analyses.core.contract import no_progress
from analyses.core.errors import BadInput, Cancelled
from analyses.inputs import corpus
from analyses.inputs.synthetic import write_corpus
from app.run.session import Session


@pytest.fixture
def source(tmp_path):
    return write_corpus(tmp_path / "corpus.jsonl.zst", 400, seed=5, max_chars=300).path


def _choice(path, **extra):
    return corpus.InputChoice("pile", path=str(path), n_docs=extra.pop("n_docs", 24), max_tokens=10, seed=1, **extra)


def _rows(store, run_id: int) -> list[tuple]:
    return store.query("SELECT * EXCLUDE (run_id) FROM logit_lens WHERE run_id = ? ORDER BY ALL", [run_id]).rows


def test_which_runs_keep_their_texts():
    assert corpus.stores_texts(corpus.InputChoice("pile", n_docs=corpus.STORE_TEXTS_MAX_DOCS), "pile")
    assert not corpus.stores_texts(corpus.InputChoice("pile", n_docs=corpus.STORE_TEXTS_MAX_DOCS + 1), "pile")
    assert corpus.stores_texts(corpus.InputChoice("pile", n_docs=50_000, store_texts=True), "pile")
    assert not corpus.stores_texts(corpus.InputChoice("pile", n_docs=5, store_texts=False), "pile")
    assert corpus.stores_texts(corpus.InputChoice("prompt", store_texts=False), "prompt")


def test_a_reference_sample_is_the_same_documents_without_texts(source):
    kept, _ = corpus.build_inputs(_choice(source), ("pile",))
    refs, _ = corpus.build_inputs(_choice(source, store_texts=False), ("pile",))
    assert all(item.text for item in kept) and not any(item.text for item in refs)
    assert [item.meta for item in kept] == [item.meta for item in refs]
    assert all(corpus.needs_text(item) for item in refs) and not any(corpus.needs_text(item) for item in kept)
    assert corpus.DocumentReader().fill(refs) == list(kept)
    lazy = corpus.with_texts(refs)
    assert list(lazy) == list(kept) and lazy[3] == kept[3] and lazy[2:4] == list(kept[2:4]) and len(lazy) == len(kept)
    assert corpus.with_texts(kept) is kept
    # The reference is a small fraction of the texts it stands for.
    assert len(pickle.dumps(refs)) < len(pickle.dumps(kept))


def test_a_reader_refuses_a_changed_corpus_in_one_line(source, tmp_path):
    refs, _ = corpus.build_inputs(_choice(source, store_texts=False), ("pile",))
    corpus.check_sources(refs)
    write_corpus(source, 400, seed=6, max_chars=300)  # same name, other documents
    with pytest.raises(BadInput, match="changed since the run") as caught:
        corpus.check_sources(refs)
    assert "\n" not in str(caught.value)
    write_corpus(source, 10, seed=5, max_chars=300)  # the first ten documents only: the rest are gone
    with pytest.raises(BadInput, match="is gone"):
        corpus.DocumentReader().fill(refs)


def test_a_run_by_reference_equals_the_run_with_texts_and_resume_checks_the_corpus(source, store, tiny_model):
    session = Session(store)
    kept, _ = corpus.build_inputs(_choice(source), ("pile",))
    refs, _ = corpus.build_inputs(_choice(source, store_texts=False), ("pile",))
    with_texts = session.run(tiny_model, Session.prepare("logit-lens", kept, {}), no_progress, shard_docs=8)
    by_reference = session.run(tiny_model, Session.prepare("logit-lens", refs, {}), no_progress, shard_docs=8)
    assert _rows(store, by_reference) == _rows(store, with_texts) and _rows(store, with_texts)
    stored = store.run_inputs(by_reference)
    assert len(stored) == 24 and all(text == "" for _, _, text, _ in stored)
    assert all(text for _, _, text, _ in store.run_inputs(with_texts))
    # iwb verify recomputes sampled inputs of the run by reference from the corpus: equal.
    verdict = session.verify(tiny_model, by_reference, 3)
    assert not verdict.differences and verdict.cells > 0

    # Cancelled after its first shard; the corpus then changes: resume refuses it, and nothing is claimed.
    cancel = threading.Event()

    def progress(done: int, total: int, note: str = "") -> None:
        if "stored" in note:
            cancel.set()

    with pytest.raises(Cancelled):
        session.run(tiny_model, Session.prepare("logit-lens", refs, {}), progress, cancel, shard_docs=8)
    stopped = max(run_id for run_id, in store.query("SELECT run_id FROM runs").rows)
    original = source.read_bytes()
    write_corpus(source, 400, seed=9, max_chars=300)
    with pytest.raises(BadInput, match=f"run {stopped}: corpus .* changed since the run"):
        session.resumable(stopped)
    assert store.run_row(stopped)["status"] == "cancelled"
    source.write_bytes(original)  # the corpus as it was: resume reads the missing shards' texts from it
    session.resume(tiny_model, stopped, no_progress)
    assert _rows(store, stopped) == _rows(store, with_texts)


def test_the_worker_gets_the_reference_and_samples_it_itself(source):
    from app.run.worker import Job, _WorkerLoop

    choice = _choice(source, n_docs=30, store_texts=False)
    job = Job(1, "logit-lens", (), {}, choice=choice)
    inputs = _WorkerLoop.job_inputs(job)
    assert len(inputs) == 30 and not any(item.text for item in inputs)
    assert inputs == corpus.build_inputs(choice, ("pile",))[0]
    sent_texts = Job(1, "logit-lens", corpus.build_inputs(_choice(source, n_docs=30), ("pile",))[0], {})
    assert len(pickle.dumps(job)) < len(pickle.dumps(sent_texts)) / 5


def test_the_cli_runs_shows_and_exports_a_run_stored_by_reference(source, tmp_path, tiny_model):
    from tests.helpers.cli import iwb

    db = tmp_path / "cli.duckdb"
    run = iwb("--model", tiny_model.location, "--device", "cpu", "run", "logit-lens", "--pile", str(source), "--n-docs", "3",
              "--max-tokens", "6", "--no-store-texts", "--no-chart", db=db)
    assert run.returncode == 0, run.stderr
    run_id = run.stdout.split()[-1]
    shown = iwb("show", run_id, "--width", "80", "--height", "12", db=db)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("(text not stored: document ") == 3 and str(source) in shown.stdout
    target = tmp_path / "inputs.csv"
    exported = iwb("export", run_id, "--table", "inputs", "--to", str(target), db=db)
    assert exported.returncode == 0 and "wrote 3 rows" in exported.stdout, exported.stderr
    assert "text_sha256" in target.read_text()
