"""fact-lookup's entities as a researcher reads them: each entity with its true attribute (the
sport), the model's prediction among the answers, the probability of the answer set and whether
the prediction is correct; sorted by any column, filtered by text and by correct / incorrect; the
row under the cursor's details (its top token, log p(correct), name tokens) and, where the run
stored them, its own ablation effects (fact_lookup_entity_ablation, the intervention subset).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from app.tui.plain import plain
from app.tui.widgets.table import Table

ENTITY_COLUMNS = ("input_id", "entity", "attribute", "predicted_among_answers", "answer_set_prob", "top1_among_answers_correct",
                  "correct_logprob", "correct_within_set_prob", "top1_token", "top1_prob", "n_name_tokens")
# (label, field) of the columns shown, in order; the sort keys cycle through them.
SHOWN = (("entity", "entity"), ("true", "attribute"), ("predicted", "predicted_among_answers"), ("p(answer set)", "answer_set_prob"),
         ("correct", "top1_among_answers_correct"), ("log p(correct)", "correct_logprob"))
SHOW_WHICH = ("all", "correct", "incorrect")
ABLATION_SHOWN = 6  # the largest drops listed per entity


@dataclass
class Entities:
    """A fact-lookup run's per-entity rows and, by input_id, each entity's stored ablation effects."""

    run_id: int
    rows: list[dict[str, Any]]
    ablation: dict[int, list[tuple[str, int, float, float]]] = field(default_factory=dict)  # (component, layer, logprob_drop, set_mass_drop)
    ablation_stored: bool = False

    @property
    def label(self) -> str:
        return "Entities"


def load_entities(store: Any, run_id: int) -> Entities:
    """The run's fact_lookup_entities rows, and its per-entity ablation effects when it stored them."""
    result = store.query(f"SELECT {', '.join(ENTITY_COLUMNS)} FROM fact_lookup_entities WHERE run_id = ? ORDER BY input_id", [run_id])
    rows = [dict(zip(result.columns, row)) for row in result.rows]
    ablation: dict[int, list[tuple[str, int, float, float]]] = {}
    stored = False
    try:
        effects = store.query("SELECT input_id, component, layer, logprob_drop, set_mass_drop FROM fact_lookup_entity_ablation "
                              "WHERE run_id = ? ORDER BY input_id, logprob_drop DESC", [run_id]).rows
    except Exception:  # a run (or a store) from before per-entity ablation was stored: no such table
        effects = []
    for input_id, component, layer, logprob_drop, set_mass_drop in effects:
        stored = True
        ablation.setdefault(input_id, []).append((component, layer, logprob_drop, set_mass_drop))
    return Entities(run_id, rows, ablation, stored)


def number(value: Any, digits: int = 3) -> str:
    """Significant digits, so that a small model's tiny probabilities still read (3.2e-05, not 0.000)."""
    return "—" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


