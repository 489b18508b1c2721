"""The probe form at 80x24 and 60x20: every parameter of every analysis is reached by Tab and is on
the screen when focused, with its whole description wrapped on its row; a bad value (in the last parameter too) is
flagged on its row and ctrl+r says why it refuses and goes there; values are kept per analysis;
focus never lands in a hidden widget; the prompt editor grows, clears and holds no hidden text.

Visibility is read from what the screen draws (the compositor's lines), not from widget state."""
from __future__ import annotations

import re

import pytest

from analyses.core.params import param_infos
from analyses.core.registry import analysis_names, get_analysis
from app.tui.widgets.param_form import show_default
from tests.helpers.tui import make_app, screen_lines, settle, shown

pytestmark = pytest.mark.tui
SIZES = [(80, 24), (60, 20)]
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


def drawn(app, widget) -> str:
    """The text the screen shows in a widget's region, lines joined and spaces collapsed."""
    region = widget.region
    lines = screen_lines(app)[region.y:region.bottom]
    return " ".join(" ".join(line[region.x:region.right].split()) for line in lines).strip()


def on_screen(app, widget) -> bool:
    """The widget's whole region is inside the screen and inside every container above it (a
    container scrolled, or capped shorter than its children, clips what lies outside it)."""
    from textual.widget import Widget

    region = widget.region
    if region.height == 0 or not app.screen.region.contains_region(region):
        return False
    return all(node.region.contains_region(region) for node in widget.ancestors if isinstance(node, Widget) and node is not app.screen)


def collapsed(text: str) -> str:
    return " ".join(text.split())


def bad_value(info) -> str | None:
    """A value the field refuses, or None where any text is a valid value (a free str)."""
    if info.type_name in ("int", "float", "bool") or info.choices:
        return "x!"
    return None


async def steady(pilot) -> None:
    """Every pending message, refresh and scroll done (no sleeps): a focus change takes a few rounds
    (the focused row's height, then the form's, then the scroll to the row)."""
    for _ in range(3):
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()


async def show(app, pilot, analysis: str):
    probe = app.screen
    probe.query_one("#analysis").value = analysis
    await settle(app, pilot)
    return probe


@size_ids
async def test_every_parameter_is_reached_by_tab_and_shown_with_its_whole_description(tui_store, size):
    app = make_app(tui_store)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        for analysis in analysis_names():
            probe = await show(app, pilot, analysis)
            infos = param_infos(get_analysis(analysis).Params)
            expected = [f"param-{info.name}" for info in infos]
            probe.query_one("#analysis").focus()
            await pilot.pause()
            reached = []
            for _ in range(len(expected) + 8):
                await pilot.press("tab")
                await steady(pilot)
                focused = app.focused
                assert focused is not None and probe.shown(focused), (analysis, focused)
                if focused.id == "run":
                    break
                if focused.id in expected:
                    info = infos[expected.index(focused.id)]
                    reached.append(focused.id)
                    assert on_screen(app, focused), (size, analysis, info.name, focused.region)
                    row = probe.query_one(f"#row-{info.name}")
                    text = drawn(app, row)
                    # The focused row opens: on screen whole, its whole description and default
                    # wrapped under its line, nothing cut to an ellipsis.
                    assert on_screen(app, row), (size, analysis, info.name, row.region, "\n".join(screen_lines(app)))
                    assert text.startswith(info.name[:10]) and "…" not in text[len(info.name):], (analysis, text)
                    assert collapsed(f"{info.doc} (default {show_default(info)})") in text, (size, analysis, info.name, text)
            assert reached == expected, (size, analysis)
            assert on_screen(app, probe.query_one("#run")) and on_screen(app, probe.query_one("#status-line"))


