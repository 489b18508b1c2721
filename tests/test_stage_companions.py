from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyses import attention_locality, component_norms, neuron_classes
from analyses.core.contract import Input, no_progress

PILE_SAMPLE = Path(__file__).parent / "data" / "pile_sample.jsonl"
TEXTS = ["The river flows north through a wide valley before it turns east.", "def f(x):\n    return x * 2\n"]


def inputs() -> list[Input]:
    return [Input(index, "prompt", text, {}) for index, text in enumerate(TEXTS)]


def test_pattern_sums_on_a_uniform_causal_pattern():
    import torch

    length = 4
    pattern = torch.tril(torch.ones(length, length)) / torch.arange(1, length + 1)[:, None]
    sums, counts, bos = attention_locality.pattern_sums(pattern[None, None], window=2)
    # Queries 1..3 weigh every key 1/(q+1): offset 0 -> 1/2+1/3+1/4; offset 1 -> same; offset 2 -> 1/3+1/4.
    assert sums.tolist() == pytest.approx([1 / 2 + 1 / 3 + 1 / 4, 1 / 2 + 1 / 3 + 1 / 4, 1 / 3 + 1 / 4])
    assert counts == [3, 3, 2]
    assert bos.item() == pytest.approx(1 / 2 + 1 / 3 + 1 / 4)


def test_attention_locality_matches_a_loop_over_cached_patterns(family_model, cancel):
    import torch

    result = attention_locality.ANALYSIS.run(family_model, inputs(), attention_locality.Params(window=3), no_progress, cancel)
    detail = {(r["layer"], r["key_offset"]): r["mean_weight"] for r in result.tables["attention_locality"].to_pylist()}
    summary = result.tables["attention_locality_summary"].to_pylist()
    totals = {}
    with torch.inference_mode():
        for text in TEXTS:
            _, cache = family_model.bridge.run_with_cache(family_model.to_tokens(text))
            for layer in range(3):
                pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]
                for head in range(pattern.shape[0]):
                    for query in range(1, pattern.shape[1]):
                        for offset in range(4):
                            if query - offset >= 0:
                                entry = totals.setdefault((layer, offset), [0.0, 0])
                                entry[0] += pattern[head, query, query - offset].item()
                                entry[1] += 1
    for key, (total, count) in totals.items():
        assert detail[key] == pytest.approx(total / count, rel=1e-6)
    for row in summary:
        assert 0.0 <= row["prev_fraction"] <= 1.0 and 0.0 <= row["self_fraction"] <= 1.0
        assert row["prev_fraction"] + row["self_fraction"] <= 1.0 + 1e-6


def test_component_norms_match_cached_outputs_without_the_first_position(family_model, cancel):
    import torch

    result = component_norms.ANALYSIS.run(family_model, inputs(), component_norms.Params(), no_progress, cancel)
    rows = result.tables["component_norms"].to_pylist()
    with torch.inference_mode():
        caches = [family_model.bridge.run_with_cache(family_model.to_tokens(text))[1] for text in TEXTS]
    for row in rows:
        layer = row["layer"]
        attn = torch.cat([c[f"blocks.{layer}.hook_attn_out"][0, 1:] for c in caches]).norm(dim=-1)
        mlp = torch.cat([c[f"blocks.{layer}.hook_mlp_out"][0, 1:] for c in caches]).norm(dim=-1)
        assert row["n_tokens"] == attn.shape[0]
        assert row["attn_out_norm"] == pytest.approx(attn.mean().item(), rel=1e-5)
        assert row["mlp_out_norm"] == pytest.approx(mlp.mean().item(), rel=1e-5)
        assert row["attn_to_mlp_ratio"] == pytest.approx(row["attn_out_norm"] / row["mlp_out_norm"])


