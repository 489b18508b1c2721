"""At 80x24 no sentence is cut: the probe's analysis description shows whole sentences (the F1 help
gives all of it) and the corpus hint line wraps instead of ending in an ellipsis."""
from __future__ import annotations

import pytest

from analyses.core.registry import analysis_names, get_analysis
from tests.helpers.tui import make_app, screen_lines, settle, shown

pytestmark = pytest.mark.tui


def test_whole_sentences_cuts_after_a_sentence_or_a_clause():
    from app.tui.screens.probe import whole_sentences

    text = "One two three. Four five six seven eight nine. Ten."
    assert whole_sentences("T: ", text, 80, 2) == text
    assert whole_sentences("T: ", text, 30, 1) == "One two three. (F1)"
    assert whole_sentences("T: ", "Alpha beta, gamma delta epsilon zeta eta theta.", 24, 1) == "Alpha beta … (F1)"


async def test_every_analysis_description_ends_with_a_whole_sentence_at_80x24(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = app.screen
        doc = probe.query_one("#analysis-doc")
        for name in analysis_names():
            await probe.show_analysis(name)
            await pilot.pause()
            spec = get_analysis(name).spec
            lines = [line.strip() for line in screen_lines(app)[doc.region.y:doc.region.bottom]]
            drawn = " ".join(line for line in lines if line)
            assert drawn.startswith(spec.title), drawn
            body = drawn[len(spec.title) + 2:]
            # What is drawn is the description whole, or its start up to a sentence's (or a clause's) end.
            assert body == spec.description or (body.endswith("(F1)") and spec.description.startswith(body.removesuffix(" (F1)").removesuffix(" …"))), (name, drawn)
            assert "…" not in body or body.endswith("… (F1)"), (name, drawn)
        await pilot.press("f1")
        await pilot.pause()
        assert spec.description[-40:] in " ".join(shown(w) for w in app.screen.query("Static")).replace("\n", " ")


async def test_the_corpus_hint_line_is_not_cut_at_80x24(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f6")
        await settle(app, pilot)
        info = app.screen.query_one("#corpus-info")
        assert "ctrl+o sends it to the probe" in shown(info)
        drawn = " ".join(line.strip() for line in screen_lines(app)[info.region.y:info.region.bottom])
        assert "ctrl+o sends it to the probe" in drawn and "…" not in drawn, drawn
