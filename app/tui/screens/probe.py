"""The probe screen: prompt or corpus, model, analysis, a parameter form from Params, run and cancel.

What is typed in the form is kept per analysis (switching away and back restores it); focus only
goes to widgets that are shown; the prompt editor grows with its text up to a bound and says how
much text it holds, so that what runs is what the screen shows.
"""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Button, Header, Input, Label, ProgressBar, RichLog, Select, Static, TextArea

from analyses.core.errors import BadInput
from analyses.core.registry import analysis_names, get_analysis
from analyses.inputs.corpus import InputChoice
from app.run.session import Session
from app.tui.events import JobState
from app.tui.plain import plain
from app.tui.screens.base import WorkbenchScreen, background
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.param_form import ParamForm

# The file path is kept per input kind: a corpus path never becomes fact-lookup's entity table.
PATH_KINDS = {"prompt_set": "path to the prompt-set file", "pile": "path to the corpus file (Pile format .jsonl)",
              "entities": "entity table file (empty: the shipped athletes)"}
SOURCE_LABELS = {"weights": "model weights (no input)", "prompt": "typed prompt", "prompt_set": "prompt-set file", "pile": "corpus file (Pile format)", "entities": "entity table (empty path: shipped athletes)"}


def model_names(current: str) -> list[str]:
    """The names the model field completes: the embedded models, and the one loaded now."""
    from analyses.model.loading import EMBEDDED

    names = list(EMBEDDED)
    if current not in names:
        names.insert(0, current)
    return names


def model_problem(state: JobState) -> str:
    """The worker's load error for the model asked for, as one line ('' when it loaded)."""
    if state.model_state != "failed" or not state.model_error:
        return ""
    line = state.model_error.strip().splitlines()[0]
    for prefix in (f"model {state.model!r}: ", f"model {state.model!r} "):  # the name is in the field above
        if line.startswith(prefix):
            return line[len(prefix):]
    return line


class PromptArea(TextArea):
    """The prompt editor: ctrl+a selects the whole text (then delete or typing replaces it)."""

    BINDINGS = [Binding("ctrl+a", "select_all", "Select all", show=False, tooltip="Select the whole prompt")]

    def action_select_all(self) -> None:
        self.select_all()


def whole_sentences(head: str, description: str, width: int, lines: int) -> str:
    """The description cut after its last whole sentence that fits, with head before it, in
    ``lines`` lines of ``width`` (word-wrapped); the whole description where it fits. Where not even
    the first sentence fits, it is cut after its last whole clause (at a ';', ':' or ',') that fits,
    else after a word, ending with an ellipsis and (F1): never mid-word, never cut without a sign."""
    import re
    import textwrap

    width = max(width - 1, 10)  # a column to spare: Textual's wrap may break a line a little earlier

    def fits(text: str) -> bool:
        return len(textwrap.wrap(head + text, width)) <= lines

    if fits(description):
        return description
    sentences = [match.end() for match in re.finditer(r"[.!?](?=\s)", description)]
    for end in reversed(sentences):
        if fits(description[:end] + " (F1)"):
            return description[:end] + " (F1)"
    clauses = [match.start() for match in re.finditer(r"[;:,](?=\s)", description)]
    words = [match.start() for match in re.finditer(r"\s", description)]
    for ends in (clauses, words):  # a clause's end, else (a long first clause) a word's
        for end in reversed(ends):
            if fits(description[:end] + " … (F1)"):
                return description[:end] + " … (F1)"
    return ""


class AnalysisDoc(Static):
    """The analysis' title and as many whole sentences of its description as its lines hold (two;
    one on a short screen); the F1 help gives the whole description."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.title, self.description = "", ""

    def show(self, title: str, description: str) -> None:
        self.title, self.description = title, description
        self.refresh()

    def render(self) -> Any:
        if not self.title:
            return ""
        lines = 1 if self.screen.has_class("-short") else 2
        shown = whole_sentences(f"{self.title}: ", self.description, self.content_region.width or 80, lines)
        return plain((self.title, "bold"), f": {shown}" if shown else " (F1 describes it)")


def describe_prompt(text: str, hidden_lines: int) -> str:
    """The editor's subtitle: how much text it holds, and how much of it is scrolled out of view."""
    if not text:
        return ""
    lines = text.count("\n") + 1
    size = f"{len(text):,} chars" + (f" · {lines:,} lines" if lines > 1 else "")
    return size + (f" · {hidden_lines:,} more lines out of view (scroll)" if hidden_lines > 0 else "")


