"""A run's results on disk before the database sees them: one folder per run, one Parquet file
per result table per shard.

    <db>.runs/run-000042/manifest.json      what the run is (its identity) and how its inputs are split
    <db>.runs/run-000042/state.npz          the run-level state every shard needs (arrays, never pickle)
    <db>.runs/run-000042/shard-000003/      one shard: <table>.parquet (tokens included), meta.json
    <db>.runs/run-000042/shard-final/       tables computed from all shards (summaries)
    <db>.runs/run-000042/complete.json      every shard and the final tables are on disk
    <db>.runs/run-000042/quarantine/        damaged shards or states, moved aside (recomputed on resume)
    <db>.runs/stray/                        run folders that belong to no run of this database

A folder belongs to exactly one run: its manifest's ``folder_id`` is the runs row's, so a folder
left by a deleted database, or by another one at the same path, is never read as a new run's.
A shard folder is written under a temporary name (every file fsynced, meta.json with each
file's size and sha256 last), then renamed into place, so it is either whole or absent; a shard
written twice is stored once. Before registration each shard is checked against its meta.json;
one that does not match is quarantined, never registered. The database registers shard folders
(store.db.Store.register_pending); once a run is done and registered, its folder is removed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FINAL = -1
# A shard cut short by a cancel (generate's steps so far): registered so the stopped run's rows can be
# read, never counted as computed; resume drops it (rows and folder) and computes that shard whole.
PARTIAL = -2
_MANIFEST, _STATE, _COMPLETE, _META = "manifest.json", "state.npz", "complete.json", "meta.json"
_QUARANTINE, _STRAY, _CHECKS = "quarantine", "stray", "checks.json"
_HASH_CHUNK = 1 << 20


def runs_root(db_path: str | Path) -> Path:
    """The folder holding the result shards of runs of this database."""
    path = Path(db_path).expanduser()
    return path.with_name(path.name + ".runs")


def shard_name(index: int) -> str:
    return "shard-final" if index == FINAL else "shard-partial" if index == PARTIAL else f"shard-{index:06d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(value, default=str))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _move_aside(source: Path, folder: Path, name: str) -> Path:
    """Move source into folder under a name that never collides; the new path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.{time.strftime('%Y%m%dT%H%M%S')}.{uuid.uuid4().hex[:8]}"
    os.rename(source, target)
    return target


