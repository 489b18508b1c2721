"""Inputs: typed prompts, prompt-set files and Pile-format documents.

Documents come from a corpus source (see analyses.inputs.corpus_sources for the formats); with no
source the shipped offline sample ``DEFAULT_CORPUS`` is used. ``list_documents`` and
``read_document`` let a browser page through a source without loading it whole.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from analyses.core.contract import Input
from analyses.core.errors import BadInput
from analyses.inputs.corpus_sources import CorpusRecord, is_hf_name, iter_records
from analyses.inputs.tables import table_rows

MAX_PROMPT_CHARS = 100_000
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "pile_sample.jsonl.zst"
# Records read from a Hugging Face stream per requested document when no scan limit is given.
HF_SCAN_PER_DOC = 50
HF_SCAN_MIN = 1000


def prompt_inputs(text: str | None) -> list[Input]:
    """A single typed prompt; empty or whitespace-only prompts are refused."""
    if text is None or not text.strip():
        raise BadInput("the prompt is empty; give some text with --prompt")
    if len(text) > MAX_PROMPT_CHARS:
        raise BadInput(f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return [Input(0, "prompt", text, {})]


PROMPT_SET_FIELDS = ("prompt", "subject", "answer", "category")


def _prompt_set_text(path: Path) -> str:
    """The file as UTF-8 text; a leading byte-order mark (Excel's CSV) is dropped."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        offset = error.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise BadInput(f"{path}:{line}: not UTF-8 (byte 0x{data[offset]:02x} at byte {column} of the line); save the file as UTF-8") from None


def load_prompt_set(path_text: str) -> list[Input]:
    """A prompt set (CSV with a header, or JSONL): prompt, and optionally subject, answer, category."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise BadInput(f"prompt set {path_text!r} is not a readable file")
    inputs = []
    for line_no, row in table_rows(path, _prompt_set_text(path)):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInput(f"{path}:{line_no}: the row has no prompt")
        meta = {key: row[key] for key in PROMPT_SET_FIELDS[1:] if row.get(key) not in (None, "")}
        inputs.append(Input(len(inputs), "prompt_set", prompt, meta))
    if not inputs:
        raise BadInput(f"prompt set {path_text!r} has no prompts")
    return inputs


@dataclass(frozen=True)
class InputChoice:
    """What a face (CLI flags, the TUI's probe form) asked to analyse.

    kind None means nothing was chosen: the analysis' first input kind applies, so a
    corpus-first analysis samples the default corpus and a weights-only one needs nothing.
    """

    kind: str | None = None
    prompt: str | None = None
    path: str | None = None
    n_docs: int = 8
    max_tokens: int | None = None
    seed: int = 0
    set_name: str | None = None


def build_inputs(choice: InputChoice, input_kinds: tuple[str, ...]) -> tuple[tuple[Input, ...], int]:
    """The inputs for an analysis and the number of malformed corpus records skipped."""
    kind = choice.kind or input_kinds[0]
    if kind == "weights":
        return (), 0
    if kind == "prompt_set":
        if not choice.path:
            raise BadInput("give the path of a prompt-set file (--prompts)")
        return tuple(load_prompt_set(choice.path)), 0
    if kind == "pile":
        if choice.max_tokens is not None and choice.max_tokens < 1:
            raise BadInput(f"max tokens must be at least 1, not {choice.max_tokens}")
        inputs, malformed = sample_documents(choice.path or None, choice.n_docs, choice.seed, choice.set_name, max_tokens=choice.max_tokens)
        return tuple(inputs), malformed
    if kind == "entities":
        from analyses.inputs.entities import entity_inputs, load_entities

        return tuple(entity_inputs(load_entities(choice.path or None))), 0
    return tuple(prompt_inputs(choice.prompt)), 0


def corpus_source(source: str | Path | None) -> str:
    """The source to read: the shipped sample when none is given."""
    return str(DEFAULT_CORPUS) if source is None else str(source)


def record_input(input_id: int, record: CorpusRecord, source: str, max_tokens: int | None = None) -> Input:
    meta = {**record.meta, "doc_index": record.index, "line": record.location, "corpus": source}
    if max_tokens is not None:
        meta["max_tokens"] = max_tokens
    return Input(input_id, "pile", record.text, meta)


def sample_documents(
    source: str | Path | None,
    n_docs: int,
    seed: int = 0,
    set_name: str | None = None,
    *,
    max_tokens: int | None = None,
    scan_limit: int | None = None,
) -> tuple[list[Input], int]:
    """n_docs documents drawn deterministically (reservoir sampling with a seed) from a source,
    optionally only those whose pile_set_name is set_name; returns them in corpus order and the
    number of malformed records skipped. source=None is the shipped sample. max_tokens goes
    into each Input's meta (analyses cut documents to it). scan_limit caps the records read;
    a Hugging Face stream reads at most max(1000, 50 x n_docs) records unless told otherwise."""
    if n_docs < 1:
        raise BadInput(f"--n-docs must be at least 1, not {n_docs}")
    if max_tokens is not None and max_tokens < 1:
        raise BadInput(f"--max-tokens must be at least 1, not {max_tokens}")
    source_text = corpus_source(source)
    if scan_limit is None and is_hf_name(source_text):
        scan_limit = max(HF_SCAN_MIN, HF_SCAN_PER_DOC * n_docs)
    rng = random.Random(seed)
    reservoir: list[CorpusRecord] = []
    seen = 0
    malformed = 0
    for scanned, record in enumerate(iter_records(source_text), start=1):
        if scan_limit is not None and scanned > scan_limit:
            break
        if record is None:
            malformed += 1
            continue
        if set_name is not None and record.set_name != set_name:
            continue
        seen += 1
        if len(reservoir) < n_docs:
            reservoir.append(record)
        else:
            slot = rng.randrange(seen)
            if slot < n_docs:
                reservoir[slot] = record
    if not reservoir:
        where = f" in set {set_name!r}" if set_name else ""
        raise BadInput(f"corpus {source_text!r} has no usable documents{where} ({malformed} malformed records skipped)")
    reservoir.sort(key=lambda record: record.index)
    inputs = [record_input(i, record, source_text, max_tokens) for i, record in enumerate(reservoir)]
    return inputs, malformed


@dataclass(frozen=True)
class DocumentEntry:
    """One line of a corpus listing: index (for read_document), set name, size and a preview."""

    index: int
    set_name: str | None
    n_chars: int
    preview: str


@dataclass(frozen=True)
class DocumentPage:
    entries: tuple[DocumentEntry, ...]
    offset: int
    has_more: bool
    malformed: int


def list_documents(
    source: str | Path | None = None, offset: int = 0, limit: int = 50, set_name: str | None = None, preview_chars: int = 80
) -> DocumentPage:
    """A page of a source's documents (those of set_name only, when given), streaming from the
    start: offset counts the listed (filtered) documents. For a corpus browser."""
    if offset < 0 or limit < 1:
        raise BadInput(f"bad page: offset {offset}, limit {limit}")
    entries: list[DocumentEntry] = []
    listed = 0
    malformed = 0
    has_more = False
    for record in iter_records(corpus_source(source)):
        if record is None:
            malformed += 1
            continue
        if set_name is not None and record.set_name != set_name:
            continue
        if listed >= offset + limit:
            has_more = True
            break
        if listed >= offset:
            preview = " ".join(record.text[: preview_chars * 2].split())[:preview_chars]
            entries.append(DocumentEntry(record.index, record.set_name, len(record.text), preview))
        listed += 1
    return DocumentPage(tuple(entries), offset, has_more, malformed)


def read_document(source: str | Path | None, index: int, max_tokens: int | None = None) -> Input:
    """The document with this index (as listed by list_documents) as a pile Input."""
    source_text = corpus_source(source)
    if index >= 0:
        for record in iter_records(source_text):
            if record is not None and record.index == index:
                return record_input(0, record, source_text, max_tokens)
            if record is not None and record.index > index:
                break
    raise BadInput(f"corpus {source_text!r} has no document {index}")


def set_names(source: str | Path | None = None, scan_limit: int | None = None) -> dict[str | None, int]:
    """How many documents each pile_set_name has (over the first scan_limit records when given)."""
    counts: dict[str | None, int] = {}
    for scanned, record in enumerate(iter_records(corpus_source(source)), start=1):
        if scan_limit is not None and scanned > scan_limit:
            break
        if record is not None:
            counts[record.set_name] = counts.get(record.set_name, 0) + 1
    return counts
