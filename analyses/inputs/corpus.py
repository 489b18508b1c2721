"""Inputs: typed prompts, prompt-set files and Pile-format documents.

Documents come from a corpus source (see analyses.inputs.corpus_sources for the formats); with no
source the shipped offline sample ``DEFAULT_CORPUS`` is used. ``list_documents`` and
``read_document`` let a browser page through a source without loading it whole.

Corpora by reference: a sampled document is an Input whose meta says where it sits (corpus,
doc_index, line) and what it was (text_sha256, n_chars); its text is kept in the Input (and stored
in the run's ``inputs`` table) only when asked: ``InputChoice.store_texts``, by default on for typed
prompts, prompt sets and entity tables, and for corpus samples of at most ``STORE_TEXTS_MAX_DOCS``
documents. Otherwise the text is empty and is read back from the source when a shard needs it
(``DocumentReader``, ``with_texts``), its hash compared with the one the run sampled: a source
that changed since is refused with one line.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, overload

from analyses.core.contract import Input
from analyses.core.errors import BadInput
from analyses.inputs.corpus_sources import CorpusRecord, is_hf_name, iter_records
from analyses.inputs.tables import table_rows

MAX_PROMPT_CHARS = 100_000
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "pile_sample.jsonl.zst"
# Records read from a Hugging Face stream per requested document when no scan limit is given.
HF_SCAN_PER_DOC = 50
HF_SCAN_MIN = 1000
# A corpus sample larger than this is stored by reference (no texts in the inputs table) unless
# store_texts says otherwise: 1000 documents of the Pile are about 5 MB of text, a size the inputs
# table, the TUI's worker pipe and the run's memory carry without noticing; 100,000 are not.
STORE_TEXTS_MAX_DOCS = 1000


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
    store_texts: bool | None = None  # None: the default for the kind (see stores_texts)


def stores_texts(choice: InputChoice, kind: str) -> bool:
    """Whether the run keeps its inputs' texts: asked for, else always for prompts, prompt sets and
    entity tables, and for corpus samples of at most STORE_TEXTS_MAX_DOCS documents."""
    if kind != "pile":
        return True  # typed text and small user files have no source to read back from
    if choice.store_texts is not None:
        return choice.store_texts
    return choice.n_docs <= STORE_TEXTS_MAX_DOCS


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
        inputs, malformed = sample_documents(choice.path or None, choice.n_docs, choice.seed, choice.set_name, max_tokens=choice.max_tokens,
                                             keep_texts=stores_texts(choice, "pile"))
        return tuple(inputs), malformed
    if kind == "entities":
        from analyses.inputs.entities import entity_inputs, load_entities

        return tuple(entity_inputs(load_entities(choice.path or None))), 0
    return tuple(prompt_inputs(choice.prompt)), 0


def corpus_source(source: str | Path | None) -> str:
    """The source to read: the shipped sample when none is given."""
    return str(DEFAULT_CORPUS) if source is None else str(source)


def text_digest(text: str) -> str:
    """What a reference input records of its text, to know it again: sha256 of the UTF-8, 32 hex digits."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def record_input(input_id: int, record: CorpusRecord, source: str, max_tokens: int | None = None) -> Input:
    """A corpus record as a pile Input; its meta says where it sits and what it was (text_sha256, n_chars)."""
    meta = {**record.meta, "doc_index": record.index, "line": record.location, "corpus": source}
    if "text_sha256" not in meta:
        meta["text_sha256"], meta["n_chars"] = text_digest(record.text), len(record.text)
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
    keep_texts: bool = True,
) -> tuple[list[Input], int]:
    """n_docs documents drawn deterministically (reservoir sampling with a seed) from a source,
    optionally only those whose pile_set_name is set_name; returns them in corpus order and the
    number of malformed records skipped. source=None is the shipped sample. max_tokens goes
    into each Input's meta (analyses cut documents to it). scan_limit caps the records read;
    a Hugging Face stream reads at most max(1000, 50 x n_docs) records unless told otherwise.
    keep_texts False: the Inputs are references (empty text, see the module doc), and the sample
    holds no texts while it is drawn either."""
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
            reservoir.append(record if keep_texts else _reference(record))
        else:
            slot = rng.randrange(seen)
            if slot < n_docs:
                reservoir[slot] = record if keep_texts else _reference(record)
    if not reservoir:
        where = f" in set {set_name!r}" if set_name else ""
        raise BadInput(f"corpus {source_text!r} has no usable documents{where} ({malformed} malformed records skipped)")
    reservoir.sort(key=lambda record: record.index)
    inputs = [record_input(i, record, source_text, max_tokens) for i, record in enumerate(reservoir)]
    return inputs, malformed


