"""The synthetic corpus generator (analyses.inputs.synthetic): Pile-format files of any size from
the shipped sample, seeded, readable as a corpus source by a run."""
from __future__ import annotations

import subprocess
import sys

import pytest

from analyses.core.errors import BadInput
from analyses.inputs import corpus
from analyses.inputs.corpus_sources import iter_records
from analyses.inputs.synthetic import write_corpus


def _records(path):
    return [record for record in iter_records(path) if record is not None]


def test_writes_the_asked_number_of_pile_records_seeded(tmp_path):
    first = write_corpus(tmp_path / "a.jsonl.zst", 300, seed=7, max_chars=500)
    again = write_corpus(tmp_path / "b.jsonl.zst", 300, seed=7, max_chars=500)
    other = write_corpus(tmp_path / "c.jsonl.zst", 300, seed=8, max_chars=500)
    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.path.read_bytes() != other.path.read_bytes()
    records = _records(first.path)
    assert len(records) == 300 and sum(first.by_set.values()) == 300
    assert all(0 < len(record.text) <= 500 for record in records)
    assert sum(len(record.text) for record in records) == first.n_chars
    sample_sets = set(corpus.set_names())
    assert {record.set_name for record in records} <= sample_sets
    assert len({record.set_name for record in records}) > 1  # recombined per set, with the sample's shares
    # Recombined, not copied: documents differ from one another and their lines come from the sample.
    assert len({record.text for record in records}) > 250
    sample_lines = {line for record in _records(corpus.DEFAULT_CORPUS) for line in record.text.splitlines()}
    assert all(line in sample_lines for line in records[0].text.splitlines())
    assert not list(tmp_path.glob("*.partial"))


def test_more_documents_than_the_sample_and_plain_jsonl(tmp_path):
    written = write_corpus(tmp_path / "big.jsonl", 1200, seed=1, max_chars=120, max_parts=1)
    assert len(_records(written.path)) == 1200 > len(_records(corpus.DEFAULT_CORPUS))


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(BadInput, match="at least 1 document"):
        write_corpus(tmp_path / "x.jsonl.zst", 0)
    with pytest.raises(BadInput, match="jsonl"):
        write_corpus(tmp_path / "x.parquet", 3)
    assert not list(tmp_path.iterdir())


def test_command_line_writes_a_file(tmp_path):
    out = tmp_path / "cli.jsonl.zst"
    done = subprocess.run([sys.executable, "-m", "analyses.inputs.synthetic", str(out), "--docs", "40", "--max-chars", "200"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 40 documents" in done.stdout and len(_records(out)) == 40
    bad = subprocess.run([sys.executable, "-m", "analyses.inputs.synthetic", str(out), "--docs", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_a_run_samples_it_as_its_corpus(tmp_path, store, tiny_model):
    from analyses.core.contract import no_progress
    from app.run.session import Session

    path = write_corpus(tmp_path / "runs.jsonl.zst", 500, seed=3, max_chars=300).path
    inputs, malformed = corpus.build_inputs(corpus.InputChoice("pile", path=str(path), n_docs=20, max_tokens=8, seed=2), ("pile",))
    assert malformed == 0 and len(inputs) == 20
    assert {item.meta["corpus"] for item in inputs} == {str(path)}
    prepared = Session.prepare("logit-lens", inputs, {})
    run_id = Session(store).run(tiny_model, prepared, no_progress, shard_docs=8)
    assert store.run_row(run_id)["status"] == "done"
    assert store.query("SELECT count(DISTINCT input_id) FROM logit_lens WHERE run_id = ?", [run_id]).rows[0][0] == 20
