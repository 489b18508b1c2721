"""DuckDB store: schema and migrations, atomic run writes, read-only queries. No torch, no Textual."""
from store.db import Store, StoreError

__all__ = ["Store", "StoreError"]
