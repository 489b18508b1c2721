"""Corpus readers: every format, malformed records, empty and unreadable sources, sampling."""
from __future__ import annotations

import gzip
import json

import pytest

from analyses.core.errors import BadInput
from analyses.inputs import corpus
from analyses.inputs.corpus_sources import iter_records

RECORDS = [
    {"text": "First document.\nWith two lines.", "meta": {"pile_set_name": "Wiki"}},
    {"text": "def f():\n    return 1\n", "meta": {"pile_set_name": "Github"}},
    {"text": "Third one, prose again.", "meta": {"pile_set_name": "Wiki"}},
    {"text": "Fourth: no meta at all."},
]
BAD_LINES = ["{not json", json.dumps({"meta": {"pile_set_name": "Wiki"}}), json.dumps({"text": "   "}), json.dumps([1, 2])]


def jsonl_text() -> str:
    lines = [json.dumps(RECORDS[0]), BAD_LINES[0], json.dumps(RECORDS[1]), BAD_LINES[1], "", json.dumps(RECORDS[2])]
    lines += [BAD_LINES[2], BAD_LINES[3], json.dumps(RECORDS[3])]
    return "\n".join(lines) + "\n"


def write_source(tmp_path, fmt: str):
    text = jsonl_text()
    if fmt == "jsonl":
        path = tmp_path / "c.jsonl"
        path.write_text(text)
    elif fmt == "jsonl.gz":
        path = tmp_path / "c.jsonl.gz"
        path.write_bytes(gzip.compress(text.encode()))
    elif fmt == "jsonl.zst":
        import zstandard

        path = tmp_path / "c.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    else:
        raise ValueError(fmt)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_jsonl_formats_skip_and_count_malformed_lines(tmp_path, fmt):
    path = write_source(tmp_path, fmt)
    items = list(iter_records(path))
    records = [r for r in items if r is not None]
    assert [r.text for r in records] == [r["text"] for r in RECORDS]
    assert [r.set_name for r in records] == ["Wiki", "Github", "Wiki", None]
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert records[1].location == 3
    assert items.count(None) == 4
    inputs, malformed = corpus.sample_documents(str(path), 10)
    assert malformed == 4 and len(inputs) == 4
    assert inputs[0].meta["pile_set_name"] == "Wiki" and inputs[0].source == "pile"


def test_parquet_reader_with_struct_meta_and_null_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = RECORDS[:3] + [{"text": None, "meta": {"pile_set_name": "Wiki"}}]
    table = pa.table({"text": [r["text"] for r in rows], "meta": [r["meta"] for r in rows]})
    path = tmp_path / "c.parquet"
    pq.write_table(table, path, row_group_size=2)
    items = list(iter_records(path))
    assert [r.set_name for r in items if r] == ["Wiki", "Github", "Wiki"]
    assert items[-1] is None
    inputs, malformed = corpus.sample_documents(path, 5, set_name="Github")
    assert [i.text for i in inputs] == [RECORDS[1]["text"]] and malformed == 1


def test_parquet_without_text_column_is_bad_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(BadInput, match="no 'text' column"):
        corpus.sample_documents(path, 1)


def test_txt_blocks_are_documents(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("para one\nstill one\n\n\npara two\n  \npara three")
    texts = [r.text for r in iter_records(path)]
    assert texts == ["para one\nstill one", "para two", "para three"]


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.txt", "empty.jsonl.gz"])
def test_empty_source_is_bad_input(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"") if name.endswith(".gz") else b"")
    with pytest.raises(BadInput, match="no usable documents"):
        corpus.sample_documents(path, 3)


def test_only_malformed_lines_is_bad_input_with_count(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES))
    with pytest.raises(BadInput, match="4 malformed"):
        corpus.sample_documents(path, 3)


def test_unreadable_and_damaged_sources(tmp_path):
    with pytest.raises(BadInput, match="not a readable file"):
        corpus.sample_documents(tmp_path / "missing.jsonl.zst", 3)
    damaged = tmp_path / "damaged.jsonl.zst"
    damaged.write_bytes(b"this is not zstd at all")
    with pytest.raises(BadInput, match="cannot be read"):
        corpus.sample_documents(damaged, 3)
    truncated = tmp_path / "trunc.jsonl.gz"
    truncated.write_bytes(gzip.compress(jsonl_text().encode())[:40])
    with pytest.raises(BadInput, match="cannot be read"):
        corpus.sample_documents(truncated, 3)


def test_hf_name_fails_in_one_line_when_hub_unreachable(monkeypatch):
    import analyses.model.loading

    monkeypatch.setattr(analyses.model.loading, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(BadInput, match="hub cannot be reached") as info:
        corpus.sample_documents("someone/some-pile", 2)
    assert "\n" not in str(info.value)


def test_sampling_is_deterministic_and_filters(tmp_path):
    path = tmp_path / "many.jsonl"
    names = ["A", "B", "C"]
    path.write_text("".join(json.dumps({"text": f"doc {i}", "meta": {"pile_set_name": names[i % 3]}}) + "\n" for i in range(300)))
    first, _ = corpus.sample_documents(path, 10, seed=3)
    again, _ = corpus.sample_documents(path, 10, seed=3)
    other, _ = corpus.sample_documents(path, 10, seed=4)
    assert [i.text for i in first] == [i.text for i in again] != [i.text for i in other]
    assert [i.input_id for i in first] == list(range(10))
    indices = [i.meta["doc_index"] for i in first]
    assert indices == sorted(indices) and max(indices) > 50
    only_b, _ = corpus.sample_documents(path, 5, seed=1, set_name="B", max_tokens=64)
    assert {i.meta["pile_set_name"] for i in only_b} == {"B"} and all(i.meta["max_tokens"] == 64 for i in only_b)
    with pytest.raises(BadInput, match="in set 'Z'"):
        corpus.sample_documents(path, 5, set_name="Z")


def test_browsing_pages_and_reading(tmp_path):
    path = write_source(tmp_path, "jsonl")
    page = corpus.list_documents(path, offset=1, limit=2)
    assert [e.index for e in page.entries] == [1, 2] and page.has_more and page.malformed >= 1
    assert page.entries[0].set_name == "Github" and page.entries[0].n_chars == len(RECORDS[1]["text"])
    last = corpus.list_documents(path, offset=2, limit=5)
    assert [e.index for e in last.entries] == [2, 3] and not last.has_more
    assert corpus.read_document(path, 2).text == RECORDS[2]["text"]
    with pytest.raises(BadInput, match="no document 9"):
        corpus.read_document(path, 9)
    assert corpus.set_names(path) == {"Wiki": 2, "Github": 1, None: 1}


def test_shipped_default_corpus_is_a_pile_format_sample():
    assert corpus.DEFAULT_CORPUS.is_file() and corpus.DEFAULT_CORPUS.stat().st_size < 3_000_000
    counts = corpus.set_names()
    assert {"Github", "PSF docs", "PSF news"} <= set(counts) and None not in counts
    inputs, malformed = corpus.sample_documents(None, 8, seed=0)
    assert malformed == 0 and len(inputs) == 8
    assert all(i.meta["corpus"] == str(corpus.DEFAULT_CORPUS) for i in inputs)
