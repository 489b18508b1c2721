"""The run lifecycle, owned by the store: one writer for a run from its first row to its last shard.

``RunWriter.begin`` writes the runs row (status running, with the inputs) and the run's folder with
its manifest (store/shards.py); ``write_shard`` puts one shard's tables on disk, ``register_partial``
copies what is on disk into DuckDB when the database can be had (partial results), ``write_final``
the tables computed from every shard, ``complete`` marks the folder done and ``register`` copies it
in and marks the run done. ``stop`` keeps what is on disk and marks the run cancelled or failed;
``RunWriter.reopen`` claims a stopped run again to compute its missing shards (resume).

Every caller (the inline runner, a Ray sweep, resume, the worker) goes through this class: nothing
outside store/ writes the store's own tables or a run's folder.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from store.shard_reader import ShardReader
from store.shards import FINAL, RunFolder

if TYPE_CHECKING:
    from store.db import Store


class RunWriter:
    """One run's row and folder. Build it with ``begin`` (a new run) or ``reopen`` (a stopped one)."""

    def __init__(self, store: Store, run_id: int) -> None:
        self.store, self.run_id = store, run_id
        self.folder: RunFolder = store.run_folder(run_id)
        manifest = self.folder.manifest()
        if manifest is None:
            raise ValueError(f"run {run_id} has no manifest in {self.folder.path}")
        self.manifest: dict = manifest

    @classmethod
    def begin(cls, store: Store, *, analysis: str, model: str, params: dict, device: str, dtype: str, provenance: dict,
              inputs: Any, plan: list[list[int]], identity: dict, tables: dict[str, list[list[str]]],
              on_begin: Callable[[int], None] | None = None) -> RunWriter:
        """The runs row (status running) and the run's folder with its manifest.

        ``identity`` is what the manifest records to recognise the run's folder later (folder_id,
        model revision, digests of params and inputs, shard size); ``on_begin(run_id)`` is called as
        soon as the row exists (the worker tells the TUI which run it is computing)."""
        folder_id = identity["folder_id"]
        run_id = store.begin_run(analysis, model, params, device, dtype, provenance, inputs=inputs, n_shards=len(plan), folder_id=folder_id)
        if on_begin is not None:
            on_begin(run_id)
        notice = store.run_folder(run_id).create({
            "run_id": run_id,
            "analysis": analysis,
            "model": model,
            **identity,
            "n_shards": len(plan),
            "shards": plan,
            "tables": tables,
        })
        if notice:
            store.notices.append(notice)
        return cls(store, run_id)

    @classmethod
    def reopen(cls, store: Store, run_id: int) -> RunWriter:
        """Claim a stopped run again (RunBusy when another process has it) to compute what is missing."""
        store.reopen_run(run_id)
        return cls(store, run_id)

    # --- the plan ---

    @property
    def plan(self) -> list[list[int]]:
        shards: list[list[int]] = self.manifest["shards"]
        return shards

    @property
    def n_shards(self) -> int:
        return len(self.plan)

    def has_shard(self, index: int) -> bool:
        return self.folder.has_shard(index)

    def missing_shards(self) -> list[int]:
        return [index for index in range(self.n_shards) if not self.folder.has_shard(index)]

    # --- state and shards ---

    def has_state(self) -> bool:
        return self.folder.has_state()

    def load_state(self) -> Any:
        """The saved run-level state; None (and a notice) when it was damaged and set aside."""
        state = self.folder.load_state()
        if state is None:
            self.store.notices.append(f"run {self.run_id}: its saved run-level state was not plain arrays or was damaged; it was quarantined and is computed again")
        return state

    def save_state(self, state: Any) -> None:
        self.folder.save_state(state)

    def write_shard(self, index: int, tables: dict[str, Any], notes: dict) -> None:
        self.folder.write_shard(index, tables, {"notes": notes})

    def register_partial(self, retry_seconds: float = 0.2) -> bool:
        """Copy the shards on disk into DuckDB when the database can be had: partial results."""
        return self.store.try_register(self.run_id, retry_seconds)

    def has_final(self) -> bool:
        return self.folder.has_shard(FINAL)

    def write_final(self, tables: dict[str, Any], notes: dict) -> None:
        self.folder.write_shard(FINAL, tables, {"notes": notes})

    @property
    def read(self) -> ShardReader:
        """What ``Analysis.finalize`` and invariants read the stored shards through: called, a table
        over them as Arrow; its quantiles, lowest and count_distinct run DuckDB over the shards' files."""
        return ShardReader(self.folder)

    def add_checks(self, checks: list[tuple]) -> None:
        """Rows of the run's fidelity record, registered with the shards."""
        self.folder.add_checks(checks)

    def has_model_checks(self) -> bool:
        """Whether the run's fidelity record already holds the model checks (not only invariants)."""
        return any(not str(row[0]).startswith("invariant_") for row in self.folder.checks())

    def notes(self) -> dict:
        """Every shard's notes, merged in shard order (the final step's last)."""
        merged: dict = {}
        for index in [*range(self.n_shards), FINAL]:
            merged.update(self.folder.shard_meta(index).get("notes") or {})
        return merged

    # --- the end ---

    def complete(self, provenance: dict, placement: dict | None = None) -> None:
        """Every shard and the final tables are on disk: record the provenance, ready to register."""
        self.folder.mark_complete({"provenance": provenance, "finished_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(), **(placement or {})})

    def register(self) -> dict:
        """Copy the run into DuckDB and mark it done (ResultsPending when the database stays locked)."""
        return self.store.register(self.run_id)

    def stop(self, status: str, cause: str) -> None:
        """Keep the shards done so far (registered when the database can be had) and mark the run."""
        try:
            self.store.try_register(self.run_id, 2.0)
            self.store.end_run(self.run_id, status, cause)
        except Exception:
            pass  # the database is locked: the next open marks the run interrupted; its shards stay on disk


def shards_to_compute(store: Store, run_id: int) -> tuple[list[int], int]:
    """A stored run's missing shard indexes and its number of shards (from its folder's manifest,
    which resume has checked), read the way its writer sees them."""
    run = RunWriter(store, run_id)
    return run.missing_shards(), run.n_shards
