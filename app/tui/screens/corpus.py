"""The corpus browser: page through a corpus' documents, read one, send it (or a span) to the probe."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Header, Input, Select, Static, TextArea

from analyses.core.errors import BadInput
from app.tui.plain import plain
from app.tui.screens.base import WorkbenchScreen, background
from app.tui.widgets.key_bar import KeyBar
from app.tui.widgets.table import Table

COLUMNS = ("doc", "set", "chars", "start of the text")
PAGE_SIZE = 100
SET_SCAN = 20_000  # records read for the set names (a whole Pile shard would take minutes)


class CorpusScreen(WorkbenchScreen):
    BINDINGS = [
        Binding("ctrl+o", "send_to_probe", "To probe", tooltip="Use the document (or the selected span) as the probe's prompt"),
        Binding("ctrl+n", "page(1)", "Next page", tooltip="The next page of documents"),
        Binding("ctrl+b", "page(-1)", "Prev page", tooltip="The previous page of documents"),
        Binding("ctrl+f,slash", "focus_source", "Source", tooltip="Choose the corpus file and set"),
    ]

    def __init__(self) -> None:
        super().__init__(name="corpus")
        self.page_start = 0
        self.has_more = False
        self.shown_source: tuple[str | None, str | None] | None = None
        self.sets_of: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="corpus-body"):
            with Horizontal(id="corpus-source-row"):
                yield Input(placeholder="corpus file or HF name (empty: shipped sample)", id="corpus-source", compact=True)
                # The source's set names (pile_set_name), read from it, as choices; blank = every set.
                yield Select([], id="corpus-set", prompt="all sets", compact=True)
            yield Table(id="documents", cursor_type="row", zebra_stripes=True)
            yield Static("", id="corpus-info")
            yield TextArea("", id="document", read_only=True, soft_wrap=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#documents", DataTable).add_columns(*COLUMNS)
        self.load_page()
        self.scan_sets(self.app, None)

    def source(self) -> tuple[str | None, str | None]:
        path = self.query_one("#corpus-source", Input).value.strip() or None
        chosen = self.query_one("#corpus-set", Select).value
        return path, (None if chosen is Select.NULL else str(chosen))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.page_start = 0
        self.sets_of = None
        self.query_one("#corpus-set", Select).set_options([])  # a new source: its own sets
        self.load_page()
        self.scan_sets(self.app, self.source()[0])
        self.query_one("#documents", DataTable).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "corpus-set" and self.source() != self.shown_source:
            self.page_start = 0
            self.load_page()

    @background("corpus-sets")
    def scan_sets(self, app: Any, path: str | None) -> None:
        """The source's set names and how many documents each has (over its first SET_SCAN records)."""
        from analyses.inputs.corpus import set_names

        try:
            counts = set_names(path, scan_limit=SET_SCAN)
        except BadInput:
            return  # the page read says what is wrong with the source
        app.call_from_thread(self.show_sets, path, counts)

    def show_sets(self, path: str | None, counts: dict) -> None:
        if path != self.source()[0]:
            return  # the source changed while its sets were read
        self.sets_of = path
        named = sorted(((name, count) for name, count in counts.items() if name is not None), key=lambda item: (-item[1], item[0]))
        select = self.query_one("#corpus-set", Select)
        select.set_options([(plain(f"{name} ({count})"), name) for name, count in named])
        select.disabled = not named

    def action_focus_source(self) -> None:
        self.query_one("#corpus-source", Input).focus()

    def action_page(self, direction: int) -> None:
        if direction > 0 and not self.has_more or direction < 0 and self.page_start == 0:
            return
        self.page_start = max(0, self.page_start + direction * PAGE_SIZE)
        self.load_page()

    def load_page(self) -> None:
        path, set_name = self.source()
        self.shown_source = (path, set_name)
        self.query_one("#corpus-info", Static).update("reading the corpus ...")
        self.fetch_page(self.app, path, set_name, self.page_start)

    @background("corpus")
    def fetch_page(self, app: Any, path: str | None, set_name: str | None, offset: int) -> None:
        """Corpora are streamed from the start, so a page is read off the UI thread."""
        from analyses.inputs.corpus import list_documents

        try:
            page = list_documents(path, offset, PAGE_SIZE, set_name)
        except BadInput as error:
            app.call_from_thread(self.show_error, str(error))
            return
        app.call_from_thread(self.show_page, page)

    def show_error(self, message: str) -> None:
        self.query_one("#documents", DataTable).clear()
        self.query_one("#corpus-info", Static).update(plain(message, style="red"))

    def show_problem(self, message: str) -> None:
        self.query_one("#corpus-info", Static).update(plain(message, style="red"))
        super().show_problem(message)

    def show_page(self, page: Any) -> None:
        self.has_more = page.has_more
        table = self.query_one("#documents", DataTable)
        table.clear()
        for entry in page.entries:
            table.add_row(*[plain(cell) for cell in (entry.index, entry.set_name or "", entry.n_chars, entry.preview)], key=str(entry.index))
        first, last = page.offset + 1, page.offset + len(page.entries)
        more = " · ctrl+n next page" if page.has_more else ""
        skipped = f" · {page.malformed} malformed records skipped" if page.malformed else ""
        self.query_one("#corpus-info", Static).update(f"documents {first}-{last}{more}{skipped} · enter reads one, ctrl+o sends it to the probe")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        path, _ = self.source()
        self.fetch_document(self.app, path, int(event.row_key.value))

    @background("corpus-document")
    def fetch_document(self, app: Any, path: str | None, index: int) -> None:
        from analyses.inputs.corpus import read_document

        try:
            document = read_document(path, index)
        except BadInput as error:
            app.call_from_thread(self.show_error, str(error))
            return
        app.call_from_thread(self.show_document, document.text)

    def show_document(self, text: str) -> None:
        area = self.query_one("#document", TextArea)
        area.load_text(text)
        area.focus()

    def action_send_to_probe(self) -> None:
        area = self.query_one("#document", TextArea)
        text = area.selected_text or area.text
        if not text.strip():
            self.notify("Open a document first (enter on a row).", severity="warning")
            return
        self.app.use_prompt(text)
