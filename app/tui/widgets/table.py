"""The TUI's table: Textual's DataTable, re-rendered once it has measured its columns.

DataTable measures new rows (and updated cells) on its next Idle event, but caches each rendered
row and line under a key that does not hold the column widths. A row rendered between add_rows
and that Idle (on a loaded machine a refresh falls there) kept the header's width after the
columns grew: the SQL console showed "<|endofte" for "<|endoftext|>". This table drops its render
caches whenever a measurement changes a column's width (tests/tui/test_table_widths.py renders in
that window on purpose)."""
from __future__ import annotations

from typing import Any

from textual.widgets import DataTable


class Table(DataTable):
    def _widths(self) -> list[int]:
        return [self._row_label_column_width, *(column.get_render_width(self) for column in self.ordered_columns)]

    def _update_dimensions(self, new_rows: Any) -> None:
        before = self._widths()
        super()._update_dimensions(new_rows)
        self._forget_rows_rendered_at(before)

    def _update_column_widths(self, updated_cells: Any) -> None:
        before = self._widths()
        super()._update_column_widths(updated_cells)
        self._forget_rows_rendered_at(before)

    def _forget_rows_rendered_at(self, widths: list[int]) -> None:
        if self._widths() != widths:
            self._clear_caches()
            self.refresh()
