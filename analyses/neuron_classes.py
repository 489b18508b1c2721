"""Prediction and suppression neurons from the weights alone (no forward pass).

For every MLP neuron: the cosine of its output weight (a row of W_out, a column of the HF
down_proj) with every unit-normalised unembedding direction (a column of W_U, optionally scaled
by the final norm's gain, which every logit passes through), then over the vocabulary the skew
and the raw kurtosis (a Gaussian gives 3). Prediction: kurtosis > threshold and skew > 0;
suppression: kurtosis > threshold and skew < 0. Cosines in float32, moments in float64,
batched over neurons. It takes no input (input kind "weights").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Filter, Input, Line, Order, Progress, Result, ResultTable, Table, check_cancel, param
from analyses.core.errors import BadInput
from analyses.core.params import int_list
from analyses.core.tables import tokens_table_of

CLASSES = ("prediction", "suppression", "none")
# Upper bound on cosines held at once (neurons x vocabulary), and the unit a cancel waits for: 4M is
# 85 of SmolLM2's neurons against its 49k vocabulary, 1.2-1.6 s a chunk on 2 cores at load 14 where
# 16M (341 neurons) took 3.8-7.6 s (benchmarks/cancel_latency.py measured 3.5 s to cancel at load 7).
CHUNK_ELEMENTS = 4 * 1024 * 1024


@dataclass(frozen=True)
class Params:
    kurtosis_threshold: float = param(10.0, "raw kurtosis above which a neuron is prediction or suppression")
    skew_threshold: float = param(0.0, "skew above it: prediction; below minus it: suppression")
    fold_final_norm: bool = param(True, "scale the unembedding by the final norm's gain (what the logits see)")
    layers: str = param("", "comma list of layers to classify; empty = every layer")

    def check(self) -> None:
        if self.skew_threshold < 0:
            raise BadInput(f"skew_threshold must be >= 0, not {self.skew_threshold}")
        layer_list(self.layers, None)


def layer_list(text: str, n_layers: int | None) -> list[int]:
    """The layers named in a comma list (all when empty), sorted; BadInput for a bad or out-of-range one."""
    if not text.strip():
        return list(range(n_layers or 0))
    what = f"the model has {n_layers} layers" if n_layers is not None else ""
    return sorted(set(int_list(text, "layers", below=n_layers, what=what)))


SPEC = AnalysisSpec(
    name="neuron-classes",
    title="Prediction / suppression neurons (weights only)",
    description=(
        "For every MLP neuron, the skew and raw kurtosis over the vocabulary of the cosine "
        "between its output weight and each normalised unembedding direction; neurons with a "
        "heavy tail (kurtosis above the threshold) are prediction (positive skew) or "
        "suppression (negative skew) neurons. Uses the weights only; the input is ignored."
    ),
    input_kinds=("weights",),
    tables=(
        ResultTable(
            "neuron_classes",
            (("layer", "INTEGER"), ("neuron", "INTEGER"), ("skew", "DOUBLE"), ("kurtosis", "DOUBLE"), ("neuron_class", "VARCHAR")),
            "kurtosis is raw (Gaussian = 3); class prediction / suppression / none",
        ),
        ResultTable(
            "neuron_class_counts",
            (("layer", "INTEGER"), ("relative_depth", "DOUBLE"), ("neuron_class", "VARCHAR"), ("n_neurons", "INTEGER"), ("fraction", "DOUBLE")),
            "neurons of each class per layer",
        ),
    ),
    charts=(
        Line("Prediction and suppression neurons per layer", "neuron_class_counts", "n_neurons", x="layer", series="neuron_class", filters=(Filter("neuron_class", "<>", "none"),), per_input=False),
        Table("Most heavy-tailed neurons", "neuron_classes", "kurtosis", per_input=False, order=(Order("kurtosis", descending=True),), limit=10),
    ),
)


def unembedding_directions(weights, fold_final_norm: bool):
    """[d_model, vocab] float32 unit columns of the unembedding (optionally scaled by the final
    norm's gain as applied, e.g. Gemma's 1 + w)."""
    import torch

    w_u = weights.W_U
    if fold_final_norm:
        w_u = w_u * weights.ln_final.weight[:, None]
    return w_u / w_u.norm(dim=0, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def cosine_moments(w_out, directions, chunk_rows: int, cancel: CancelEvent | None = None, on_chunk=None):
    """(skew, raw kurtosis) [n_neurons] float64 of each row's cosines with the unit directions;
    cancel is checked and on_chunk(first row) called before every chunk of rows."""
    import torch

    skews, kurtoses = [], []
    for start in range(0, w_out.shape[0], chunk_rows):
        check_cancel(cancel)
        if on_chunk:
            on_chunk(start)
        rows = w_out[start : start + chunk_rows].float()
        cosines = (rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)) @ directions
        # Centred in float32 about a float64 mean, every power summed in float64.
        centred = cosines - cosines.sum(dim=1, keepdim=True, dtype=torch.float64).div(cosines.shape[1]).float()
        squared = centred * centred
        variance = squared.sum(dim=1, dtype=torch.float64) / cosines.shape[1]
        third = (squared * centred).sum(dim=1, dtype=torch.float64) / cosines.shape[1]
        fourth = (squared * squared).sum(dim=1, dtype=torch.float64) / cosines.shape[1]
        skews.append(third / variance.pow(1.5))
        kurtoses.append(fourth / variance.pow(2))
    return torch.cat(skews), torch.cat(kurtoses)


def classify(skew, kurtosis, params: Params):
    import numpy as np

    heavy = kurtosis > params.kurtosis_threshold
    labels = np.full(skew.shape, "none", dtype=object)
    labels[heavy & (skew > params.skew_threshold)] = "prediction"
    labels[heavy & (skew < -params.skew_threshold)] = "suppression"
    return labels


class NeuronClasses(Analysis):
    Params = Params
    spec = SPEC

    def check(self, model, inputs: list[Input], params: Params) -> None:
        layer_list(params.layers, model.n_layers)

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        import numpy as np
        import pyarrow as pa
        import torch

        n_layers = model.n_layers
        columns = {"layer": [], "neuron": [], "skew": [], "kurtosis": [], "neuron_class": []}
        counts = {"layer": [], "relative_depth": [], "neuron_class": [], "n_neurons": [], "fraction": []}
        from analyses.model.weights import model_weights

        with torch.inference_mode():
            weights = model_weights(model)
            directions = unembedding_directions(weights, params.fold_final_norm)
            chunk_rows = max(1, CHUNK_ELEMENTS // directions.shape[1])
            chosen = layer_list(params.layers, n_layers)
            for index, layer in enumerate(chosen):
                check_cancel(cancel)
                w_out = weights.layers[layer].W_out
                n_rows = w_out.shape[0]

                def chunk(start: int, index: int = index, layer: int = layer, n_rows: int = n_rows) -> None:
                    # Progress in neurons over the chosen layers.
                    progress(index * n_rows + start, len(chosen) * n_rows,
                             f"layer {layer} ({index + 1}/{len(chosen)}): neurons {start + 1}-{min(n_rows, start + chunk_rows)}/{n_rows}")

                skew, kurtosis = (values.cpu().numpy() for values in cosine_moments(w_out, directions, chunk_rows, cancel, chunk))
                labels = classify(skew, kurtosis, params)
                n_neurons = skew.shape[0]
                columns["layer"].append(np.full(n_neurons, layer, dtype=np.int32))
                columns["neuron"].append(np.arange(n_neurons, dtype=np.int32))
                columns["skew"].append(skew)
                columns["kurtosis"].append(kurtosis)
                columns["neuron_class"].append(labels)
                for name in CLASSES:
                    count = int((labels == name).sum())
                    counts["layer"].append(layer)
                    counts["relative_depth"].append(layer / max(1, n_layers - 1))
                    counts["neuron_class"].append(name)
                    counts["n_neurons"].append(count)
                    counts["fraction"].append(count / n_neurons)
        progress(1, 1, "done")
        neurons = pa.table({name: np.concatenate(parts) for name, parts in columns.items()})
        notes = {
            "fold_final_norm": params.fold_final_norm,
            "kurtosis": "raw (Gaussian = 3)",
            "weights_only": "inputs are not used",
            "unembedding": "W_U columns" + (" scaled by the final norm gain" if params.fold_final_norm else "") + ", unit-normalised; no centring",
        }
        return Result(tables={"neuron_classes": neurons, "neuron_class_counts": pa.table(counts)}, tokens=tokens_table_of([]), notes=notes)


ANALYSIS = NeuronClasses()
