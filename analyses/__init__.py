"""The engine: analyses as pure functions over a loaded model (no Textual, no DuckDB)."""