class RunFolder:
    """The on-disk shards of one run."""

    def __init__(self, db_path: str | Path, run_id: int) -> None:
        self.run_id = run_id
        self.path = runs_root(db_path) / f"run-{run_id:06d}"

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self, manifest: dict) -> str | None:
        """Make the folder of a new run; a folder already at its path belongs to no live run of
        this database (a deleted or replaced one): it is moved to stray/, and the notice returned."""
        notice = None
        if self.path.exists():
            moved = _move_aside(self.path, self.path.parent / _STRAY, self.path.name)
            notice = f"a leftover folder for run {self.run_id} from another database was moved to {moved}; it was not used"
        self.path.mkdir(parents=True)
        _write_json_atomic(self.path / _MANIFEST, manifest)
        return notice

    def manifest(self) -> dict | None:
        try:
            value = json.loads((self.path / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def identity_problem(self, run_id: int, analysis: str, folder_id: str | None) -> str | None:
        """Why this folder is not the folder of that runs row (None when it is)."""
        manifest = self.manifest()
        if manifest is None:
            return "its manifest.json is missing or unreadable"
        if manifest.get("run_id") != run_id or manifest.get("analysis") != analysis:
            return f"its manifest names run {manifest.get('run_id')} of {manifest.get('analysis')!r}"
        if manifest.get("folder_id") != folder_id:
            return "it was written for another run with the same number (another database at this path)"
        if not isinstance(manifest.get("shards"), list) or not isinstance(manifest.get("tables"), dict):
            return "its manifest.json has no shard plan or tables"
        return None

    def move_to_stray(self) -> Path:
        return _move_aside(self.path, self.path.parent / _STRAY, self.path.name)

    def save_state(self, state: Any) -> None:
        """The run-level state as named arrays (npz, no pickle), fsynced, replacing any earlier one."""
        import numpy as np

        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            raise TypeError(f"a run-level state must be a dict of named arrays, not {type(state).__name__}")
        arrays = {key: np.asarray(value) for key, value in state.items()}
        for key, array in arrays.items():
            if array.dtype.hasobject:
                raise TypeError(f"run-level state {key!r} is not a plain array ({array.dtype})")
        tmp = self.path / f".{_STATE}.{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **kwds as allow_pickle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path / _STATE)
        _fsync_dir(self.path)

    def has_state(self) -> bool:
        return (self.path / _STATE).is_file()

    def load_state(self) -> dict | None:
        """The saved state; None (and the file quarantined) when it cannot be read as plain arrays."""
        import numpy as np

        path = self.path / _STATE
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except Exception:
            _move_aside(path, self.path / _QUARANTINE, _STATE)
            return None

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
            suffix = entry.name[6:]
            if entry.name.startswith("shard-") and (suffix in ("final", "partial") or suffix.isdigit()) and (entry / _META).is_file():
                found.append(FINAL if suffix == "final" else PARTIAL if suffix == "partial" else int(suffix))
        return sorted(found)

    def write_shard(self, index: int, tables: dict[str, Any], meta: dict | None = None) -> bool:
        """Write a shard's Arrow tables as Parquet, all or nothing; False when it was already there.
        meta.json, written last, holds each file's size and sha256; everything is fsynced."""
        import pyarrow.parquet as pq

        target = self.shard_path(index)
        if (target / _META).is_file():
            return False
        tmp = self.path / f".{target.name}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            rows, files = {}, {}
            for name, table in tables.items():
                if table is None:
                    continue
                path = tmp / f"{name}.parquet"
                pq.write_table(table, path, compression="zstd")
                _fsync_file(path)
                rows[name] = table.num_rows
                files[f"{name}.parquet"] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
            _write_json_atomic(tmp / _META, {"shard": index, "rows": rows, "files": files, **(meta or {})})
            if target.exists():  # a half-written folder from a crash before the rename cannot exist; a whole one wins
                shutil.rmtree(tmp)
                return False
            os.rename(tmp, target)
            _fsync_dir(self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    def shard_meta(self, index: int) -> Any:
        return json.loads((self.shard_path(index) / _META).read_text())

    def shard_problem(self, index: int) -> str | None:
        """Why a shard on disk cannot be trusted (None when every file matches its meta.json)."""
        folder = self.shard_path(index)
        try:
            meta = self.shard_meta(index)
        except (OSError, ValueError):
            return "its meta.json is unreadable"
        files = meta.get("files") if isinstance(meta, dict) else None
        if not isinstance(files, dict):
            return "its meta.json lists no files"
        present = {entry.name for entry in folder.glob("*.parquet")}
        if present != set(files):
            extra, missing = sorted(present - set(files)), sorted(set(files) - present)
            return "files differ from its meta.json" + (f" (not listed: {', '.join(extra)})" if extra else "") + (f" (missing: {', '.join(missing)})" if missing else "")
        for name, expected in files.items():
            path = folder / name
            if not isinstance(expected, dict) or path.stat().st_size != expected.get("bytes"):
                return f"{name} is {path.stat().st_size} bytes, not the {expected.get('bytes') if isinstance(expected, dict) else '?'} it was written with"
            if file_digest(path) != expected.get("sha256"):
                return f"{name} does not match the sha256 it was written with"
        return None

    def quarantine_shard(self, index: int) -> Path:
        """Move a damaged shard aside (never registered; resume computes it again)."""
        return _move_aside(self.shard_path(index), self.path / _QUARANTINE, shard_name(index))

    def remove_shard(self, index: int) -> None:
        shutil.rmtree(self.shard_path(index), ignore_errors=True)

    def shard_tables(self, index: int) -> dict[str, Path]:
        folder = self.shard_path(index)
        return {entry.stem: entry for entry in sorted(folder.glob("*.parquet"))}

    def read(self, table: str, columns: Iterable[str] | None = None, where: dict | None = None) -> Any:
        """One table over every computed shard (the final and a partial one excluded), as one Arrow table, in
        shard order; ``where`` keeps rows whose column equals a value or is in a list of values."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        filters = None
        if where:
            filters = [(name, "in", list(value)) if isinstance(value, (list, tuple, set)) else (name, "=", value) for name, value in where.items()]
        parts = []
        for index in self.shards_on_disk():
            if index in (FINAL, PARTIAL):
                continue
            path = self.shard_path(index) / f"{table}.parquet"
            if path.is_file():
                parts.append(pq.read_table(path, columns=list(columns) if columns else None, filters=filters))
        if not parts:
            return None
        return pa.concat_tables(parts)

    def add_checks(self, checks: list[tuple]) -> None:
        """Rows of the run's fidelity record (check, value, tolerance, ok, detail), kept on disk
        like a shard until the database registers them (a lock only delays them)."""
        _write_json_atomic(self.path / _CHECKS, self.checks() + [list(check) for check in checks])

    def checks(self) -> list[list]:
        try:
            value = json.loads((self.path / _CHECKS).read_text())
        except (OSError, ValueError):
            return []
        return [row for row in value if isinstance(row, list) and len(row) == 5] if isinstance(value, list) else []

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


def stray_folders(db_path: str | Path) -> list[Path]:
    """Run folders moved aside because they belonged to no run of this database."""
    folder = runs_root(db_path) / _STRAY
    return sorted(entry for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else []


def remove_strays(db_path: str | Path) -> list[Path]:
    removed = stray_folders(db_path)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
