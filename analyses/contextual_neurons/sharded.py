"""contextual-neurons sharded: the heads' model fitted once per run (``prepare``), each shard's sums
(``compute_shard``) and the tables over every shard (``finalize``).

- ``prepare`` (run level, with the model): one tokenizing pass over every input (lengths, and the
  token counts when min_count asks for them); then, on the fit_docs longest documents (in input
  order; they reach every position any document reaches, so the measured pattern covers them all),
  the first-layer-heads anatomy (positional pattern, classes, median normalisers, ln1 scale), the
  layer-0 pass for the ln2 (and post-attention) scales and the content mean, the head models and
  the neurons' directions. On those documents it also measures per neuron the means of the real,
  direct and contextual inputs (the shift of the shards' sums) and the edges of curve_bins
  equal-count bins of the predicted input. The token lists depend on nothing else (their
  eligibility on the counts over every input): they are computed here too. Everything is plain
  arrays (saved as the run's state.npz).
- ``compute_shard``: the layer-0 pass over the shard's documents and, per neuron over its tokens,
  the count, sums, sums of squares and cross-products of the shifted real, direct and contextual
  inputs; per neuron and curve bin the count and the sums of predicted and real; per used head the
  sums of its content over the tokens. Sums are accumulated document by document in double-double
  (a float64 pair): merged in shard order they round to the same float64 as the one-shard sums but
  where a sum lies within about n * 2^-104 of its own size from a rounding boundary.
- ``finalize`` (no model): the sums of every shard in shard order, then the fit statistics, ranks,
  curves of the best-explained neurons, the heads table and the token lists.
"""
from __future__ import annotations

from typing import Any

from analyses.core.contract import CancelEvent, Input, Progress, Result, ResultTable, check_cancel

MOMENTS = ("real", "direct", "ctx", "real_real", "direct_direct", "ctx_ctx", "real_direct", "real_ctx", "direct_ctx")
SHARD_TABLES = (
    ResultTable("contextual_neurons_sums", (("first_input", "BIGINT"), ("neuron", "INTEGER"), ("n", "BIGINT"),
                                            *((f"{name}_{part}", "DOUBLE") for name in MOMENTS for part in ("hi", "lo"))),
                "per shard (named by its first input_id), per neuron over the shard's tokens: sums of the real, direct and contextual "
                "inputs less their fitted means (state), of their squares and cross-products, each a double-double (hi + lo)"),
    ResultTable("contextual_neurons_bins", (("first_input", "BIGINT"), ("neuron", "INTEGER"), ("bin", "INTEGER"), ("n", "BIGINT"),
                                            ("predicted_hi", "DOUBLE"), ("predicted_lo", "DOUBLE"), ("real_hi", "DOUBLE"), ("real_lo", "DOUBLE")),
                "per shard, neuron and curve bin (edges fitted in prepare): tokens, and sums of their predicted and real inputs"),
    ResultTable("contextual_neurons_content", (("first_input", "BIGINT"), ("head", "INTEGER"), ("n", "BIGINT"),
                                               ("sum_hi", "DOUBLE"), ("sum_lo", "DOUBLE"), ("sq_hi", "DOUBLE"), ("sq_lo", "DOUBLE")),
                "per shard and used head: sums of the content weight (less its fitted mean) and of its square over the shard's tokens"),
)


