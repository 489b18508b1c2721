"""Context help (`?` or F1): what the shown screen is for, what its numbers mean, and its keys.

Written for a researcher who opens the workbench for the first time; the keys are read from the
screen's live bindings, so the list is the one that works now. Each analysis' own numbers are
explained on its page, docs/analyses/<name>.md.
"""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP: dict[str, tuple[str, str, str]] = {
    # screen name: (title, what it is for, what its numbers mean)
    "probe": (
        "Probe: set up and run an analysis",
        "Pick a model, an analysis and its input (a typed prompt, or a prompt-set or corpus file for the analyses "
        "that take one), set its parameters and press ctrl+r. The run goes to a background worker that keeps the "
        "model loaded; everything it computes is stored in the results database, and Results (F3) opens when it "
        "is done. While a job runs, ctrl+r queues the next one (F8 lists the queue); ctrl+k cancels the running "
        "job within about a second. The form keeps what you typed per analysis; an empty field uses the default "
        "shown in grey; the line under the form gives the whole description of the focused parameter, and a bad "
        "value is flagged on its row (ctrl+r then says why it will not run).",
        "The progress line reads 'phase: what the analysis is doing (its own unit, n/N) · rate · time left'; the "
        "rate is measured over the last 20 seconds, so the time left is an estimate that settles as the run goes. "
        "The status line: the model, its device and dtype, its number of layers, and whether it is loaded.",
    ),
    "results": (
        "Results: the charts of one stored run",
        "The charts the analysis defines, drawn from what is stored (the same as `iwb show RUN`). Tab steps "
        "through them; [ and ] step through the run's inputs where a chart is per input. The arrows move a "
        "cursor over a heatmap's cells or a curve's points, and the line under the chart reads the exact stored "
        "values there (and s opens the SQL behind the chart in the console, to check or reuse it).",
        "Heatmaps are layer by token position: row 0 is the embeddings, row L the residual stream after block L; "
        "each cell is the value for that layer at that position (for the logit lens: top_prob, the probability "
        "of the most likely next token when that residual is decoded through the final norm and unembedding; "
        "target_prob, your target's probability; entropy in bits; KL to the final layer's prediction in nats). "
        "Colours run dark (low) to bright (high) over the range in the legend; l switches to log10. What each "
        "analysis' numbers are is on its page, docs/analyses/<name>.md. A circuit (attribution-patching's "
        "Circuit tab) draws its nodes as boxes, layers from the bottom up, each edge leaving a box's top and "
        "entering the box above at its bottom; left and right walk the nodes, up and down go a row, and the line "
        "under it reads the node's exact check (patching the whole node) and its edges. On a table row that names "
        "a neuron (contextual-neurons, fact-lookup), n shows its top-activating contexts: read from the newest "
        "stored neuron-contexts run of the same model, layer and neuron, else the Probe form to compute them; N "
        "always opens the form (another corpus, other settings). A fact-lookup run's Entities tab lists each entity "
        "with its true attribute, the prediction among the answers, p(answer set) and whether it is correct: o "
        "sorts by the next column, r reverses, c shows all / correct / incorrect, / filters by text, and the "
        "line under it gives the row's details and, where the run stored them, its own ablation effects.",
    ),
    "history": (
        "History: every stored run",
        "Newest first. Enter opens a run in Results; / filters by text (analysis, model, status, parameters or "
        "input text), and in the filter Enter opens the first match and Down goes into the list. R resumes an "
        "interrupted, failed or cancelled run (only its missing shards are computed). Delete removes a run and "
        "all its rows after you confirm. F7 marks a run; F7 on another compares the two. The list reads the "
        "statuses again by itself every few seconds.",
        "status: running, done, failed, cancelled or interrupted (its process ended); 'n/N shards' for a run "
        "with part of its results stored; a checks badge when its fidelity record is not all ok. secs: the "
        "time the run computed (from its start or a resume to its end), then after a slash the wall time from "
        "its start to its end where a pause before a resume made it longer (compute s / wall s). Times are "
        "UTC; runs of the newest run's year show month-day and time, older ones their date.",
    ),
    "sql": (
        "SQL console: ask the results database anything",
        "Read-only DuckDB SQL over every stored result. Tables: runs (one row per run), inputs and tokens "
        "(what each run read), run_checks (its fidelity record), run_events (its history), shards, and one "
        "table per analysis result (logit_lens, causal_trace, ...), each keyed by run_id. ctrl+r runs the "
        "statement; a long query says it runs and ctrl+k cancels it. In the editor ctrl+a selects the whole "
        "statement (then delete or typing replaces it) and ctrl+l clears it (ctrl+z undoes). Writes are refused: nothing you type "
        "here can change the database.",
        "Rows come 100 a page (ctrl+n, ctrl+b). ctrl+g charts a numeric column over an optional x, one line per "
        "optional series column.",
    ),
    "corpus": (
        "Corpus: read documents and send one to the probe",
        "Pages through a Pile-format corpus (a .jsonl, .parquet or .txt file, or the shipped sample when the "
        "source is empty), optionally one set (pile_set_name) only. Enter reads a document; ctrl+o sends it, or "
        "the selected span, to the probe as its prompt.",
        "Each row: the document's index in the corpus, its set and its length in characters.",
    ),
    "compare": (
        "Compare: two runs of one analysis",
        "Give two run ids (or F7 on two runs in History). The first line lists what differs between them "
        "(model, device and dtype, each parameter, the input), run A's value first, as the run-id fields and the heading name them. "
        "Tab steps through the charts; the arrows read cells. d aligns layers by relative depth, to compare "
        "models of different depth.",
        "Heatmaps show B - A: run B's value minus run A's at the same layer and position (positions only where "
        "both runs read the same tokens); by relative depth, layer l of L sits at l/L. Curves draw both runs.",
    ),
    "jobs": (
        "Jobs: the running job and the queue",
        "The worker runs one job at a time: the running job first, then the waiting ones top to bottom. "
        "shift+up and shift+down (or u and n) move a waiting job; x cancels the selected job (a waiting one is "
        "dropped and never becomes a run; the running one stops within about a second and its run is stored "
        "cancelled, resumable from History); Enter opens a job's run.",
        "progress: the job's done/total in its own unit, what it is doing, its rate and the time left.",
    ),
}