@size_ids
async def test_a_bad_value_in_the_last_parameter_is_named_when_ctrl_r_refuses(tui_store, size):
    app = make_app(tui_store)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        checked = 0
        for analysis in analysis_names():
            probe = await show(app, pilot, analysis)
            last = param_infos(get_analysis(analysis).Params)[-1]
            value = bad_value(last)
            if value is None:
                continue
            checked += 1
            probe.query_one(f"#param-{last.name}").value = value
            probe.query_one("#analysis").focus()  # away from the field: ctrl+r must bring it back
            await pilot.pause()
            await pilot.press("ctrl+r")
            await settle(app, pilot)
            assert app.host.jobs == []
            field = probe.query_one(f"#param-{last.name}")
            assert app.focused is field and on_screen(app, field), (analysis, app.focused)
            error = probe.query_one("#param-error")
            assert on_screen(app, error)
            text = drawn(app, error)
            assert text.startswith(f"Not run: parameter '{last.name}'") and value in text, (analysis, text)
            row = probe.query_one(f"#row-{last.name}")
            assert row.has_class("-bad") and f"parameter '{last.name}'" in shown(row.query_one(".param-doc"))
            await steady(pilot)
            assert on_screen(app, row) and collapsed(f"{last.doc} (default {show_default(last)})") in drawn(app, row), (analysis, drawn(app, row))
            field.value = ""
            await pilot.pause()
            assert not row.has_class("-bad") and not error.display  # fixed: the flag and the refusal go
        assert checked >= 8


@size_ids
async def test_a_refusal_from_the_whole_check_goes_to_the_parameter_it_names(tui_store, size):
    """Values each fine alone but refused together by the analysis' own check: the field it names gets the focus."""
    app = make_app(tui_store)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        probe = await show(app, pilot, "logit-lens")
        probe.query_one("#prompt").insert("The Eiffel Tower is in")
        probe.query_one("#params").show_error("")
        probe.show_form_error("parameter 'prepend_bos' cannot be true here")
        await pilot.pause()
        assert app.focused is probe.query_one("#param-prepend_bos")
        assert drawn(app, probe.query_one("#param-error")) == "Not run: parameter 'prepend_bos' cannot be true here"