def build_inputs(source: InputChoice, input_kinds: tuple[str, ...]) -> tuple:
    """The inputs of a job from the probe form; BadInput on an empty prompt or a bad file."""
    from analyses.inputs import corpus

    return corpus.build_inputs(source, input_kinds)[0]


class ProbeScreen(WorkbenchScreen):
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", tooltip="Run the analysis on the prompt in the worker; while a job runs, queue it (F8 shows the queue)"),
        # ctrl+r while a job runs: the same action, named as the Run button names it then (Queue).
        Binding("ctrl+r", "queue", "Queue", tooltip="Queue the analysis behind the running job (F8 shows the queue)"),
        Binding("ctrl+k", "cancel", "Cancel job", priority=True, tooltip="Ask the running job to stop"),
        Binding("ctrl+l", "clear_prompt", "Clear prompt", tooltip="Empty the prompt editor (ctrl+z undoes it)"),
    ]
    # Below 24 lines the spacing goes, so that the form, the Run button and the log still fit.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (24, "-normal")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-normal")]

    def __init__(self, model_name: str) -> None:
        super().__init__(name="probe")
        self.model_name = model_name
        self.shown_analysis = ""
        self.form_values: dict[str, dict[str, str]] = {}  # what was typed in each analysis' form
        self.source_kinds: dict[str, str] = {}  # the input kind chosen for each analysis
        self.source_paths: dict[str, str] = {}  # the file path typed for each input kind
        self.path_kind = ""  # the input kind the path field holds a path for now
        self.job_running = False  # ctrl+r queues (its key bar word is Queue) while a job runs

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="probe-body"):
            yield PromptArea(id="prompt", soft_wrap=True, show_line_numbers=False, placeholder="Type a prompt, e.g. The Eiffel Tower is located in the city of")
            with Horizontal(id="pickers"):
                yield Label("model", classes="picker-label")
                # Any model: an embedded name (completed as typed), a Hugging Face name or a local folder; enter loads it.
                yield Input(self.model_name, id="model", compact=True, placeholder="embedded, Hugging Face name or folder",
                            suggester=SuggestFromList(model_names(self.model_name), case_sensitive=False))
                yield Label("analysis", classes="picker-label")
                names = analysis_names()
                first = "logit-lens" if "logit-lens" in names else names[0]
                yield Select([(name, name) for name in names], value=first, allow_blank=False, id="analysis", compact=True)
            yield AnalysisDoc(id="analysis-doc")
            with Horizontal(id="source-row"):
                yield Label("input", classes="picker-label")
                yield Select([(SOURCE_LABELS["prompt"], "prompt")], id="source", allow_blank=False, compact=True)
                yield Input(placeholder="path to the file", id="source-path", compact=True)
                yield Input(placeholder="n docs (8)", id="n-docs", compact=True, type="integer")
                yield Input(placeholder="max tokens", id="max-tokens", compact=True, type="integer")
            yield ParamForm(None, id="params")
            with Horizontal(id="run-row"):
                yield Button("Run ^r", id="run", variant="primary", compact=True)
                yield Button("Cancel ^k", id="cancel", variant="error", compact=True, disabled=True)
                yield ProgressBar(total=1, id="progress", show_eta=False)
            yield Static("idle", id="progress-note")  # full width under the bar: it wraps, never cut
            yield RichLog(id="job-log", max_lines=200, wrap=True)
            yield Static("", id="status-line")
        yield KeyBar()

    async def on_mount(self) -> None:
        await self.show_analysis(str(self.query_one("#analysis", Select).value))
        self.focus_first()
        self.show_state(self.app.job_state)

    def focus_first(self) -> None:
        """Focus where typing is meant to go: the prompt when it is shown, else the first shown field."""
        for selector in ("#prompt", "#source-path", ".param-input", "#analysis"):
            widget = self.query(selector).first() if self.query(selector) else None
            if widget is not None and self.shown(widget):
                widget.focus()
                return

    def scroll_to_center(self, widget: Widget, animate: bool = True, **kwargs: Any) -> Any:
        """Focus moves jump, they do not glide: the focused field is in view at once."""
        return super().scroll_to_center(widget, animate=False, **kwargs)

    def shown(self, widget: Widget) -> bool:
        """Displayed, and every container up to the screen displayed too."""
        return all(node.display for node in widget.ancestors_with_self if isinstance(node, Widget) and node is not self)

    def on_descendant_blur(self) -> None:
        self.call_after_refresh(self.keep_focus_visible)

    def keep_focus_visible(self) -> None:
        """A widget hidden while focused (the prompt when a corpus input is chosen) gives focus back."""
        focused = self.focused
        if focused is None and self.app.screen is self or focused is not None and not self.shown(focused):
            self.focus_first()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area.id == "prompt":
            self.call_after_refresh(self.describe_prompt)

    def on_resize(self) -> None:
        self.call_after_refresh(self.describe_prompt)

    def describe_prompt(self) -> None:
        area = self.query_one("#prompt", TextArea)
        area.border_subtitle = describe_prompt(area.text, area.max_scroll_y)

    def action_clear_prompt(self) -> None:
        area = self.query_one("#prompt", TextArea)
        area.clear()
        area.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_prompt":
            return bool(self.query_one("#prompt", TextArea).display)  # hidden with the prompt
        if action in ("run", "queue"):
            return (action == "queue") == self.job_running  # one ctrl+r, named Run or Queue
        return True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "model":
            return
        event.stop()
        name = event.value.strip()
        if not name:
            self.query_one("#status-line", Static).update(plain("model: ", ("give an embedded model, a Hugging Face name (org/name) or a local folder", "red")))
            return
        self.app.switch_model(name)

    async def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "analysis" and event.value is not Select.NULL:
            await self.show_analysis(str(event.value))
        elif event.select.id == "source":
            self.show_source_fields()

    async def show_analysis(self, name: str) -> None:
        if name == self.shown_analysis:
            return
        self.keep_form()
        self.shown_analysis = name
        module = get_analysis(name)
        spec = module.spec
        self.query_one("#analysis-doc", AnalysisDoc).show(spec.title, spec.description)
        old = self.query_one("#params", ParamForm)
        had_focus = self.focused is not None and old in self.focused.ancestors
        await old.remove()
        await self.query_one("#probe-body", Vertical).mount(ParamForm(module.Params, self.form_values.get(name), id="params"), after="#source-row")
        source = self.query_one("#source", Select)
        source.set_options([(SOURCE_LABELS.get(kind, kind), kind) for kind in spec.input_kinds])
        kept = self.source_kinds.get(name)
        source.value = kept if kept in spec.input_kinds else spec.input_kinds[0]
        self.show_source_fields()
        if had_focus:
            self.focus_first()

    def keep_form(self) -> None:
        """Remember what the shown analysis' form holds, to give it back when the analysis is shown again."""
        if not self.shown_analysis:
            return
        self.form_values[self.shown_analysis] = self.query_one("#params", ParamForm).values()
        self.source_kinds[self.shown_analysis] = str(self.query_one("#source", Select).value)

    def use_prompt(self, text: str) -> None:
        """Put text in the prompt box and pick the typed-prompt input where the analysis takes one."""
        kinds = get_analysis(str(self.query_one("#analysis", Select).value)).spec.input_kinds
        if "prompt" in kinds:
            self.query_one("#source", Select).value = "prompt"
            self.show_source_fields()
        self.query_one("#prompt", TextArea).load_text(text)

    def select_analysis(self, name: str) -> None:
        self.query_one("#analysis", Select).value = name

    def show_source_fields(self) -> None:
        kind = self.query_one("#source", Select).value
        self.query_one("#prompt", TextArea).display = kind == "prompt"
        path = self.query_one("#source-path", Input)
        if kind != self.path_kind:  # the path field follows the input kind: each kind its own path
            if self.path_kind:
                self.source_paths[self.path_kind] = path.value
            path.value = self.source_paths.get(str(kind), "")
            path.placeholder = PATH_KINDS.get(str(kind), "path to the file")
            self.path_kind = str(kind)
        path.display = kind in PATH_KINDS
        self.query_one("#n-docs", Input).display = kind == "pile"
        self.query_one("#max-tokens", Input).display = kind == "pile"
        self.refresh_bindings()
        self.call_after_refresh(self.keep_focus_visible)
        self.call_after_refresh(self.keep_focus_visible)

    def source_choice(self) -> InputChoice:
        n_docs, max_tokens = self.query_one("#n-docs", Input).value, self.query_one("#max-tokens", Input).value
        return InputChoice(
            str(self.query_one("#source", Select).value),
            self.query_one("#prompt", TextArea).text,
            self.query_one("#source-path", Input).value.strip(),
            int(n_docs) if n_docs.strip().lstrip("-").isdigit() else 8,
            int(max_tokens) if max_tokens.strip().lstrip("-").isdigit() else None,
        )

    def action_queue(self) -> None:
        self.action_run()

    def action_run(self) -> None:
        form = self.query_one("#params", ParamForm)
        problem = form.first_problem()
        if problem is not None:
            name, message = problem
            form.show_error(f"Not run: {message}")
            form.go_to(name)
            return
        self.submit(self.app, str(self.query_one("#analysis", Select).value), form.values(), self.source_choice())

    @background("submit")
    def submit(self, app: Any, analysis: str, raw_params: dict, source: InputChoice) -> None:
        """Inputs are built off the UI thread: a corpus file can take a while to sample."""
        try:
            kinds = tuple(get_analysis(analysis).spec.input_kinds)
            inputs = build_inputs(source, kinds)
            Session.prepare(analysis, inputs, raw_params)
        except (BadInput, ValueError) as error:
            app.call_from_thread(self.show_form_error, str(error))
            return
        app.call_from_thread(self.show_form_error, "")
        # A corpus sample goes to the worker as its reference (the choice); the worker samples it again.
        app.call_from_thread(app.submit_job, analysis, source if (source.kind or kinds[0]) == "pile" else inputs, raw_params)

    def show_form_error(self, message: str) -> None:
        """A refused run says why under the form; a parameter the message names gets the focus."""
        form = self.query_one("#params", ParamForm)
        form.show_error(f"Not run: {message}" if message else "")
        name = form.named_parameter(message)
        if name is not None:
            form.go_to(name)

    def show_problem(self, message: str) -> None:
        self.show_form_error(message)
        super().show_problem(message)

    def action_cancel(self) -> None:
        self.app.cancel_job()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run":
            self.action_run()
        elif event.button.id == "cancel":
            self.action_cancel()

    def show_state(self, state: JobState) -> None:
        """Redraw the job widgets from the app's job state (the app owns the state)."""
        bar = self.query_one("#progress", ProgressBar)
        if state.total:
            bar.update(total=state.total, progress=state.done)
        elif state.phase in ("submitted", "started"):
            bar.update(total=None)
        queued = f" · {len(state.waiting)} queued (F8)" if state.waiting else ""
        note = self.query_one("#progress-note", Static)
        note.update(plain(f"{state.phase}: {state.note}{state.pace}{queued}" if state.job_id else "idle"), layout=False)
        if note.size.width and note.get_content_height(note.size, self.app.size, note.size.width) != note.size.height:
            note.refresh(layout=True)  # the note wraps: a layout only when its line count changes
        self.query_one("#run", Button).label = "Queue ^r" if state.running else "Run ^r"  # while a job runs, ctrl+r queues the next
        if self.job_running != bool(state.running):
            self.job_running = bool(state.running)
            self.refresh_bindings()  # the key bar's ctrl+r word follows the button
        self.query_one("#cancel", Button).disabled = not state.running
        layers = f" · {state.n_layers} layers" if state.n_layers else ""
        device = f" · {state.device} · {state.dtype}" if state.device else ""
        problem = model_problem(state)
        if problem:  # the load error in place, one line (the job log keeps it whole)
            self.query_one("#status-line", Static).update(plain("model failed: ", (problem, "red"), f" ({state.model})"), layout=False)
        else:
            self.query_one("#status-line", Static).update(plain("model ", (state.model or self.model_name, "bold"), f"{device}{layers} · {state.model_state}"), layout=False)
        field = self.query_one("#model", Input)
        if state.model and not field.has_focus and state.model != field.value:
            field.value = state.model

    def log_line(self, text: Any) -> None:
        self.query_one("#job-log", RichLog).write(text)
