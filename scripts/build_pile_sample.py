"""Build the shipped offline corpus analyses/data/pile_sample.jsonl.zst.

A Pile-FORMAT sample (one JSON object per line: text and meta.pile_set_name), not the Pile.
Every text comes from the Python standard library of the interpreter running this script
(CPython as distributed on PyPI-installable builds; Python Software Foundation Licence 2.0):

  Github      source files of stdlib modules (code), cut at a line boundary
  PSF docs    the docstrings of a stdlib module (module, classes, functions) joined as prose
  PSF news    entries of idlelib's NEWS.txt changelog, grouped into documents
  PSF licence the interpreter's LICENSE.txt

Deterministic for a given Python version (files are visited in sorted order, every n-th kept);
the version is recorded in each record's meta. Usage:
    python scripts/build_pile_sample.py [--out PATH] [--per-set N] [--max-chars N]
"""
from __future__ import annotations

import argparse
import ast
import json
import platform
import sysconfig
from pathlib import Path

LICENSE = "PSF-2.0"
SKIP_PARTS = {"test", "tests", "site-packages", "lib2to3", "__pycache__", "idle_test", "turtledemo"}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def module_files(root: Path) -> list[Path]:
    files = [p for p in sorted(root.rglob("*.py")) if not SKIP_PARTS & set(p.relative_to(root).parts)]
    return [p for p in files if p.stat().st_size > 2000]


def cut(text: str, max_chars: int) -> str:
    """The text up to max_chars, cut at the last line break before the limit."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    return head[: head.rfind("\n")] if "\n" in head else head


def every_nth(items: list, wanted: int) -> list:
    step = max(1, len(items) // max(1, wanted))
    return items[::step][:wanted]


def code_documents(root: Path, wanted: int, max_chars: int) -> list[tuple[str, str]]:
    docs = []
    for path in every_nth(module_files(root), wanted):
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append((str(path.relative_to(root)), cut(text, max_chars)))
    return docs


def docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    texts = []
    for node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc) > 40:
            texts.append(doc.strip())
    return texts


def docstring_documents(root: Path, wanted: int, max_chars: int) -> list[tuple[str, str]]:
    candidates = []
    for path in module_files(root):
        text = "\n\n".join(docstrings(path))
        if len(text) >= 1500:
            candidates.append((str(path.relative_to(root)), cut(text, max_chars)))
    return every_nth(candidates, wanted)


def news_documents(root: Path, wanted: int, target_chars: int = 2500) -> list[tuple[str, str]]:
    path = root / "idlelib" / "NEWS.txt"
    if not path.is_file():
        return []
    blocks = [b.strip() for b in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if b.strip()]
    docs, current = [], []
    for block in blocks:
        current.append(block)
        if sum(len(b) for b in current) >= target_chars:
            docs.append(("idlelib/NEWS.txt", "\n\n".join(current)))
            current = []
    return every_nth(docs, wanted)


def licence_documents(root: Path) -> list[tuple[str, str]]:
    path = root / "LICENSE.txt"
    return [("LICENSE.txt", path.read_text(encoding="utf-8", errors="replace"))] if path.is_file() else []


def build(out: Path, per_set: int, max_chars: int) -> dict[str, int]:
    import zstandard

    root = stdlib_dir()
    python = platform.python_version()
    sets = {
        "Github": code_documents(root, per_set, max_chars),
        "PSF docs": docstring_documents(root, per_set, max_chars),
        "PSF news": news_documents(root, per_set // 3),
        "PSF licence": licence_documents(root),
    }
    lines = []
    for set_name, docs in sets.items():
        for source, text in docs:
            meta = {"pile_set_name": set_name, "source": f"cpython-{python}/Lib/{source}", "license": licence_of(root / source)}
            lines.append(json.dumps({"text": text, "meta": meta}, ensure_ascii=False, sort_keys=True))
    # Interleave the sets so that the first documents of the file are not all code.
    lines.sort(key=lambda line: hash_key(line))
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(zstandard.ZstdCompressor(level=19).compress(payload))
    return {name: len(docs) for name, docs in sets.items()}


def licence_of(path: Path) -> str:
    """PSF-2.0 unless the file names another licence (a few stdlib files are MIT, e.g. tomllib)."""
    head = path.read_text(encoding="utf-8", errors="replace")[:2000] if path.is_file() else ""
    marker = "SPDX-License-Identifier:"
    if marker in head:
        return head.split(marker, 1)[1].split()[0]
    return LICENSE


def hash_key(line: str) -> str:
    import hashlib

    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "analyses" / "data" / "pile_sample.jsonl.zst"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--per-set", type=int, default=240, help="documents per stdlib set (news: a third)")
    parser.add_argument("--max-chars", type=int, default=6000, help="characters kept per document")
    args = parser.parse_args()
    counts = build(args.out, args.per_set, args.max_chars)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {counts}")


if __name__ == "__main__":
    main()