def screen_keys(screen: Any) -> list[tuple[str, str]]:
    """(key, what it does) for every binding active on the screen now, its own first, then the app's;
    a text field's editing keys (cut, undo, delete line) are left out: they are not the screen's."""
    from textual.widgets import Input, TextArea

    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    active = sorted(screen.active_bindings.values(), key=lambda item: item[0] is screen.app)
    for node, binding, enabled, tooltip in active:
        if isinstance(node, (Input, TextArea)) or binding.action in seen or not enabled or not (binding.description or tooltip):
            continue
        seen.add(binding.action)
        key = screen.app.get_key_display(binding)
        found.append(("ctrl+" + key[1:] if key.startswith("^") else key, tooltip or binding.tooltip or binding.description))
    return found


def help_text(screen: Any) -> Text:
    title, purpose, numbers = HELP.get(screen.name or "", (str(screen.name or "this screen"), "", ""))
    text = Text()
    text.append(title + "\n\n", style="bold")
    if purpose:
        text.append(purpose + "\n\n")
    for doc in screen.query("#analysis-doc"):  # the probe's analysis: its whole description
        if getattr(doc, "description", ""):
            text.append(f"The analysis: {doc.title}\n", style="bold")
            text.append(doc.description + "\n\n")
    if numbers:
        text.append("The numbers\n", style="bold")
        text.append(numbers + "\n\n")
    text.append("Keys here\n", style="bold")
    keys = screen_keys(screen)
    width = max((len(key) for key, _ in keys), default=0)
    for key, what in keys:
        text.append(f"  {key:<{width}}  ", style="bold")
        text.append(what + "\n")
    text.append("\nctrl+p: the command palette (every analysis, model, screen and action by name).")
    return text


class HelpScreen(ModalScreen[None]):
    """The shown screen's help over it; escape, q, ? or F1 closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help-box { width: 90%; max-width: 100; height: 90%; border: round $accent; background: $surface; padding: 0 1; }
    #help-box > VerticalScroll { height: 1fr; }
    #help-close { height: 1; color: $text-muted; }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close", priority=True)]

    def __init__(self, text: Text) -> None:
        super().__init__(name="help")
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            with VerticalScroll():
                yield Static(self.text, id="help-text")
            yield Static("escape closes · arrows and PgUp/PgDn scroll", id="help-close")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
