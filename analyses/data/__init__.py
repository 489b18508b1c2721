"""Data shipped with the analyses (prompt sets)."""
