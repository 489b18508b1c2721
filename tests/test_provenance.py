"""A run's provenance records the real installed version of every library its numbers depend on
(the audit found transformer_lens: "unknown")."""
from __future__ import annotations

import importlib.metadata
import json

from analyses.core.contract import no_progress
from analyses.model.fidelity import LIBRARIES


def test_a_stored_run_records_every_library_at_its_installed_version(tiny_model, store):
    from analyses.inputs.corpus import prompt_inputs
    from app.run.runner import RunRequest, execute, prepare

    run_id = execute(store, tiny_model, prepare(RunRequest("logit-lens", tuple(prompt_inputs("The capital of France is")), {})), no_progress)
    provenance = json.loads(store.run_row(run_id)["provenance"])
    assert provenance["transformer_lens"] == importlib.metadata.version("transformer-lens")
    assert provenance["transformers"] == importlib.metadata.version("transformers")
    assert set(provenance["libraries"]) == set(LIBRARIES)
    for name, version in provenance["libraries"].items():
        assert version == importlib.metadata.version(name), name
    assert "unknown" not in json.dumps(provenance) and "not installed" not in json.dumps(provenance)