def test_cosine_moments_match_numpy(tiny_model):
    import numpy as np

    from analyses.model.weights import model_weights

    weights = model_weights(tiny_model)
    directions = neuron_classes.unembedding_directions(weights, fold_final_norm=True)
    w_out = weights.layers[0].W_out[:5]
    skew, kurtosis = neuron_classes.cosine_moments(w_out, directions, chunk_rows=2)
    weights = w_out.double().numpy()
    cosines = (weights / np.linalg.norm(weights, axis=1, keepdims=True)) @ directions.double().numpy()
    centred = cosines - cosines.mean(axis=1, keepdims=True)
    variance = (centred**2).mean(axis=1)
    np.testing.assert_allclose(skew.numpy(), (centred**3).mean(axis=1) / variance**1.5, rtol=1e-4)
    np.testing.assert_allclose(kurtosis.numpy(), (centred**4).mean(axis=1) / variance**2, rtol=1e-4)


def test_planted_prediction_and_suppression_neurons_are_classified():
    import torch

    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(64, 5000, generator=generator)
    planted = torch.randn(64, generator=generator)
    # 1% of the vocabulary points exactly along the planted direction: a heavy right tail.
    directions[:, :50] = planted[:, None]
    directions = directions / directions.norm(dim=0, keepdim=True)
    w_out = torch.stack([planted, -planted, torch.randn(64, generator=generator)])
    skew, kurtosis = neuron_classes.cosine_moments(w_out, directions, chunk_rows=2)
    labels = neuron_classes.classify(skew.numpy(), kurtosis.numpy(), neuron_classes.Params())
    assert list(labels) == ["prediction", "suppression", "none"]
    assert kurtosis[0].item() > 10 and abs(kurtosis[2].item() - 3.0) < 0.5


def test_neuron_classes_run_counts_every_neuron_on_every_family(family_model, cancel):
    from analyses.model.families import unwrap

    hf = unwrap(family_model.bridge.original_model)
    d_mlp = getattr(hf.config, "intermediate_size", None) or getattr(hf.config, "n_inner", None) or 4 * family_model.d_model
    result = neuron_classes.ANALYSIS.run(family_model, [], neuron_classes.Params(kurtosis_threshold=3.0), no_progress, cancel)
    neurons = result.tables["neuron_classes"]
    counts = result.tables["neuron_class_counts"].to_pylist()
    assert neurons.num_rows == 3 * d_mlp
    for layer in range(3):
        assert sum(r["n_neurons"] for r in counts if r["layer"] == layer) == d_mlp


@pytest.mark.integration
@pytest.mark.parametrize("name", ["attention-locality", "component-norms", "neuron-classes"])
def test_companions_store_and_draw_on_the_embedded_model(embedded_model, store, name):
    from analyses.inputs.corpus import sample_documents
    from app import charts
    from app.run.runner import RunRequest, execute, prepare

    docs, _ = sample_documents(str(PILE_SAMPLE), 2, seed=0)
    docs = tuple(Input(i.input_id, i.source, i.text, {**i.meta, "max_tokens": 24}) for i in docs)
    weights_only = name == "neuron-classes"
    raw_params = {"layers": "0,29"} if weights_only else {}
    prepared = prepare(RunRequest(name, () if weights_only else docs, raw_params))
    run_id = execute(store, embedded_model, prepared, no_progress)
    provenance = store.run_row(run_id)["provenance"]
    provenance = json.loads(provenance) if isinstance(provenance, str) else provenance
    assert provenance["weight_processing"] == embedded_model.flags and provenance["model_name"] == embedded_model.name
    for chart in prepared.analysis.spec.charts:
        data = charts.load_chart(store, chart, run_id)
        assert data is not None, chart.title
        values = [v for row in data.matrix for v in row if v is not None] + [v for _, ys in data.series.values() for v in ys] + [v for row in data.rows for v in row]
        assert values, f"{chart.title}: no values"
        text = charts.render_text(data, 80, 20, use_colour=False)
        assert len(text.splitlines()) >= 5 and any(ch not in " \n" for ch in text), chart.title


def test_neuron_classes_layers_param_is_checked(tiny_model):
    from analyses.core.errors import BadInput

    with pytest.raises(BadInput):
        neuron_classes.Params(layers="1,x").check()
    with pytest.raises(BadInput):
        neuron_classes.ANALYSIS.check(tiny_model, [], neuron_classes.Params(layers="3"))
    assert neuron_classes.layer_list("2, 0", 3) == [0, 2]
