"""The documentation: the generated analysis pages are the checked-in ones, the README stays short,
and every relative link in the README and docs/ leads to a file (and heading) that exists."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from analyses.core.registry import BUILTIN, discover
from app.cli import docs
from tests.helpers.cli import iwb

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = DOCS / "analyses"
REGENERATE = "run `iwb analyses --markdown docs/analyses` and commit the pages"


def expected_pages() -> dict[str, str]:
    """The pages of the built-in analyses as app/cli/docs.py generates them now."""
    return docs.pages(sorted(BUILTIN))


def folder_pages(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.md"))}


def differences(found: dict[str, str], expected: dict[str, str]) -> list[str]:
    """What differs between two sets of pages, one entry per file, with a short diff."""
    problems = [f"{name}: missing" for name in sorted(expected.keys() - found.keys())]
    problems += [f"{name}: stray page (no such analysis)" for name in sorted(found.keys() - expected.keys())]
    for name in sorted(found.keys() & expected.keys()):
        if found[name] != expected[name]:
            diff = difflib.unified_diff(expected[name].splitlines(), found[name].splitlines(), "generated", "checked in", lineterm="", n=0)
            problems.append(f"{name}: differs\n" + "\n".join(list(diff)[:12]))
    return problems


# --- links -------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """The link targets of a Markdown file that are not URLs, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE)]


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {target} (no such heading)")
    return problems


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), *sorted(PAGES.glob("*.md"))]


# --- the checks --------------------------------------------------------------------------------


def test_the_checked_in_analysis_pages_are_the_generated_ones():
    problems = differences(folder_pages(PAGES), expected_pages())
    assert not problems, f"docs/analyses is out of date ({REGENERATE}):\n" + "\n".join(problems)


def test_every_built_in_analysis_has_a_page_and_the_index_links_it():
    index = (PAGES / docs.INDEX).read_text(encoding="utf-8")
    for name in BUILTIN:
        assert (PAGES / f"{name}.md").is_file(), f"docs/analyses/{name}.md is missing ({REGENERATE})"
        assert f"]({name}.md)" in index


def test_a_page_carries_the_spec_and_params():
    page = docs.analysis_markdown("causal-trace")
    assert page.startswith(docs.MARKER + "\n# causal-trace: Causal tracing\n")
    assert "| `samples` | int | `10` |  | noise samples per trace |" in page
    assert "| `prepend_bos` | str | `auto` | `auto`, `true`, `false` |" in page
    assert "### `causal_trace_buckets`" in page and "| `mean_restoration` | DOUBLE |" in page
    assert "| 4 | heatmap | Mean restoration by bucket, resid | `causal_trace_buckets` | `mean_restoration` | x `bucket`, y `layer` |" in page
    assert "one chart per `category`" in page


def test_generation_is_deterministic_and_names_no_machine_path(tmp_path):
    first, second = expected_pages(), expected_pages()
    assert first == second
    text = "".join(first.values())
    for local in {str(Path.home()), str(ROOT), str(tmp_path.parent)}:
        assert local not in text
    assert not re.search(r"\b(19|20)\d\d-\d\d-\d\d\b", text), "a date in a generated page"


def test_the_differences_check_can_fail(tmp_path):
    copy = dict(expected_pages())
    copy["logit-lens.md"] = copy["logit-lens.md"].replace("| `target` |", "| `targte` |")
    copy["gone-analysis.md"] = docs.MARKER + "\n# gone-analysis\n"
    del copy["truncation.md"]
    problems = differences(copy, expected_pages())
    assert any(p.startswith("logit-lens.md: differs") and "targte" in p for p in problems)
    assert "gone-analysis.md: stray page (no such analysis)" in problems
    assert "truncation.md: missing" in problems


def test_write_pages_removes_its_own_stale_pages_and_nothing_else(tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "old-analysis.md").write_text(docs.MARKER + "\n# old-analysis\n", encoding="utf-8")
    (folder / "notes.md").write_text("# hand-written\n", encoding="utf-8")
    written, removed = docs.write_pages(folder, sorted(BUILTIN))
    assert removed == [folder / "old-analysis.md"]
    assert (folder / "notes.md").exists()
    assert {path.name for path in written} == set(expected_pages())


def test_iwb_analyses_markdown_writes_the_checked_in_pages(tmp_path):
    out = tmp_path / "analyses"
    result = iwb("analyses", "--markdown", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {len(expected_pages())} pages" in result.stdout or discover().plugins
    written = folder_pages(out)
    plugins = {f"{name}.md" for name in discover().plugins}  # analyses installed from other packages, if any
    if plugins:
        written = {name: text for name, text in written.items() if name not in plugins | {docs.INDEX}}
        expected = {name: text for name, text in folder_pages(PAGES).items() if name != docs.INDEX}
    else:
        expected = folder_pages(PAGES)
    problems = differences(written, expected)
    assert not problems, "`iwb analyses --markdown` wrote other pages than docs/analyses:\n" + "\n".join(problems)


def test_iwb_analyses_markdown_dash_prints_every_page():
    result = iwb("analyses", "--markdown", "-")
    assert result.returncode == 0, result.stderr
    if not discover().plugins:
        assert result.stdout == docs.concatenated(sorted(BUILTIN))
    for name in BUILTIN:
        assert f"\n# {name}: " in result.stdout


def test_iwb_analyses_markdown_refuses_a_file(tmp_path):
    target = tmp_path / "a-file.md"
    target.write_text("mine\n", encoding="utf-8")
    result = iwb("analyses", "--markdown", str(target))
    assert result.returncode == 2 and "not a folder" in result.stderr
    assert target.read_text(encoding="utf-8") == "mine\n"


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 220, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_readme_names_the_two_commands_and_links_every_docs_page():
    readme = README.read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme
    linked = {target.partition("#")[0] for target in relative_links(README)}
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"
    assert "docs/analyses/README.md" in linked


def test_every_relative_link_leads_somewhere():
    problems = [problem for path in markdown_files() for problem in broken_links(path)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "there.md").write_text("# A heading: with `code`\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading-with-code) [ok](there.md#twice-1) [ok](https://example.org/x)\n"
        "[bad](missing.md) [bad](there.md#nowhere) `[not a link](missing-too.md)`\n"
        "```\n[not a link](in-a-fence.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "missing.md (no such file)" in problems[0] and "there.md#nowhere (no such heading)" in problems[1]
