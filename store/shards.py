"""A run's results on disk before the database sees them: one folder per run, one Parquet file
per result table per shard.

    <db>.runs/run-000042/manifest.json      what the run is and how its inputs are split
    <db>.runs/run-000042/state.pkl          the run-level state every shard needs (e.g. a mean)
    <db>.runs/run-000042/shard-000003/      one shard: <table>.parquet (tokens included), meta.json
    <db>.runs/run-000042/shard-final/       tables computed from all shards (summaries)
    <db>.runs/run-000042/complete.json      every shard and the final tables are on disk

A shard folder is written under a temporary name and renamed into place, so it is either whole
or absent, and a shard written twice is stored once (the second is dropped). The database
registers shard folders (store.db.Store.register_pending); once a run is done and registered,
its folder is removed.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FINAL = -1
_MANIFEST, _STATE, _COMPLETE, _META = "manifest.json", "state.pkl", "complete.json", "meta.json"


def runs_root(db_path: str | Path) -> Path:
    """The folder holding the result shards of runs of this database."""
    path = Path(db_path).expanduser()
    return path.with_name(path.name + ".runs")


def shard_name(index: int) -> str:
    return "shard-final" if index == FINAL else f"shard-{index:06d}"


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(value, default=str))
    os.replace(tmp, path)


class RunFolder:
    """The on-disk shards of one run."""

    def __init__(self, db_path: str | Path, run_id: int) -> None:
        self.run_id = run_id
        self.path = runs_root(db_path) / f"run-{run_id:06d}"

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.path / _MANIFEST, manifest)

    def manifest(self) -> dict | None:
        try:
            return json.loads((self.path / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def save_state(self, state: Any) -> None:
        tmp = self.path / f".{_STATE}.{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path / _STATE)

    def has_state(self) -> bool:
        return (self.path / _STATE).is_file()

    def load_state(self) -> Any:
        with open(self.path / _STATE, "rb") as handle:
            return pickle.load(handle)  # noqa: S301 - our own file, written by save_state

    def shard_path(self, index: int) -> Path:
        return self.path / shard_name(index)

    def has_shard(self, index: int) -> bool:
        return (self.shard_path(index) / _META).is_file()

    def shards_on_disk(self) -> list[int]:
        """Indices of whole shards in this folder (FINAL included), in order."""
        if not self.exists():
            return []
        found = []
        for entry in self.path.iterdir():
            if entry.name.startswith("shard-") and (entry / _META).is_file():
                found.append(FINAL if entry.name == "shard-final" else int(entry.name[6:]))
        return sorted(found)

    def write_shard(self, index: int, tables: dict[str, Any], meta: dict | None = None) -> bool:
        """Write a shard's Arrow tables as Parquet, all or nothing; False when it was already there."""
        import pyarrow.parquet as pq

        target = self.shard_path(index)
        if (target / _META).is_file():
            return False
        tmp = self.path / f".{target.name}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            rows = {}
            for name, table in tables.items():
                if table is None:
                    continue
                pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
                rows[name] = table.num_rows
            _write_json_atomic(tmp / _META, {"shard": index, "rows": rows, **(meta or {})})
            if target.exists():  # a half-written folder from a crash before the rename cannot exist; a whole one wins
                shutil.rmtree(tmp)
                return False
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    def shard_meta(self, index: int) -> dict:
        return json.loads((self.shard_path(index) / _META).read_text())

    def shard_tables(self, index: int) -> dict[str, Path]:
        folder = self.shard_path(index)
        return {entry.stem: entry for entry in sorted(folder.glob("*.parquet"))}

    def read(self, table: str, columns: Iterable[str] | None = None, where: dict | None = None) -> Any:
        """One table over every computed shard (the final one excluded), as one Arrow table, in
        shard order; ``where`` keeps rows whose column equals a value or is in a list of values."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        filters = None
        if where:
            filters = [(name, "in", list(value)) if isinstance(value, (list, tuple, set)) else (name, "=", value) for name, value in where.items()]
        parts = []
        for index in self.shards_on_disk():
            if index == FINAL:
                continue
            path = self.shard_path(index) / f"{table}.parquet"
            if path.is_file():
                parts.append(pq.read_table(path, columns=list(columns) if columns else None, filters=filters))
        if not parts:
            return None
        return pa.concat_tables(parts)

    def mark_complete(self, info: dict) -> None:
        _write_json_atomic(self.path / _COMPLETE, info)

    def complete(self) -> dict | None:
        try:
            return json.loads((self.path / _COMPLETE).read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def run_folders(db_path: str | Path) -> list[RunFolder]:
    root = runs_root(db_path)
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.startswith("run-") and entry.name[4:].isdigit():
            out.append(RunFolder(db_path, int(entry.name[4:])))
    return out
