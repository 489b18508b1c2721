"""Streaming readers for corpus sources in the Pile's record format.

A source is a local file (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet``, ``.txt``) or a
Hugging Face dataset name (``owner/name`` or ``owner/name:config``, or ``hf:NAME`` to force it),
streamed through ``datasets`` when the hub is reachable. Every reader yields one item per
record: a ``CorpusRecord`` or ``None`` for a malformed one; nothing is ever loaded whole.

Plain ``.txt``: one document per block of lines separated by one or more blank lines (a file
with no blank lines is one document); its set name is None.
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.core.errors import BadInput

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst")
FILE_SUFFIXES = JSONL_SUFFIXES + (".parquet", ".txt")
PARQUET_BATCH_ROWS = 512
# The Pile's .zst files were written with long windows; allow up to 2 GiB like `zstd --long=31`.
ZSTD_MAX_WINDOW = 1 << 31
ZSTD_READ_BYTES = 1 << 17


@dataclass(frozen=True)
class CorpusRecord:
    """One usable document: its ordinal among the usable records of the source, where it sits
    in the file (line or row number), its text, set name and the rest of its meta."""

    index: int
    location: int
    text: str
    set_name: str | None
    meta: dict = field(default_factory=dict)


def _set_name_and_meta(row: dict) -> tuple[str | None, dict]:
    meta = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            meta = {}
    meta = dict(meta) if isinstance(meta, dict) else {}
    set_name = meta.get("pile_set_name", row.get("pile_set_name"))
    if set_name is not None:
        meta["pile_set_name"] = str(set_name)
    return (str(set_name) if set_name is not None else None), meta


class _ZstdFrames(io.RawIOBase):
    """Every frame of a .zst file in turn; a file cut mid-frame raises EOFError, as gzip does
    (zstandard's stream_reader just stops there, so a damaged file would pass as a short one)."""

    def __init__(self, path: Path) -> None:
        import zstandard

        self._file = open(path, "rb")
        self._decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._frame: Any = None
        self._pending = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._file.read(ZSTD_READ_BYTES)
            if not chunk:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("compressed file ended before the end of its last zstd frame")
                return 0
            while chunk:
                if self._frame is None or self._frame.eof:
                    self._frame = self._decompressor.decompressobj()
                self._pending += self._frame.decompress(chunk)
                chunk = self._frame.unused_data if self._frame.eof else b""
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        del self._pending[:size]
        return size

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if name.endswith(".zst"):
        return io.TextIOWrapper(io.BufferedReader(_ZstdFrames(path)), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _rows_to_records(rows: Iterator[tuple[int, Any]]) -> Iterator[CorpusRecord | None]:
    """Turn (location, row dict or None) into records; rows without non-empty text are malformed."""
    index = 0
    for location, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            yield None
            continue
        set_name, meta = _set_name_and_meta(row)
        yield CorpusRecord(index, location, row["text"], set_name, meta)
        index += 1


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError:
                yield line_no, None


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if "text" not in names:
        raise BadInput(f"corpus {str(path)!r} has no 'text' column (columns: {', '.join(names)})")
    wanted = [name for name in ("text", "meta", "pile_set_name") if name in names]
    row_no = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def _txt_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_text(path) as handle:
        block: list[str] = []
        start = 0
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                if not block:
                    start = line_no
                block.append(line)
            elif block:
                yield start, {"text": "".join(block).rstrip("\n")}
                block = []
        if block:
            yield start, {"text": "".join(block).rstrip("\n")}


def _hf_rows(name: str) -> Iterator[tuple[int, Any]]:
    from analyses.model.loading import hub_reachable

    if not hub_reachable():
        raise BadInput(f"corpus {name!r} is neither a local file nor reachable: the Hugging Face hub cannot be reached")
    import datasets

    dataset_name, _, config = name.partition(":")
    try:
        stream = datasets.load_dataset(dataset_name, config or None, split="train", streaming=True)
        yield from enumerate(stream, start=1)
    except Exception as error:  # datasets raises many kinds; the user needs one line
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BadInput(f"corpus {name!r} cannot be streamed from the Hugging Face hub: {first_line}") from None


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged file raises (truncated gzip, bad zstd frame, broken Parquet)."""
    import pyarrow as pa
    import zstandard

    return (OSError, EOFError, zstandard.ZstdError, pa.ArrowException)


def is_hf_name(source: str) -> bool:
    if source.startswith("hf:"):
        return True
    path = Path(source).expanduser()
    looks_like_file = source.startswith((".", "/", "~")) or source.lower().endswith(FILE_SUFFIXES)
    return not path.exists() and not looks_like_file and source.count("/") == 1


def iter_records(source: str | Path) -> Iterator[CorpusRecord | None]:
    """Stream the records of a source (see the module doc); BadInput when it cannot be read."""
    text = str(source)
    if is_hf_name(text):
        yield from _rows_to_records(_hf_rows(text.removeprefix("hf:")))
        return
    path = Path(text).expanduser()
    if not path.is_file():
        raise BadInput(f"corpus {text!r} is not a readable file (nor a Hugging Face dataset name like owner/name)")
    name = path.name.lower()
    if name.endswith(".parquet"):
        rows = _parquet_rows(path)
    elif name.endswith(".txt"):
        rows = _txt_rows(path)
    else:
        rows = _jsonl_rows(path)
    try:
        yield from _rows_to_records(rows)
    except _read_errors() as error:
        raise BadInput(f"corpus {text!r} cannot be read: {error}") from None
