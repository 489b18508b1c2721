"""A researcher's session with the REAL worker host and the embedded model, not the fake host.

Six jobs over four analyses (prompts and Pile documents, multi-input runs included), each run
opened again from History, inputs switched with ] and [, charts paged, SQL run, text with
markup-like brackets as prompt, corpus document and SQL result, and a database locked by another
process for longer than the retry window: the app stays up and shows every problem in place.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from app.run.worker import Failed, Finished, JobCancelled
from tests.helpers.tui import cells, labels, row_by_label, settle, shown

pytestmark = [pytest.mark.integration, pytest.mark.tui]

MARKUP_PROMPT = "[INST] Is a[k] [bold]bold[/bold]? [/INST] The Eiffel Tower is in"
DOCS = [
    "[INST] Tell me about [bold]Paris[/bold] and a[k] arrays. [/INST] Paris is the capital of France, known for its museums and the Eiffel Tower.",
    "[b]BBCode[/b] forum post: the [url=x]link[/url] says [/INST] that the river flows north through a wide valley to the sea.",
]
HOLD_LOCK = (
    "import sys, time, duckdb\n"
    "deadline = time.monotonic() + 60\n"
    "while True:\n"
    "    try:\n"
    "        conn = duckdb.connect(sys.argv[1]); break\n"
    "    except duckdb.IOException:\n"
    "        if time.monotonic() > deadline: raise\n"
    "        time.sleep(0.05)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
    "conn.close()\n"
)
LOCK_RETRY_S = 1.0


T0 = time.monotonic()


def mark(what: str) -> None:
    print(f"{time.monotonic() - T0:7.1f} s  {what}", flush=True)


async def run_job(app, pilot, timeout: float = 300) -> object:
    """ctrl+r on the probe screen; wait for this job's end event from the worker (polling the app's messages)."""
    seen = len(app.events_seen)
    await pilot.press("ctrl+r")
    deadline = time.monotonic() + timeout
    while True:
        ended = [e for e in app.events_seen[seen:] if isinstance(e, (Finished, Failed, JobCancelled))]
        if ended:
            break
        assert time.monotonic() < deadline, f"no end event: {app.events_seen[seen:]}"
        await pilot.pause(0.1)
    await settle(app, pilot)
    mark(f"job ended: {ended[0]}")
    return ended[0]


async def set_job(app, pilot, analysis: str, source: str = "prompt", prompt: str = "", params: dict | None = None,
                  path: str = "", n_docs: str = "", max_tokens: str = "") -> None:
    await pilot.press("f2")
    await settle(app, pilot)
    probe = app.screen
    probe.query_one("#analysis").value = analysis
    await settle(app, pilot)
    probe.query_one("#source").value = source
    await pilot.pause()
    if source == "prompt":
        probe.query_one("#prompt").load_text("")
        probe.query_one("#prompt").focus()
        await pilot.press(*prompt)
    else:
        probe.query_one("#source-path").value = path
        probe.query_one("#n-docs").value = n_docs
        probe.query_one("#max-tokens").value = max_tokens
    for name, value in (params or {}).items():
        probe.query_one(f"#param-{name}").value = value
    await pilot.pause()


async def expect_run_shown(app, pilot, run_id: int) -> None:
    assert app.screen.name == "results" and app.screen.run_id == run_id
    info = shown(app.screen.query_one("#run-info"))
    assert f"run {run_id} " in info, info
    view, table = app.screen.query_one("#chart"), app.screen.query_one("#chart-table")
    assert (view.display and view.data is not None) or (table.display and table.row_count > 0)


async def page_all_charts(app, pilot) -> int:
    """Tab through every chart of the open run; each one shows data."""
    screen = app.screen
    count = len([d for d in screen.loaded if d is not None])
    for _ in range(count):
        await pilot.press("tab")
        await pilot.pause()
        data = screen.loaded[screen.chart_index]
        if data.chart.kind == "table":
            assert screen.query_one("#chart-table").row_count == len(data.rows)
        else:
            assert screen.query_one("#chart").data is data
    return count


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "markup.jsonl"
    path.write_text("".join(json.dumps({"text": text, "meta": {"pile_set_name": "[b]Forum[/b]"}}) + "\n" for text in DOCS))
    return path


async def test_real_session_many_jobs_history_sql_and_a_locked_database(tmp_path, corpus_file):
    from app.tui.app import Workbench
    from app.tui.settings import Settings
    from app.tui.store_access import SerialStore

    settings = Settings(tmp_path / "session.duckdb", model="smollm2-135m", device="cpu", dtype="float32",
                        worker_log=tmp_path / "worker.log", crash_log=tmp_path / "crash.log", lock_retry_s=LOCK_RETRY_S)
    store = SerialStore(settings.db_path, lock_retry_seconds=LOCK_RETRY_S)
    app = Workbench(store, settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        runs: list[int] = []

        # 1-2: two prompts in a row through the same results screen (the DuplicateIds crash), one full of brackets.
        for prompt in ("The Eiffel Tower is located in the city of", MARKUP_PROMPT):
            await set_job(app, pilot, "logit-lens", prompt=prompt, params={"target": " Paris"})
            event = await run_job(app, pilot)
            assert isinstance(event, Finished), event
            runs.append(event.run_id)
            await expect_run_shown(app, pilot, event.run_id)
        assert MARKUP_PROMPT[:60] in shown(app.screen.query_one("#run-info"))
        lens = app.screen.query_one("#chart")
        top = store.query("SELECT top_token FROM logit_lens WHERE run_id = ? AND layer = 30 ORDER BY pos DESC LIMIT 1", [runs[-1]]).rows[0][0]
        assert lens.data.details[lens.cursor][0] == ("top_token", top)

        # 3-5: multi-input runs over a corpus whose documents are full of markup-like text.
        for analysis, params in (("truncation", {"k_max": "2", "n_lowest": "5"}), ("component-norms", {}), ("logit-lens", {})):
            await set_job(app, pilot, analysis, source="pile", path=str(corpus_file), n_docs="2", max_tokens="12", params=params)
            event = await run_job(app, pilot)
            assert isinstance(event, Finished), event
            runs.append(event.run_id)
            await expect_run_shown(app, pilot, event.run_id)
            assert await page_all_charts(app, pilot) >= 1
            if analysis == "truncation":
                lowest = [d for d in app.screen.loaded if d is not None and d.chart.table == "truncation_lowest"]
                assert lowest, "the truncation_lowest table chart is missing"

        # ] and [ switch the inputs of the multi-input logit-lens run; the labels are that input's tokens.
        results = app.screen
        results.query_one("#chart-tabs").active = "chart-0"
        await settle(app, pilot)
        for key, index in (("right_square_bracket", 1), ("right_square_bracket", 0), ("left_square_bracket", 1)):
            await pilot.press(key)
            await settle(app, pilot)
            assert results.input_index == index
            input_id = results.input_ids[index]
            tokens = [t for (t,) in store.query("SELECT token FROM tokens WHERE run_id = ? AND input_id = ? ORDER BY pos", [runs[-1], input_id]).rows]
            assert results.query_one("#chart").data.x_labels == tokens

        mark('# Every run again from History.')
        # Every run again from History.
        await pilot.press("f4")
        await settle(app, pilot)
        history = app.screen
        table = history.query_one("#runs")
        assert table.row_count == len(runs)
        for run_id in runs:
            await pilot.press("f4")
            await settle(app, pilot)
            table.focus()
            table.move_cursor(row=table.get_row_index(str(run_id)))
            await pilot.press("enter")
            await settle(app, pilot)
            await expect_run_shown(app, pilot, run_id)
        # The prompt column shows the markup-like prompt as typed (read from the table, not the screen:
        # the column may be narrower than the text, or scrolled out of a 100-column terminal).
        assert row_by_label(table, str(runs[1]))["prompt"].startswith("[INST] Is a[k] [bold]bold")

        mark('# The SQL console shows')
        # The SQL console shows results and column names literally.
        await pilot.press("f5")
        await settle(app, pilot)
        sql = app.screen
        sql.query_one("#sql-editor").text = "SELECT text AS \"[bold]text[/bold]\", 'a[k]' AS k FROM inputs WHERE text LIKE '%[/INST]%' ORDER BY run_id, input_id"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        grid = sql.query_one("#sql-results")
        assert labels(grid) == ["[bold]text[/bold]", "k"]
        assert cells(grid, 0) == [MARKUP_PROMPT[:60], "a[k]"]  # [:60] holds the [/INST]

        mark('# The corpus browser shows')
        # The corpus browser shows the documents and their set name literally.
        await pilot.press("f6")
        await settle(app, pilot)
        corpus = app.screen
        corpus.query_one("#corpus-source").value = str(corpus_file)
        corpus.query_one("#corpus-source").focus()
        await pilot.press("enter")
        await settle(app, pilot)
        documents = corpus.query_one("#documents")
        assert documents.row_count == len(DOCS)
        first = row_by_label(documents, 0)
        assert first["set"] == "[b]Forum[/b]" and first["start of the text"].startswith("[INST] Tell me"), first

        mark('# Another process holds')
        # Another process holds the database for longer than the retry window.
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(settings.db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "locked"
            await pilot.press("f4")
            await settle(app, pilot)
            mark("lock held")
            assert "locked" in shown(app.screen.query_one("#run-detail"))
            app.screen.query_one("#runs").focus()
            await pilot.press("enter")
            await settle(app, pilot)
            assert app.screen.name == "results" and "locked" in shown(app.screen.query_one("#cell-info"))
            await pilot.press("f5")
            await settle(app, pilot)
            await pilot.press("ctrl+r")
            await settle(app, pilot)
            assert "locked" in shown(app.screen.query_one("#sql-status"))
            await set_job(app, pilot, "logit-lens", prompt="Locked out")
            event = await run_job(app, pilot)
            assert isinstance(event, Failed) and "locked" in event.message, event
            assert app.is_running
        finally:
            holder.stdin.write("\n")
            holder.stdin.close()
            holder.wait(30)

        mark('# The lock is gone')
        # The lock is gone: the next job runs, and nothing stored before was lost.
        await set_job(app, pilot, "logit-lens", prompt="The Colosseum is located in the city of")
        event = await run_job(app, pilot)
        assert isinstance(event, Finished), event
        runs.append(event.run_id)
        statuses = dict(store.query("SELECT run_id, status FROM runs").rows)
        assert all(statuses[run_id] == "done" for run_id in runs), statuses
    assert app.return_code in (None, 0)
    assert "the app stopped" not in (settings.crash_log.read_text() if settings.crash_log.exists() else "")
