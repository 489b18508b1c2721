"""fact-lookup's passes and measures: batched captures over entities, the ablation decomposition,
bootstrap intervals, probe rows, and the whole run in memory (``compute``: prepare, one shard and
finalize of analyses.fact_lookup.sharded, as the runner makes them shard by shard)."""
from __future__ import annotations

from typing import Any

from analyses.core.contract import CancelEvent, Input, Progress, Result
from analyses.fact_lookup import engine
from analyses.model.tokens import pad_id as model_pad_id


def neuron_out_weights(model, layer: int) -> Any:
    """Block layer's MLP output weights [d_mlp, d_model]: row n is what neuron n writes."""
    from analyses.model.weights import model_weights

    return model_weights(model).layers[layer].W_out.cpu()


def head_out_weights(model, layer: int, n_heads: int) -> Any:
    """Block layer's attention output weights per head [n_heads, d_head, d_model]."""
    from analyses.model.weights import model_weights

    return model_weights(model).layers[layer].W_O.cpu()


def batch_count(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


ALWAYS_TESTED = 4  # layers 0..3 are ablated and hidden whatever the stride


def strided_layers(end: int, stride: int) -> list[int]:
    """Layers 0..end-1 every stride-th, always with the first ALWAYS_TESTED layers."""
    return sorted(set(range(0, end, stride)) | set(range(min(ALWAYS_TESTED, end))))


def decompose(clean: Any, ablated: Any, labels: Any) -> tuple[Any, Any, Any]:
    """Per entity, from answer-token log-probabilities [N, A] (over the whole vocabulary): the drop
    in log p(correct), in log of the answer-set mass and in log p(correct) renormalised within the
    set. log p = log mass + log p_within, so the first is the sum of the other two."""
    import torch

    rows = torch.arange(len(labels))
    mass_clean, mass_ablated = clean.logsumexp(-1), ablated.logsumexp(-1)
    total = clean[rows, labels] - ablated[rows, labels]
    leaves = mass_clean - mass_ablated
    within = (clean[rows, labels] - mass_clean) - (ablated[rows, labels] - mass_ablated)
    return total.numpy(), leaves.numpy(), within.numpy()


def bootstrap_means(values: Any, n_bootstrap: int, seed: int) -> tuple[Any, Any]:
    """95% percentile intervals of the column means of values [N, m], entities resampled with replacement (paired)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if n_bootstrap < 1 or not len(values) or not values.shape[1]:
        nan = np.full(values.shape[1], np.nan)
        return nan, nan
    rows = np.random.default_rng(seed).integers(0, len(values), (n_bootstrap, len(values)))
    # Columns in chunks, so that [B, N, chunk] stays near 8M floats (every head of a model at once would not).
    chunk = max(1, 8_000_000 // (n_bootstrap * len(values)))
    means = np.concatenate([values[:, start : start + chunk][rows].mean(1) for start in range(0, values.shape[1], chunk)], axis=1)  # [B, m]
    return np.quantile(means, 0.025, axis=0), np.quantile(means, 0.975, axis=0)


def probe_measures(scored: Any) -> list[tuple[str, float, float, float, float]]:
    """(measure, accuracy, ci_low, ci_high, p_value) rows of one probe score."""
    nan = float("nan")
    low, high = scored.null_interval()
    return [("probe", scored.accuracy, scored.ci_low, scored.ci_high, scored.p_value), ("control", scored.control, low, high, nan),
            ("null_q95", scored.null_q95, nan, nan, nan), ("majority", scored.majority, nan, nan, nan)]


class Ticker:
    """Progress counted in forward batches, with the current stage as the note."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done, self.note = progress, total, 0, ""

    def __call__(self) -> None:
        self.done += 1
        self.progress(min(self.done, self.total), self.total, self.note)


def capture(model, encoded, rows, sites: tuple[str, ...], batch_size: int, answer_ids, cancel, tick, top1: list | None = None) -> tuple[dict, Any]:
    """One pass over rows capturing the named sites; returns the targets and the answer log-probs
    (and fills top1 with the vocabulary top-1 per batch, as engine.run_batches does)."""
    import torch

    cfg = model.bridge.cfg
    n, n_layers, d = len(encoded.ids), model.n_layers, model.d_model
    shapes = {
        "resid_post": (n_layers, n, d), "attn_out": (n_layers, n, d), "mlp_out": (n_layers, n, d),
        "neurons": (n_layers, n, neuron_out_weights(model, 0).shape[0]),
        "concat": (n_layers, n, cfg.n_heads), "final_attn": (n_layers, n, cfg.n_heads),
        "z": (n_layers, n, cfg.n_heads, cfg.d_head), "final_resid": (n, d),
    }
    targets = {site: torch.zeros(shapes[site]) for site in sites}
    pad_id = model_pad_id(model)  # the model layer's one pad policy
    batches = engine.make_batches(encoded, rows, batch_size, pad_id, model.device)
    logprobs = engine.run_batches(model, batches, engine.hooks_for(engine.capture_spec(targets, n_layers)), answer_ids, cancel, tick, top1=top1)
    return targets, logprobs


def compute(model, inputs: list[Input], params, progress: Progress, cancel: CancelEvent, state: dict | None = None) -> Result:
    """The whole run in memory as one shard (tests, notebooks): the run-level state (unless given),
    every entity's states and the tables over them, as the runner makes them shard by shard
    (analyses.fact_lookup.sharded)."""
    from analyses.core.sharding import table_reader
    from analyses.fact_lookup import sharded

    items = list(inputs)
    state = state if state is not None else sharded.prepare(model, items, params, progress, cancel)
    shard = sharded.compute_shard(model, items, params, state, progress, cancel)
    final = sharded.finalize(params, state, table_reader({**shard.tables, "tokens": shard.tokens}), progress, cancel)
    return Result(tables={**shard.tables, **final.tables}, tokens=shard.tokens, notes={**shard.notes, **final.notes})