class DoubleDouble:
    """A float64 array summed as hi + lo (Knuth's two-sum): rounding errors of order n * 2^-104."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        import numpy as np

        self.hi, self.lo = np.zeros(shape), np.zeros(shape)

    def add(self, value: Any, low: Any = 0.0) -> None:
        total = self.hi + value
        back = total - self.hi
        self.lo = self.lo + ((self.hi - (total - back)) + (value - back)) + low
        self.hi = total

    def value(self) -> Any:
        return self.hi + self.lo


def _table(name: str, columns: dict[str, Any]) -> Any:
    from analyses.contextual_neurons import SPEC
    from analyses.core.tables import arrow_table

    return arrow_table(SPEC.table(name), columns)


def _sample(lengths: list[int], fit_docs: int) -> list[int]:
    """Indices of the fit_docs longest documents (earlier first among equals), in input order."""
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    return sorted(order[:fit_docs] if fit_docs else order)


def neuron_inputs(weights, directions, models, pattern, doc, first_pos: int) -> tuple[Any, Any, Any]:
    """Real, direct and contextual inputs [T - first_pos, N] of every neuron on one document."""
    import torch

    from analyses.contextual_neurons import engine
    from analyses.model.weights import apply_norm

    layer = weights.layers[0]
    reading = layer.W_gate if layer.W_gate is not None else layer.W_in
    reading_bias = layer.b_in if layer.W_gate is None and layer.b_in is not None else 0
    residual = doc.resid_pre if weights.parallel or layer.b_O is None else doc.resid_pre + layer.b_O
    direct = residual @ directions.direct + directions.constant
    ctx = engine.contextual_term(models, pattern, doc.ids, directions.attention) if models else torch.zeros_like(direct)
    real = (apply_norm(layer.ln2, doc.mlp_input) @ reading + reading_bias)[first_pos:]
    return real, direct[first_pos:], ctx[first_pos:]


def prepare(model, inputs: list[Input], params, progress: Progress, cancel: CancelEvent) -> dict:
    """The run-level state: see the module's docstring."""
    import numpy as np
    import torch

    from analyses import first_layer_heads
    from analyses.contextual_neurons import engine
    from analyses.contextual_neurons.compute import token_contributions
    from analyses.core.params import int_list
    from analyses.model.weights import model_weights, norm_scale

    heads_params = params.heads_params()
    weights = model_weights(model)
    layer = weights.layers[0]
    n_vocab = weights.W_E.shape[0]
    first_pos = 1 if model.bos(params.prepend_bos).prepend else 0
    lengths, counts = [], torch.zeros(n_vocab, dtype=torch.long) if params.min_count > 0 else None
    for index, item in enumerate(inputs):
        check_cancel(cancel)
        progress(index, len(inputs), f"tokenizing: document {index + 1}/{len(inputs)}")
        tokens = first_layer_heads.analysed_token_rows(model, [item], heads_params)[0]
        lengths.append(int(tokens.shape[-1]))
        if counts is not None:
            counts += torch.bincount(tokens[0, first_pos:].cpu(), minlength=n_vocab)
    chosen = _sample(lengths, params.fit_docs)
    sample = [inputs[index] for index in chosen]
    weights, token_rows, (anatomy,), first_pos = first_layer_heads.anatomies(model, sample, heads_params, progress, cancel)
    used = int_list(params.heads, "heads") if params.heads.strip() else tuple(s.head for s in anatomy.heads if s.head_class == "contextual")
    documents = engine.layer_zero_pass(model, weights, token_rows, progress, cancel)
    corpus_ids = torch.cat([doc.ids[first_pos:] for doc in documents])
    models = engine.head_models(weights, anatomy, used, first_layer_heads.dest_token_id(model, params.dest_token), corpus_ids, first_pos)
    ln2_scale = float(torch.cat([norm_scale(layer.ln2, doc.mlp_input[first_pos:]) for doc in documents]).mean())
    post_scale = None
    if layer.post_attn is not None:
        post_scale = float(torch.cat([norm_scale(layer.post_attn, doc.attn_raw[first_pos:]) for doc in documents]).mean())
    directions = engine.neuron_directions(weights, ln2_scale, post_scale)
    n_neurons = directions.attention.shape[1]
    sums = torch.zeros(3, n_neurons, dtype=torch.float64)
    predicted = []
    for index, doc in enumerate(documents):
        check_cancel(cancel)
        progress(index, len(documents), f"fitted means and curve bins: document {index + 1}/{len(documents)}")
        real, direct, ctx = neuron_inputs(weights, directions, models, anatomy.pattern, doc, first_pos)
        sums += torch.stack([real.double().sum(0), direct.double().sum(0), ctx.double().sum(0)])
        predicted.append(direct + ctx)
    n_fit = max(1, int(corpus_ids.numel()))
    edges = _bin_edges(torch.cat(predicted), params.curve_bins)
    del predicted, documents
    eligible = None if counts is None else counts >= params.min_count
    top: tuple = (torch.zeros(0, 0),) * 4
    if models:
        top = token_contributions(models, directions, params.top_k, params.neuron_chunk, cancel, eligible, progress)
    token_ids = np.unique(np.concatenate([top[1].reshape(-1).numpy(), top[3].reshape(-1).numpy()])).astype(np.int64)
    state: dict[str, Any] = {
        "used": np.array(used, dtype=np.int64),
        "head_class": np.array([s.head_class for s in anatomy.heads], dtype=str),
        "normaliser_median": np.array([s.normaliser_median for s in anatomy.heads], dtype=np.float64),
        "pattern": anatomy.pattern[list(used)].numpy() if used else np.zeros((0, 0, 0), np.float32),
        "direct": directions.direct.numpy(), "attention": directions.attention.numpy(), "constant": directions.constant.numpy(),
        "shift": (sums / n_fit).numpy(), "edges": edges.numpy(),
        "content_mean": np.array([float(m.content[corpus_ids].double().mean()) for m in models], dtype=np.float64),
        "top_values": top[0].numpy(), "top_ids": top[1].numpy().astype(np.int64),
        "bottom_values": top[2].numpy(), "bottom_ids": top[3].numpy().astype(np.int64),
        "token_ids": token_ids, "token_strings": np.array(model.token_strings(token_ids.tolist()) if token_ids.size else [], dtype=str),
        "fit_input_ids": np.array([item.input_id for item in sample], dtype=np.int64),
        "ln1_scale": anatomy.scale_mean, "ln2_scale": ln2_scale, "post_attn_scale": np.nan if post_scale is None else post_scale,
        "pattern_method": anatomy.method, "parallel": bool(weights.parallel), "gated": layer.W_gate is not None,
    }
    for model_ in models:
        state[f"weight_{model_.head}"] = model_.weight.numpy()
        state[f"value_{model_.head}"] = model_.value.numpy()
        state[f"W_O_{model_.head}"] = model_.W_O.numpy()
        state[f"content_{model_.head}"] = model_.content.numpy()
        if model_.position_value is not None:
            state[f"position_value_{model_.head}"] = model_.position_value.numpy()
    return state