async def test_values_are_kept_per_analysis(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = app.screen
        probe.query_one("#param-target").focus()
        await pilot.press(*" Paris")
        probe = await show(app, pilot, "causal-trace")
        assert probe.query_one("#param-seed").value == ""
        probe.query_one("#param-seed").focus()
        await pilot.press("5")
        probe = await show(app, pilot, "truncation")
        probe = await show(app, pilot, "logit-lens")
        assert probe.query_one("#param-target").value == " Paris"
        assert probe.query_one("#source").value == "prompt"
        probe = await show(app, pilot, "causal-trace")
        assert probe.query_one("#param-seed").value == "5"
        # A kept value in a row scrolled out of view is still on screen: the line under the rows lists it.
        assert "set: seed=5" in drawn(app, probe.query_one("#param-help"))
        probe = await show(app, pilot, "logit-lens")
        probe.query_one("#prompt").insert("The Eiffel Tower is in")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.host.jobs[0][0] == "logit-lens" and app.host.jobs[0][2] == {"target": " Paris"}


@size_ids
async def test_f2_on_a_corpus_analysis_focuses_a_shown_field_and_typing_stays_out_of_the_prompt(tui_store, size):
    app = make_app(tui_store)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        probe = await show(app, pilot, "truncation")
        assert not probe.query_one("#prompt").display
        assert app.focused is not None and probe.shown(app.focused)
        await pilot.press("f4")
        await settle(app, pilot)
        await pilot.press("f2")
        await settle(app, pilot)
        assert app.screen is probe and app.focused is not None and probe.shown(app.focused), app.focused
        assert on_screen(app, app.focused)
        await pilot.press(*"abc")
        assert probe.query_one("#prompt").text == ""
        # The prompt focused, then hidden by choosing another input: focus moves to what is shown.
        probe = await show(app, pilot, "logit-lens")
        probe.query_one("#prompt").focus()
        probe.query_one("#source").value = "pile"
        await settle(app, pilot)
        assert app.focused is not None and probe.shown(app.focused) and app.focused.id != "prompt"
        assert "^l" not in shown(probe.query_one("KeyBar"))  # no clear key for a hidden prompt


@size_ids
async def test_the_prompt_grows_clears_and_says_how_much_it_holds(tui_store, size):
    app = make_app(tui_store)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        probe = app.screen
        area = probe.query_one("#prompt")
        empty_height = area.region.height
        area.insert("one\ntwo\nthree")
        await settle(app, pilot)
        assert area.region.height == 3 + 2 > empty_height  # three lines and the border
        document = "\n".join(f"line {n} of a long document" for n in range(200))
        area.load_text(document)
        await settle(app, pilot)
        assert area.region.height < size[1] // 2  # bounded: the form and the Run button stay on screen
        assert on_screen(app, probe.query_one("#run"))
        subtitle = str(area.border_subtitle)
        assert re.search(r"[\d,]+ chars · 200 lines · \d+ more lines out of view", subtitle), subtitle
        assert "^l Clear" in shown(probe.query_one("KeyBar"))  # the clear key, named even at 60 columns
        await pilot.press("ctrl+a", "delete")  # select all, delete: nothing is left behind out of view
        assert area.text == ""
        await pilot.press(*"The cat")
        area.load_text(document + "\nThe dog")
        await pilot.press("ctrl+l")  # the clear key
        assert area.text == "" and app.focused is area
        await pilot.press(*"The cat sat")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert [item.text for item in app.host.jobs[0][1]] == ["The cat sat"]


@size_ids
async def test_the_key_bar_shortens_descriptions_to_keep_every_key(tui_store, size):
    from app.tui.widgets.key_bar import KeyBar

    app = make_app(tui_store)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        bar = app.screen.query_one(KeyBar)
        text = shown(bar)
        assert len(text) <= size[0] and "…" not in text
        assert text.split()[:6] == ["^k", "Cancel", "^r", "Run", "^l", "Clear"]  # the screen's own keys first
        for key in ("f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "^q"):
            assert key in text.split()


@size_ids
async def test_the_progress_note_wraps_whole_under_the_bar(tui_store, size):
    """A long progress note (what it does, n of N, rate, time left, the queue) is shown whole, wrapped
    at the screen's width, with the Run button and the status line still on screen."""
    from dataclasses import replace

    app = make_app(tui_store, hold=True)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        probe = app.screen
        state = replace(app.job_state, job_id=7, phase="started", done=3, total=30, note="input 2/8: layer 3/30 of causal-trace, restoring the MLP window",
                        pace=" · 4.2 layers/s · ~41 s left", waiting=((8, "logit-lens"), (9, "truncation")))
        probe.show_state(state)
        await steady(pilot)
        note = probe.query_one("#progress-note")
        expected = f"started: {state.note}{state.pace} · 2 queued (F8)"
        assert on_screen(app, note) and drawn(app, note) == expected, (drawn(app, note), "\n".join(screen_lines(app)))
        assert on_screen(app, probe.query_one("#run")) and on_screen(app, probe.query_one("#status-line"))
        probe.show_state(replace(state, job_id=None, phase="idle"))  # back to one line
        await steady(pilot)
        assert drawn(app, note) == "idle" and note.region.height == 1


async def test_the_file_path_is_kept_per_input_kind(tui_store):
    """A corpus path typed for a corpus analysis does not become fact-lookup's entity table (whose
    empty path means the shipped athletes): each input kind keeps its own path."""
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = await show(app, pilot, "truncation")  # a corpus (Pile format) analysis
        path = probe.query_one("#source-path")
        path.focus()
        await pilot.press(*"corpus.jsonl")
        probe = await show(app, pilot, "fact-lookup")
        assert path.display and path.value == "" and "shipped athletes" in path.placeholder
        probe = await show(app, pilot, "truncation")
        assert path.value == "corpus.jsonl"


async def test_a_refusal_from_the_worker_is_shown_under_the_form_at_the_field_it_names(tmp_path, tiny_model, monkeypatch):
    """causal-trace on a prompt without its subject: the REAL worker's check refuses it (it needs the
    tokenizer); the refusal is shown under the form like a check on this side, the subject field gets
    the focus, and nothing is stored."""
    from app.run.worker import Failed
    from tests.helpers.tui import real_worker_app, until

    app, store = real_worker_app(tmp_path, tiny_model, monkeypatch, "refusal.duckdb")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = await show(app, pilot, "causal-trace")
        probe.query_one("#prompt").insert("The Eiffel Tower is located in the city of")
        await pilot.press("ctrl+r")
        await until(lambda: any(isinstance(event, Failed) for event in app.events_seen), "the worker's refusal")
        await settle(app, pilot)
        await steady(pilot)
        assert app.screen is probe
        error = probe.query_one("#param-error")
        assert on_screen(app, error) and drawn(app, error).startswith("Not run: the prompt has no subject"), drawn(app, error)
        assert app.focused is probe.query_one("#param-subject")
        assert store.query("SELECT count(*) FROM runs").rows[0][0] == 0
