"""Inputs: typed prompts, prompt-set files and Pile-format documents."""
from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path
from typing import Iterator

from analyses.base import Input
from analyses.errors import BadInput

MAX_PROMPT_CHARS = 100_000


def prompt_inputs(text: str | None) -> list[Input]:
    """A single typed prompt; empty or whitespace-only prompts are refused."""
    if text is None or not text.strip():
        raise BadInput("the prompt is empty; give some text with --prompt")
    if len(text) > MAX_PROMPT_CHARS:
        raise BadInput(f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return [Input(0, "prompt", text, {})]


PROMPT_SET_FIELDS = ("prompt", "subject", "answer", "category")


def _prompt_set_rows(path: Path) -> Iterator[tuple[int, dict]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
        for line_no, row in enumerate(reader, start=2):
            yield line_no, row
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadInput(f"{path}:{line_no}: not a JSON object ({error.msg})") from None
        if not isinstance(row, dict):
            raise BadInput(f"{path}:{line_no}: not a JSON object")
        yield line_no, row


def load_prompt_set(path_text: str) -> list[Input]:
    """A prompt set (CSV with a header, or JSONL): prompt, and optionally subject, answer, category."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise BadInput(f"prompt set {path_text!r} is not a readable file")
    inputs = []
    for line_no, row in _prompt_set_rows(path):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInput(f"{path}:{line_no}: the row has no prompt")
        meta = {key: row[key] for key in PROMPT_SET_FIELDS[1:] if row.get(key) not in (None, "")}
        inputs.append(Input(len(inputs), "prompt_set", prompt, meta))
    if not inputs:
        raise BadInput(f"prompt set {path_text!r} has no prompts")
    return inputs


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if name.endswith(".zst"):
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
        return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_documents(path: Path) -> Iterator[tuple[dict | None, int]]:
    """Stream Pile-format records (one JSON object per line with text and meta.pile_set_name).

    Yields (record or None for a malformed line, line number); never loads the file whole.
    """
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                yield None, line_no
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
                yield None, line_no
                continue
            yield record, line_no


def sample_documents(source: str, n_docs: int, seed: int = 0, set_name: str | None = None) -> tuple[list[Input], int]:
    """n_docs documents drawn deterministically (reservoir sampling with a seed) from a local
    Pile-format file; returns them and the number of malformed lines skipped."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise BadInput(f"corpus {source!r} is not a readable file")
    if n_docs < 1:
        raise BadInput(f"--n-docs must be at least 1, not {n_docs}")
    rng = random.Random(seed)
    reservoir: list[tuple[int, dict]] = []
    seen = 0
    malformed = 0
    for record, line_no in iter_documents(path):
        if record is None:
            malformed += 1
            continue
        record_set = (record.get("meta") or {}).get("pile_set_name") if isinstance(record.get("meta"), dict) else None
        if set_name is not None and record_set != set_name:
            continue
        seen += 1
        if len(reservoir) < n_docs:
            reservoir.append((line_no, record))
        else:
            slot = rng.randrange(seen)
            if slot < n_docs:
                reservoir[slot] = (line_no, record)
    if not reservoir:
        raise BadInput(f"corpus {source!r} has no usable documents" + (f" in set {set_name!r}" if set_name else ""))
    reservoir.sort(key=lambda pair: pair[0])
    inputs = []
    for line_no, record in reservoir:
        meta = dict(record.get("meta") or {}) if isinstance(record.get("meta"), dict) else {}
        meta["line"] = line_no
        inputs.append(Input(len(inputs), "pile", record["text"], meta))
    return inputs, malformed