def _bin_edges(predicted, n_bins: int):
    """[N, n_bins - 1] per neuron: the first value of each equal-count chunk after the first (as
    torch.tensor_split cuts the sorted tokens); +inf where a chunk is empty."""
    import torch

    n = predicted.shape[0]
    bounds = [i * (n // n_bins) + min(i, n % n_bins) for i in range(1, n_bins)]
    padded = torch.cat([predicted.sort(dim=0).values, torch.full((1, predicted.shape[1]), float("inf"))])
    return padded[torch.tensor(bounds, dtype=torch.long)].T.contiguous()


def _state_models(state: dict):
    """The head models and the pattern [H, T, T] (zero for unused heads) from the state."""
    import torch

    from analyses.contextual_neurons.engine import HeadModel

    used = [int(head) for head in state["used"]]
    models = []
    for head in used:
        position = state.get(f"position_value_{head}")
        models.append(HeadModel(head, torch.from_numpy(state[f"weight_{head}"]), torch.from_numpy(state[f"value_{head}"]),
                                None if position is None else torch.from_numpy(position), torch.from_numpy(state[f"W_O_{head}"]),
                                torch.from_numpy(state[f"content_{head}"])))
    stored = torch.from_numpy(state["pattern"])
    pattern = torch.zeros(max(used, default=0) + 1, *stored.shape[1:], dtype=stored.dtype)
    for index, head in enumerate(used):
        pattern[head] = stored[index]
    return models, pattern


def compute_shard(model, inputs: list[Input], params, state: dict, progress: Progress, cancel: CancelEvent) -> Result:
    import numpy as np
    import torch

    from analyses import first_layer_heads
    from analyses.contextual_neurons import engine
    from analyses.core.tables import tokens_table
    from analyses.model.weights import model_weights

    weights = model_weights(model)
    first_pos = 1 if model.bos(params.prepend_bos).prepend else 0
    directions = engine.Directions(*(torch.from_numpy(state[name]) for name in ("direct", "attention", "constant")))
    models, pattern = _state_models(state)
    shift = torch.from_numpy(state["shift"])
    edges = torch.from_numpy(state["edges"])
    n_neurons, n_bins = directions.attention.shape[1], edges.shape[1] + 1
    moments, n_tokens = DoubleDouble((len(MOMENTS), n_neurons)), 0
    bin_counts = torch.zeros(n_neurons, n_bins, dtype=torch.long)
    bin_sums = DoubleDouble((2, n_neurons, n_bins))
    content = DoubleDouble((2, len(models)))
    content_mean = torch.from_numpy(state["content_mean"])
    token_rows = first_layer_heads.analysed_token_rows(model, inputs, params.heads_params())
    for index, tokens in enumerate(token_rows):
        check_cancel(cancel)
        progress(index, len(token_rows), f"neuron inputs: document {index + 1}/{len(token_rows)}")
        (doc,) = engine.layer_zero_pass(model, weights, [tokens], lambda *args: None, cancel)
        real, direct, ctx = neuron_inputs(weights, directions, models, pattern, doc, first_pos)
        n_tokens += real.shape[0]
        centred = [real.double() - shift[0], direct.double() - shift[1], ctx.double() - shift[2]]
        r, d, c = centred
        moments.add(torch.stack([r.sum(0), d.sum(0), c.sum(0), (r * r).sum(0), (d * d).sum(0), (c * c).sum(0),
                                 (r * d).sum(0), (r * c).sum(0), (d * c).sum(0)]).numpy())
        predicted = (direct + ctx).T.contiguous()
        bins = torch.searchsorted(edges, predicted, right=True)
        bin_counts.scatter_add_(1, bins, torch.ones_like(bins))
        per_bin = torch.zeros(2, n_neurons, n_bins, dtype=torch.float64)
        per_bin[0].scatter_add_(1, bins, predicted.double())
        per_bin[1].scatter_add_(1, bins, real.T.double())
        bin_sums.add(per_bin.numpy())
        ids = doc.ids[first_pos:]
        if models:
            values = torch.stack([m.content[ids].double() for m in models]) - content_mean[:, None]
            content.add(torch.stack([values.sum(1), (values * values).sum(1)]).numpy())
    first = min(item.input_id for item in inputs)
    sums: dict[str, Any] = {"first_input": np.full(n_neurons, first), "neuron": np.arange(n_neurons), "n": np.full(n_neurons, n_tokens)}
    for index, name in enumerate(MOMENTS):
        sums[f"{name}_hi"], sums[f"{name}_lo"] = moments.hi[index], moments.lo[index]
    neuron, bin_ = np.meshgrid(np.arange(n_neurons), np.arange(n_bins), indexing="ij")
    bin_rows = {"first_input": np.full(neuron.size, first), "neuron": neuron.ravel(), "bin": bin_.ravel(), "n": bin_counts.numpy().ravel(),
                "predicted_hi": bin_sums.hi[0].ravel(), "predicted_lo": bin_sums.lo[0].ravel(),
                "real_hi": bin_sums.hi[1].ravel(), "real_lo": bin_sums.lo[1].ravel()}
    content_rows = {"first_input": np.full(len(models), first), "head": np.array([m.head for m in models], dtype=np.int64),
                    "n": np.full(len(models), n_tokens), "sum_hi": content.hi[0], "sum_lo": content.lo[0], "sq_hi": content.hi[1], "sq_lo": content.lo[1]}
    tables = {"contextual_neurons_sums": _table("contextual_neurons_sums", sums),
              "contextual_neurons_bins": _table("contextual_neurons_bins", bin_rows),
              "contextual_neurons_content": _table("contextual_neurons_content", content_rows)}
    return Result(tables=tables, tokens=tokens_table(model, inputs, token_rows), notes=model.bos(params.prepend_bos).record())


def _merged(read, table: str, keys: tuple[str, ...], pairs: tuple[str, ...], where: dict | None = None) -> tuple[dict, dict]:
    """(key columns of the first shard, {pair: merged float64 array}) over every shard in shard order,
    with the counts ('n') summed exactly."""
    import numpy as np

    stored = read(table, None, where)
    if stored is None or stored.num_rows == 0:
        raise ValueError(f"{table}: no shard stored any row")
    arrays = {name: stored[name].to_numpy(zero_copy_only=False) for name in stored.column_names}
    order = np.lexsort(tuple(arrays[key] for key in reversed(("first_input", *keys))))
    arrays = {name: values[order] for name, values in arrays.items()}
    shards = np.unique(arrays["first_input"])
    shape = (len(shards), len(arrays["first_input"]) // len(shards))
    merged = {pair: DoubleDouble(shape[1:]) for pair in pairs}
    for index in range(len(shards)):
        for pair in pairs:
            merged[pair].add(arrays[f"{pair}_hi"].reshape(shape)[index], arrays[f"{pair}_lo"].reshape(shape)[index])
    out = {pair: merged[pair].value() for pair in pairs}
    out["n"] = arrays["n"].reshape(shape).sum(0)
    return {key: arrays[key].reshape(shape)[0] for key in keys}, out


def fit_statistics(sums: dict) -> dict[str, Any]:
    """The fit statistics (engine.fit_statistics) from the merged shifted sums of every token."""
    import numpy as np

    n = sums["n"].astype(np.float64)

    def centred(a: str, b: str):
        return sums[f"{a}_{b}"] - sums[a] * sums[b] / n

    rr, dd, cc = centred("real", "real"), centred("direct", "direct"), centred("ctx", "ctx")
    rd, rc, dc = centred("real", "direct"), centred("real", "ctx"), centred("direct", "ctx")
    pp, pr = dd + cc + 2 * dc, rd + rc

    def corr(ab, aa, bb):
        return ab / np.clip(np.sqrt(aa * bb), 1e-30, None)

    r_pred, r_direct, r_ctx, r_between = corr(pr, pp, rr), corr(rd, dd, rr), corr(rc, cc, rr), corr(dc, dd, cc)
    denominator = np.clip(1 - r_between ** 2, 1e-12, None)
    r2_full = np.clip((r_direct ** 2 + r_ctx ** 2 - 2 * r_direct * r_ctx * r_between) / denominator, 0, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        real_std, pred_std = np.sqrt(np.clip(rr, 0, None) / (n - 1)), np.sqrt(np.clip(pp, 0, None) / (n - 1))
    return {"corr": r_pred, "corr_direct": r_direct, "r2_full": r2_full, "r2_direct": r_direct ** 2,
            "ctx_explained": r2_full - r_direct ** 2, "real_std": real_std, "pred_std": pred_std}


def finalize(params, state: dict, read, progress: Progress, cancel: CancelEvent) -> Result:
    import numpy as np

    check_cancel(cancel)
    progress(0, 1, "merging the shards' sums")
    keys, sums = _merged(read, "contextual_neurons_sums", ("neuron",), MOMENTS)
    stats = fit_statistics(sums)
    neurons = keys["neuron"]
    order = np.lexsort((neurons, -np.nan_to_num(stats["ctx_explained"], nan=-1.0)))  # descending, ties by neuron
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    fit = {"neuron": neurons, "rank": rank, **{name: stats[name] for name in stats}, "n_tokens": sums["n"]}
    chosen = [int(neurons[index]) for index in order[: params.n_curves]]
    curve: dict[str, list] = {"neuron": [], "rank": [], "bin": [], "series": [], "value": []}
    if chosen:
        bin_keys, bins = _merged(read, "contextual_neurons_bins", ("neuron", "bin"), ("predicted", "real"), {"neuron": chosen})
        for position, neuron in enumerate(chosen):
            for index in np.flatnonzero((bin_keys["neuron"] == neuron) & (bins["n"] > 0)):
                for series in ("predicted", "real"):
                    for key, value in (("neuron", neuron), ("rank", position + 1), ("bin", int(bin_keys["bin"][index])), ("series", series),
                                       ("value", float(bins[series][index] / bins["n"][index]))):
                        curve[key].append(value)
    used = [int(head) for head in state["used"]]
    spread: dict[int, float] = {}
    if used:
        content_keys, content = _merged(read, "contextual_neurons_content", ("head",), ("sum", "sq"))
        n = content["n"].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.clip(content["sq"] - content["sum"] ** 2 / n, 0, None) / (n - 1))
        spread = {int(head): float(value) for head, value in zip(content_keys["head"], std)}
    heads: dict[str, list] = {"head": [], "class": [], "used": [], "normaliser_median": [], "content_std": []}
    for head, (head_class, median) in enumerate(zip(state["head_class"].tolist(), state["normaliser_median"].tolist())):
        for key, value in (("head", head), ("class", head_class), ("used", head in used), ("normaliser_median", median),
                           ("content_std", spread.get(head))):
            heads[key].append(value)
    tables = {"contextual_neurons_fit": _table("contextual_neurons_fit", fit),
              "contextual_neurons_curve": _table("contextual_neurons_curve", curve),
              "contextual_neurons_heads": _table("contextual_neurons_heads", heads),
              "contextual_neurons_tokens": _tokens_table(state)}
    post = float(state["post_attn_scale"])
    notes = {
        "token_lists": f"tokens seen at least {params.min_count} times" if params.min_count else "whole vocabulary",
        "contextual_heads": used,
        "ln1_scale": float(state["ln1_scale"]), "ln2_scale": float(state["ln2_scale"]), "post_attn_scale": None if np.isnan(post) else post,
        "pattern_method": str(state["pattern_method"]),
        "parallel": bool(state["parallel"]),
        "input_direction": "W_gate (gated MLP)" if bool(state["gated"]) else "W_in",
        "fit_documents": len(state["fit_input_ids"]),
    }
    if bool(state["parallel"]):
        notes["caveat"] = "attention and MLP read the same residual: attention does not feed this layer's MLP"
    return Result(tables=tables, tokens=None, notes=notes)


def _tokens_table(state: dict) -> Any:
    strings = dict(zip(state["token_ids"].tolist(), state["token_strings"].tolist()))
    rows: dict[str, list] = {"neuron": [], "side": [], "rank": [], "token_id": [], "token": [], "contribution": []}
    for side in ("top", "bottom"):
        values, ids = state[f"{side}_values"], state[f"{side}_ids"]
        for neuron in range(values.shape[0]):
            for position, (token_id, value) in enumerate(zip(ids[neuron].tolist(), values[neuron].tolist())):
                for key, item in (("neuron", neuron), ("side", side), ("rank", position + 1), ("token_id", token_id),
                                  ("token", strings[token_id]), ("contribution", value)):
                    rows[key].append(item)
    return _table("contextual_neurons_tokens", rows)
