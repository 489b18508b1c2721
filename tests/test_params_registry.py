"""The contract: registry lookups, Params parsing from text, errors a user can cause."""
from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest

from analyses.core.charts import Graph
from analyses.core.contract import INPUT_KINDS, Heatmap, Line, Table, param
from analyses.core.errors import BadInput
from analyses.core.params import param_infos, parse_params
from analyses.core.registry import analysis_names, get_analysis


@dataclass(frozen=True)
class DemoParams:
    samples: int = param(10, "noise samples")
    noise: float = param(3.0, "noise multiplier")
    rome: bool = param(False, "ROME-compatible noise")
    target: str | None = param(None, "target token")


def test_every_registered_analysis_honours_the_contract():
    for name in analysis_names():
        module = get_analysis(name)
        spec = module.spec
        assert spec.name == name and spec.title and spec.description
        assert spec.input_kinds and set(spec.input_kinds) <= set(INPUT_KINDS)
        assert callable(module.run)
        table_names = {table.name for table in spec.tables}
        for chart in spec.charts:
            # Typed charts on declared tables; their columns were checked when the SPEC was built
            # (tests/test_charts.py refuses the bad ones).
            assert isinstance(chart, (Heatmap, Line, Table, Graph)) and chart.table in table_names
        for info in param_infos(module.Params):
            assert info.doc, f"{name}.{info.name} has no doc"
        defaults = module.Params()
        with pytest.raises(FrozenInstanceError):
            setattr(defaults, param_infos(module.Params)[0].name, None)


def test_params_parse_from_text_with_types():
    params = parse_params(DemoParams, {"samples": "4", "noise": "2.5", "rome": "yes", "target": " Paris"})
    assert params == DemoParams(4, 2.5, True, " Paris")
    assert parse_params(DemoParams, {"target": "none"}).target is None
    assert parse_params(DemoParams, {}) == DemoParams()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"sample": "3"}, "unknown parameter 'sample'"),
        ({"samples": "three"}, "takes a int"),
        ({"noise": "loud"}, "takes a float"),
        ({"rome": "maybe"}, "takes a bool"),
    ],
)
def test_bad_params_are_bad_input(raw, message):
    with pytest.raises(BadInput, match=message):
        parse_params(DemoParams, raw)


def test_unknown_analysis_names_the_known_ones():
    with pytest.raises(BadInput, match="unknown analysis 'logit-lense'.*logit-lens"):
        get_analysis("logit-lense")


def test_no_input_means_the_analysis_first_input_kind():
    from analyses.inputs.corpus import InputChoice, build_inputs
    from app.run.runner import RunRequest, prepare

    assert build_inputs(InputChoice(), ("weights",)) == ((), 0)
    assert prepare(RunRequest("neuron-classes", ())).inputs == ()
    documents, _ = build_inputs(InputChoice(n_docs=2, max_tokens=16), ("pile", "prompt"))
    assert len(documents) == 2 and all(d.source == "pile" and d.meta["max_tokens"] == 16 for d in documents)
    with pytest.raises(BadInput, match="prompt is empty"):
        build_inputs(InputChoice(), ("prompt", "pile"))
    with pytest.raises(BadInput, match="no inputs"):
        prepare(RunRequest("logit-lens", ()))