class EntityView(Vertical):
    """The entity list: a filter line, the table (sortable), the selected entity's details."""

    BINDINGS = [
        Binding("o", "sort_next", "Sort", tooltip="Sort by the next column (entity, true, predicted, p(answer set), correct, log p)"),
        Binding("r", "reverse", "Reverse", tooltip="Reverse the sort"),
        Binding("c", "which", "Correct/incorrect", tooltip="Show all entities, only the correct ones, only the incorrect ones"),
        Binding("slash", "filter", "Filter", tooltip="Filter by text in the entity, its true attribute or the prediction"),
    ]
    DEFAULT_CSS = """
    EntityView { height: 1fr; }
    EntityView #entity-filter { height: 1; }
    EntityView #entity-table { height: 1fr; }
    EntityView #entity-detail { height: auto; max-height: 8; background: $panel; padding: 0 1; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data: Entities | None = None
        self.sort_index = 3  # p(answer set)
        self.descending = True
        self.which = 0
        self.shown_rows: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="/ filter: entity, true attribute or prediction", id="entity-filter", compact=True)
        yield Table(id="entity-table", zebra_stripes=True, cursor_type="row")
        yield Static("", id="entity-detail")

    def show(self, data: Entities) -> None:
        self.data = data
        self.refill()

    def refill(self) -> None:
        """The rows that pass the filters, in the chosen order; the cursor's details."""
        if self.data is None:
            return
        text = self.query_one("#entity-filter", Input).value.strip().lower()
        which = SHOW_WHICH[self.which]
        rows = [row for row in self.data.rows
                if (not text or any(text in str(row.get(name) or "").lower() for name in ("entity", "attribute", "predicted_among_answers")))
                and (which == "all" or bool(row["top1_among_answers_correct"]) == (which == "correct"))]
        key = SHOWN[self.sort_index][1]
        present = [row for row in rows if row.get(key) is not None]
        present.sort(key=lambda row: row[key], reverse=self.descending)
        self.shown_rows = present + [row for row in rows if row.get(key) is None]  # missing values last either way
        table = self.query_one("#entity-table", DataTable)
        table.clear(columns=True)
        arrow = " ↓" if self.descending else " ↑"
        table.add_columns(*[plain(label + (arrow if index == self.sort_index else "")) for index, (label, _) in enumerate(SHOWN)])
        table.add_rows([[plain(row["entity"] or ""), plain(row["attribute"] or ""), plain(row["predicted_among_answers"] or "—"),
                         plain(number(row["answer_set_prob"])), plain("yes" if row["top1_among_answers_correct"] else "no"),
                         plain(number(row["correct_logprob"]))] for row in self.shown_rows])
        self.show_detail()

    def summary(self) -> str:
        assert self.data is not None
        correct = sum(bool(row["top1_among_answers_correct"]) for row in self.shown_rows)
        share = f" ({correct / len(self.shown_rows):.0%})" if self.shown_rows else ""
        text = self.query_one("#entity-filter", Input).value.strip()
        filters = (f" · showing {SHOW_WHICH[self.which]}" if self.which else "") + (f" · filter {text!r}" if text else "")
        return (f"{len(self.shown_rows)} of {len(self.data.rows)} entities · correct {correct}/{len(self.shown_rows)}{share}"
                f" · sorted by {SHOWN[self.sort_index][0]}{filters} · o sort, r reverse, c correct/incorrect, / filter")

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#entity-table", DataTable)
        if not self.shown_rows:
            return None
        return self.shown_rows[min(max(table.cursor_row, 0), len(self.shown_rows) - 1)]

    def show_detail(self) -> None:
        detail = self.query_one("#entity-detail", Static)
        if self.data is None:
            return
        row = self.selected()
        if row is None:
            detail.update(plain(self.summary() + "\nNo entity passes the filters."))
            return
        verdict = ("correct", "green") if row["top1_among_answers_correct"] else ("incorrect", "red")
        lines = [plain(self.summary(), "\n", (row["entity"] or "", "bold"), f" (input {row['input_id']}) · true {row['attribute']} · predicted "
                       f"{row['predicted_among_answers'] or '—'} ", verdict,
                       f" · p(answer set) {number(row['answer_set_prob'])} · p(correct within set) {number(row['correct_within_set_prob'])}"
                       f" · log p(correct) {number(row['correct_logprob'])} · top token {row['top1_token']!r} p {number(row['top1_prob'])}"
                       f" · {row['n_name_tokens']} name tokens")]
        effects = self.data.ablation.get(row["input_id"], [])
        if effects:
            listed = ", ".join(f"{component} L{layer} {number(drop)}" for component, layer, drop, _ in effects[:ABLATION_SHOWN])
            lines.append(plain(f"\nablation, largest drops in log p(correct): {listed}"))
        elif self.data.ablation_stored:
            lines.append(plain("\nablation: this entity is not in the run's intervention subset"))
        else:
            lines.append(plain("\nablation: this run stored no per-entity ablation effects"))
        text = lines[0]
        for more in lines[1:]:
            text.append_text(more)
        detail.update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show_detail()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if event.column_index == self.sort_index:
            self.descending = not self.descending
        else:
            self.sort_index = event.column_index
        self.refill()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.refill()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#entity-table", DataTable).focus()

    def action_sort_next(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SHOWN)
        self.refill()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.refill()

    def action_which(self) -> None:
        self.which = (self.which + 1) % len(SHOW_WHICH)
        self.refill()

    def action_filter(self) -> None:
        self.query_one("#entity-filter", Input).focus()

    def focus_table(self) -> None:
        self.query_one("#entity-table", DataTable).focus()
