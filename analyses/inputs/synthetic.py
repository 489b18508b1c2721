"""A synthetic Pile-format corpus of any size, made from the shipped sample, for scale tests offline.

Each document is recombined from the shipped sample (analyses/data/pile_sample.jsonl.zst): a set
name is drawn with the sample's own shares, then one to ``max_parts`` pieces (a run of consecutive
lines of one sample document of that set) are joined, the whole cut to ``max_chars`` at a line
break. Everything is drawn from one ``random.Random(seed)``: the same (seed, count, sizes) write
the same bytes. The file is written as it is made (a zstd stream, one JSON object a line, the
Pile's fields ``text`` and ``meta.pile_set_name``), so a million documents take no more memory
than ten; it reads back through every corpus reader (``iwb run ... --pile FILE``).

    python -m analyses.inputs.synthetic OUT.jsonl.zst --docs 100000 [--seed 0] [--max-chars 4000]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from analyses.core.errors import BadInput
from analyses.inputs.corpus import DEFAULT_CORPUS
from analyses.inputs.corpus_sources import iter_records

ZSTD_LEVEL = 3


@dataclass(frozen=True)
class Written:
    path: Path
    n_docs: int
    n_chars: int
    n_bytes: int
    by_set: dict


def _sample_lines(source: str | Path) -> dict[str, list[list[str]]]:
    """The source's documents as lists of non-empty lines, per set name."""
    by_set: dict[str, list[list[str]]] = {}
    for record in iter_records(str(source)):
        if record is None:
            continue
        lines = [line for line in record.text.splitlines() if line.strip()]
        if lines:
            by_set.setdefault(record.set_name or "unknown", []).append(lines)
    if not by_set:
        raise BadInput(f"corpus {str(source)!r} has no usable documents to recombine")
    return by_set


def _piece(rng: random.Random, lines: list[str], max_lines: int) -> list[str]:
    length = rng.randint(1, min(max_lines, len(lines)))
    start = rng.randrange(len(lines) - length + 1)
    return lines[start : start + length]


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = head.rfind("\n")
    return head[:cut] if cut > 0 else head


def documents(n_docs: int, seed: int = 0, *, max_chars: int = 4000, max_parts: int = 3, max_lines: int = 40,
              source: str | Path | None = None) -> Iterator[tuple[str, str]]:
    """(set name, text) of n_docs synthetic documents, one at a time."""
    if n_docs < 1:
        raise BadInput(f"a synthetic corpus needs at least 1 document, not {n_docs}")
    if max_chars < 1 or max_parts < 1 or max_lines < 1:
        raise BadInput("max_chars, max_parts and max_lines must be at least 1")
    by_set = _sample_lines(source or DEFAULT_CORPUS)
    names = sorted(by_set)
    weights = [len(by_set[name]) for name in names]
    rng = random.Random(seed)
    for _ in range(n_docs):
        name = rng.choices(names, weights)[0]
        docs = by_set[name]
        lines: list[str] = []
        for _ in range(rng.randint(1, max_parts)):
            lines.extend(_piece(rng, docs[rng.randrange(len(docs))], max_lines))
        yield name, _cut("\n".join(lines), max_chars)


def write_corpus(path: str | Path, n_docs: int, seed: int = 0, *, max_chars: int = 4000, max_parts: int = 3, max_lines: int = 40,
                 source: str | Path | None = None) -> Written:
    """Write n_docs synthetic documents to path (.jsonl.zst, or plain .jsonl); what was written."""
    out = Path(path)
    if not out.name.endswith((".jsonl.zst", ".jsonl")):
        raise BadInput(f"a synthetic corpus is written as .jsonl.zst or .jsonl, not {out.name!r}")
    if n_docs < 1:
        raise BadInput(f"a synthetic corpus needs at least 1 document, not {n_docs}")
    by_set: dict[str, int] = {}
    partial = out.with_name(out.name + ".partial")
    try:
        n_chars = _write(partial, out.name.endswith(".zst"), n_docs, seed, by_set, max_chars, max_parts, max_lines, source)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)  # a half-written file never has the corpus' name
    return Written(out, n_docs, n_chars, out.stat().st_size, by_set)


def _write(partial: Path, compress: bool, n_docs: int, seed: int, by_set: dict, max_chars: int, max_parts: int, max_lines: int,
           source: str | Path | None) -> int:
    """Write the documents to partial, counting them per set into by_set; their characters."""
    import zstandard

    n_chars = 0
    with open(partial, "wb") as raw:
        sink = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False) if compress else raw
        try:
            for index, (name, text) in enumerate(documents(n_docs, seed, max_chars=max_chars, max_parts=max_parts,
                                                           max_lines=max_lines, source=source)):
                meta = {"pile_set_name": name, "license": "PSF-2.0", "source": f"synthetic seed {seed} doc {index}"}
                sink.write((json.dumps({"text": text, "meta": meta}, ensure_ascii=False) + "\n").encode())
                by_set[name] = by_set.get(name, 0) + 1
                n_chars += len(text)
        finally:
            if sink is not raw:
                sink.close()
    return n_chars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analyses.inputs.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the file to write: NAME.jsonl.zst (or NAME.jsonl)")
    parser.add_argument("--docs", type=int, required=True, help="number of documents")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-chars", type=int, default=4000, help="characters per document at most (default 4000)")
    parser.add_argument("--max-parts", type=int, default=3, help="sample pieces joined per document at most (default 3)")
    parser.add_argument("--source", help="the corpus to recombine (default: the shipped sample)")
    args = parser.parse_args(argv)
    try:
        written = write_corpus(args.out, args.docs, args.seed, max_chars=args.max_chars, max_parts=args.max_parts, source=args.source)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sets = ", ".join(f"{name} {count}" for name, count in sorted(written.by_set.items()))
    print(f"wrote {written.n_docs} documents ({written.n_chars} characters, {written.n_bytes} bytes) to {written.path} ({sets})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