def _reference(record: CorpusRecord) -> CorpusRecord:
    """The record without its text: where it sits and its text's digest and length."""
    meta = {**record.meta, "text_sha256": text_digest(record.text), "n_chars": len(record.text)}
    return CorpusRecord(record.index, record.location, "", record.set_name, meta)


def needs_text(item: Input) -> bool:
    """A reference input: its text is read from its corpus when it is analysed."""
    return not item.text and item.source == "pile" and "text_sha256" in item.meta and "corpus" in item.meta


class DocumentReader:
    """Texts of reference inputs read back from their corpora, each compared with its recorded digest.

    One forward cursor per source: documents asked for in corpus order (a run's shards, in order)
    cost one pass over the file in all; asking for an earlier document starts that source again."""

    def __init__(self) -> None:
        self._cursors: dict[str, tuple[Iterator[CorpusRecord | None], list[int]]] = {}

    def fill(self, items: Sequence[Input]) -> list[Input]:
        """The items, each reference input with its text; BadInput when a source changed or is gone."""
        return [self.text_of(item) if needs_text(item) else item for item in items]

    def text_of(self, item: Input) -> Input:
        source, index = str(item.meta["corpus"]), int(item.meta["doc_index"])
        record = self._record(source, index)
        if record is None or text_digest(record.text) != item.meta["text_sha256"]:
            where = f"document {index} (line {item.meta.get('line')})"
            what = "is gone" if record is None else "is not the text the run sampled"
            raise BadInput(f"corpus {source!r} changed since the run: {where} {what}; give the corpus as it was, or run again")
        return replace(item, text=record.text)

    def _record(self, source: str, index: int) -> CorpusRecord | None:
        cursor = self._cursors.get(source)
        if cursor is None or cursor[1][0] >= index:
            self.close(source)
            cursor = (iter_records(source), [-1])
            self._cursors[source] = cursor
        records, last = cursor
        for record in records:
            if record is None:
                continue
            last[0] = record.index
            if record.index == index:
                return record
            if record.index > index:
                break
        return None

    def close(self, source: str | None = None) -> None:
        for name in [source] if source is not None else list(self._cursors):
            cursor = self._cursors.pop(name, None) if name is not None else None
            if cursor is not None and hasattr(cursor[0], "close"):
                cursor[0].close()  # type: ignore[attr-defined]


class TextsOnDemand(Sequence):
    """Inputs whose reference documents are read from their corpora as they are reached: iterating
    streams them (one pass over each source), so an analysis' check or prepare step over every input
    holds one text at a time unless it keeps them itself."""

    def __init__(self, items: Sequence[Input]) -> None:
        self._items = items
        self._reader = DocumentReader()

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Input: ...

    @overload
    def __getitem__(self, index: slice) -> list[Input]: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._reader.fill(self._items[index])
        return self._reader.fill([self._items[index]])[0]

    def __iter__(self) -> Iterator[Input]:
        reader = DocumentReader()
        try:
            for item in self._items:
                yield reader.text_of(item) if needs_text(item) else item
        finally:
            reader.close()


def with_texts(items: Sequence[Input]) -> Sequence[Input]:
    """The items as an analysis sees them: themselves when every text is at hand, else read on demand."""
    return TextsOnDemand(items) if any(needs_text(item) for item in items) else items


def check_sources(items: Sequence[Input]) -> None:
    """BadInput (one line) when a reference input's corpus no longer holds its document as sampled:
    one pass over each source, no text kept."""
    reader = DocumentReader()
    try:
        for item in items:
            if needs_text(item):
                reader.text_of(item)
    finally:
        reader.close()


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
