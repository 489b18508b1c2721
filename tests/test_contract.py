"""The one analysis contract (analyses/core/contract.py), the shared parameter policies
(analyses/core/params.py) and the one Arrow builder (analyses/core/tables.py), without a model."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from analyses.core.contract import Analysis, AnalysisSpec, Input, Line, Result, ResultTable, columns, param
from analyses.core.errors import BadInput
from analyses.core.params import check_params, int_list, name_list, parse_params
from analyses.core.tables import arrow_table
from analyses.model.tokens import bos_param

TABLE = ResultTable("toy_counts", columns("input_id:INTEGER", "n:BIGINT", "share:DOUBLE", "word:VARCHAR"))
TOTAL = ResultTable("toy_total", columns("n:BIGINT"))


@dataclass(frozen=True)
class ToyParams:
    scale: int = param(1, "multiplier")
    prepend_bos: str = bos_param()


class WordCounts(Analysis):
    """Words per input (one shard per input) and, in finalize, their total read back from the shards;
    the run-level state is the number of words over every input."""

    Params = ToyParams
    spec = AnalysisSpec("toy-counts", "Toy", "counts words", ("prompt",), (TABLE, TOTAL),
                        (Line("words", "toy_counts", "n", x="input_id", per_input=False),))
    sharded = True

    def prepare(self, model, inputs, params, progress, cancel):
        return {"all_words": sum(len(item.text.split()) for item in inputs)}

    def compute(self, model, inputs, params, state, progress, cancel) -> Result:
        rows: dict[str, list] = {"input_id": [], "n": [], "share": [], "word": []}
        for item in inputs:
            words = item.text.split()
            rows["input_id"].append(item.input_id)
            rows["n"].append(len(words) * params.scale)
            rows["share"].append(len(words) / state["all_words"])
            rows["word"].append(words[0])
        return Result({"toy_counts": arrow_table(TABLE, rows)}, None, {"shard_inputs": len(inputs)})

    def finalize(self, params, state, read, progress, cancel) -> Result:
        total = sum(read("toy_counts", ["n"]).column("n").to_pylist())
        return Result({"toy_total": arrow_table(TOTAL, {"n": [total]})}, None, {"total": total})


INPUTS = [Input(i, "prompt", text) for i, text in enumerate(["a b c", "d e", "f", "g h i j"])]


def test_run_in_memory_is_prepare_compute_finalize():
    result = WordCounts().run(None, INPUTS, ToyParams(scale=2))
    assert result.tables["toy_counts"].column("n").to_pylist() == [6, 4, 2, 8]
    assert math.isclose(sum(result.tables["toy_counts"].column("share").to_pylist()), 1.0)
    assert result.tables["toy_total"].column("n").to_pylist() == [20]
    assert result.notes == {"shard_inputs": 4, "total": 20}


def test_shards_follow_the_capability_flag():
    analysis = WordCounts()
    assert analysis.shards(INPUTS, 3) == [[0, 1, 2], [3]]

    class Whole(WordCounts):
        sharded = False

    assert Whole().shards(INPUTS, 3) == [[0, 1, 2, 3]]
    assert analysis.shards([], 3) == [[]]


def test_the_defaults_of_the_contract():
    class Minimal(Analysis):
        Params = ToyParams
        spec = AnalysisSpec("toy-min", "Toy", "nothing", ("prompt",), (TABLE,), ())

    minimal = Minimal()
    assert minimal.name == "toy-min" and not minimal.sharded
    assert minimal.prepare(None, INPUTS, ToyParams(), None, None) is None
    assert minimal.check(None, INPUTS, ToyParams()) is None
    assert minimal.invariants(ToyParams(), None, {}) == []
    assert minimal.finalize(ToyParams(), None, None, None, None).tables == {}
    with pytest.raises(NotImplementedError, match="Minimal.compute"):
        minimal.compute(None, INPUTS, ToyParams(), None, None, None)


def test_a_subclass_without_params_or_spec_is_refused_when_defined():
    with pytest.raises(TypeError, match="has no Params, spec"):
        class Empty(Analysis):
            pass
    with pytest.raises(TypeError, match="spec must be an AnalysisSpec"):
        class Wrong(Analysis):
            Params = ToyParams
            spec = "toy"  # type: ignore[assignment]


def test_the_registry_takes_only_analysis_classes(monkeypatch):
    from analyses.core import registry

    monkeypatch.setitem(registry.REGISTRY, "toy-counts", "tests.test_contract:WordCounts")
    loaded = registry.get_analysis("toy-counts")  # the class of the module tests.test_contract (pytest may hold a second copy)
    assert isinstance(loaded, Analysis) and type(loaded).__qualname__ == "WordCounts" and loaded.spec.name == "toy-counts"
    assert registry.get_analysis("toy-counts") is registry.get_analysis("toy-counts")  # one instance serves every run
    monkeypatch.setitem(registry.REGISTRY, "toy-module", "tests.test_contract")
    with pytest.raises(BadInput, match="tests.test_contract is not a subclass of analyses.core.contract.Analysis"):
        registry.get_analysis("toy-module")
    monkeypatch.setitem(registry.REGISTRY, "toy-other", "tests.test_contract:WordCounts")
    with pytest.raises(BadInput, match="has spec.name 'toy-counts'; it must be the entry point's name 'toy-other'"):
        registry.get_analysis("toy-other")


def test_every_builtin_is_a_class_on_the_contract():
    from analyses.core.registry import BUILTIN, get_analysis

    for name, value in BUILTIN.items():
        analysis = get_analysis(name)
        assert isinstance(analysis, Analysis) and analysis.spec.name == name
        module, _, cls = value.partition(":")
        assert (type(analysis).__module__, type(analysis).__qualname__) == (module, cls)


def test_name_list_keeps_order_counts_a_repeat_once_and_names_the_choices():
    assert name_list("mlp, resid,mlp", "kinds", ("resid", "mlp", "attn")) == ("mlp", "resid")
    for bad in ("", " , ", "resid,mlps"):
        with pytest.raises(BadInput, match="parameter 'kinds' takes a comma-separated subset of resid, mlp, attn"):
            name_list(bad, "kinds", ("resid", "mlp", "attn"))


def test_int_list_bounds_and_messages():
    assert int_list("3, 1,2", "heads") == (3, 1, 2)
    assert int_list("", "layers", empty_ok=True) == ()
    with pytest.raises(BadInput, match="heads takes comma-separated integers, not 'a,1'"):
        int_list("a,1", "heads")
    with pytest.raises(BadInput, match="needs at least one non-negative integer"):
        int_list("", "heads")
    with pytest.raises(BadInput, match="needs at least one non-negative integer"):
        int_list("1,-2", "heads")
    with pytest.raises(BadInput, match=r"layers must be below 4 \(the model has 4 layers\), not 4"):
        int_list("0,4", "layers", below=4, what="the model has 4 layers")


def test_choices_are_checked_however_params_are_built():
    with pytest.raises(BadInput, match="parameter 'prepend_bos' takes one of auto, true, false, not 'maybe'"):
        parse_params(ToyParams, {"prepend_bos": "maybe"})
    with pytest.raises(BadInput, match="parameter 'prepend_bos' takes one of auto, true, false, not 'maybe'"):
        check_params(ToyParams(prepend_bos="maybe"))  # built in code or read back from a stored run
    check_params(ToyParams(prepend_bos="TRUE"))


def test_arrow_table_types_and_orders_columns_as_declared():
    import numpy as np
    import pyarrow as pa

    built = arrow_table(TABLE, {"word": ["x", "y"], "share": np.array([0.5, np.nan]), "n": np.array([1, 2]), "input_id": [0, 1]})
    assert built.schema == pa.schema([("input_id", pa.int32()), ("n", pa.int64()), ("share", pa.float64()), ("word", pa.string())])
    assert math.isnan(built.column("share").to_pylist()[1])
    assert arrow_table(TABLE, {"word": ["x"], "share": [float("nan")], "n": [1], "input_id": [0]}, nan_is_null=True).column("share").null_count == 1
    with pytest.raises(ValueError, match=r"toy_counts: columns missing \['word'\], undeclared \['other'\]"):
        arrow_table(TABLE, {"input_id": [0], "n": [1], "share": [0.1], "other": ["x"]})
