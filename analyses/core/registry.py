"""The registry: analysis names to their modules; listing names imports no analysis (and no torch)."""
from __future__ import annotations

import importlib
import types

from analyses.core.errors import BadInput

REGISTRY: dict[str, str] = {
    "logit-lens": "analyses.logit_lens",
    "layer-interventions": "analyses.layer_interventions",
    "attention-locality": "analyses.attention_locality",
    "component-norms": "analyses.component_norms",
    "neuron-classes": "analyses.neuron_classes",
    "truncation": "analyses.truncation",
    "causal-trace": "analyses.causal_trace",
    "first-layer-heads": "analyses.first_layer_heads",
    "contextual-neurons": "analyses.contextual_neurons",
    "fact-lookup": "analyses.fact_lookup",
}


def analysis_names() -> list[str]:
    return sorted(REGISTRY)


def get_analysis(name: str) -> types.ModuleType:
    """The module of a registered analysis; BadInput naming the known ones otherwise."""
    if name not in REGISTRY:
        known = ", ".join(analysis_names())
        raise BadInput(f"unknown analysis {name!r}; known analyses: {known}")
    return importlib.import_module(REGISTRY[name])
