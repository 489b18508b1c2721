"""The run of contextual-neurons: head anatomy, layer-0 pass, contributions, fit, tables."""
from __future__ import annotations

from typing import Any

from analyses.contextual_neurons import engine
from analyses.core.contract import CancelEvent, Input, Progress, Result, check_cancel, no_progress
from analyses.core.params import int_list


def _table(name: str, rows: dict[str, list]) -> Any:
    from analyses.contextual_neurons import SPEC
    from analyses.core.tables import arrow_table

    return arrow_table(SPEC.table(name), rows)


def token_contributions(models, directions, top_k: int, chunk: int, cancel: CancelEvent, eligible=None,
                        progress: Progress = no_progress) -> tuple[Any, Any, Any, Any]:
    """Top and bottom (values, token ids) [N, k] of each neuron's contribution over the
    vocabulary, or over the tokens where eligible [V] is true."""
    import torch

    n_neurons = directions.attention.shape[1]
    tops, top_ids, bottoms, bottom_ids = [], [], [], []
    for start in range(0, n_neurons, chunk):
        check_cancel(cancel)
        progress(start, n_neurons, f"token contributions: neurons {start + 1}-{min(n_neurons, start + chunk)}/{n_neurons}")
        columns = directions.attention[:, start:start + chunk]
        total = torch.zeros(models[0].value.shape[0], columns.shape[1])
        for model in models:
            total += model.weight[:, None] * (model.value @ (model.W_O @ columns))
        k = min(top_k, total.shape[0] if eligible is None else int(eligible.sum()))
        if eligible is None:
            high, low = total.topk(k, dim=0), total.topk(k, dim=0, largest=False)
        else:
            high = total.masked_fill(~eligible[:, None], float("-inf")).topk(k, dim=0)
            low = total.masked_fill(~eligible[:, None], float("inf")).topk(k, dim=0, largest=False)
        tops.append(high.values.T), top_ids.append(high.indices.T), bottoms.append(low.values.T), bottom_ids.append(low.indices.T)
    return torch.cat(tops), torch.cat(top_ids), torch.cat(bottoms), torch.cat(bottom_ids)


def compute(model, inputs: list[Input], params, progress: Progress, cancel: CancelEvent) -> Result:
    import torch

    from analyses import first_layer_heads
    from analyses.core.tables import tokens_table
    from analyses.model.weights import apply_norm, norm_scale

    heads_params = params.heads_params()
    weights, token_rows, (anatomy,), first_pos = first_layer_heads.anatomies(model, inputs, heads_params, progress, cancel)
    layer = weights.layers[0]
    if params.heads.strip():
        used = int_list(params.heads, "heads")
    else:
        used = tuple(summary.head for summary in anatomy.heads if summary.head_class == "contextual")
    documents = engine.layer_zero_pass(model, weights, token_rows, progress, cancel)
    corpus_ids = torch.cat([doc.ids[first_pos:] for doc in documents])
    models = engine.head_models(weights, anatomy, used, first_layer_heads.dest_token_id(model, params.dest_token), corpus_ids, first_pos)
    ln2_scale = float(torch.cat([norm_scale(layer.ln2, doc.mlp_input[first_pos:]) for doc in documents]).mean())
    post_scale = None
    if layer.post_attn is not None:
        post_scale = float(torch.cat([norm_scale(layer.post_attn, doc.attn_raw[first_pos:]) for doc in documents]).mean())
    directions = engine.neuron_directions(weights, ln2_scale, post_scale)
    reading = layer.W_gate if layer.W_gate is not None else layer.W_in
    reading_bias = layer.b_in if layer.W_gate is None and layer.b_in is not None else 0
    real, predicted, direct = [], [], []
    for index, doc in enumerate(documents):
        check_cancel(cancel)
        progress(index, len(documents), f"neuron inputs: document {index + 1}/{len(documents)}")
        residual = doc.resid_pre if weights.parallel or layer.b_O is None else doc.resid_pre + layer.b_O
        doc_direct = residual @ directions.direct + directions.constant
        doc_ctx = engine.contextual_term(models, anatomy.pattern, doc.ids, directions.attention) if models else torch.zeros_like(doc_direct)
        real.append((apply_norm(layer.ln2, doc.mlp_input) @ reading + reading_bias)[first_pos:])
        direct.append(doc_direct[first_pos:])
        predicted.append((doc_direct + doc_ctx)[first_pos:])
    real, predicted, direct = torch.cat(real), torch.cat(predicted), torch.cat(direct)
    stats = engine.fit_statistics(real, predicted, direct)
    order = torch.argsort(torch.nan_to_num(stats["ctx_explained"], nan=-1.0), descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, order.numel() + 1)
    tables = {
        "contextual_neurons_fit": fit_table(stats, rank, real.shape[0]),
        "contextual_neurons_heads": heads_table(anatomy, used, models, corpus_ids),
        "contextual_neurons_curve": curve_table(real, predicted, order[: params.n_curves], params.curve_bins),
    }
    if models:
        eligible = None
        if params.min_count > 0:
            eligible = torch.bincount(corpus_ids, minlength=weights.W_E.shape[0]) >= params.min_count
        top = token_contributions(models, directions, params.top_k, params.neuron_chunk, cancel, eligible, progress)
        tables["contextual_neurons_tokens"] = tokens_contribution_table(model, *top)
    else:
        tables["contextual_neurons_tokens"] = tokens_contribution_table(model, *(torch.zeros(0, 0),) * 4)
    notes = {
        **model.bos(params.prepend_bos).record(),
        "token_lists": f"tokens seen at least {params.min_count} times" if params.min_count else "whole vocabulary",
        "contextual_heads": list(used),
        "ln1_scale": anatomy.scale_mean, "ln2_scale": ln2_scale, "post_attn_scale": post_scale,
        "pattern_method": anatomy.method,
        "parallel": weights.parallel,
        "input_direction": "W_gate (gated MLP)" if layer.W_gate is not None else "W_in",
    }
    if weights.parallel:
        notes["caveat"] = "attention and MLP read the same residual: attention does not feed this layer's MLP"
    return Result(tables=tables, tokens=tokens_table(model, inputs, token_rows), notes=notes)


def fit_table(stats: dict, rank, n_tokens: int) -> Any:

    n = rank.numel()
    rows = {"neuron": list(range(n)), "rank": rank.tolist()}
    for name in ("corr", "corr_direct", "r2_full", "r2_direct", "ctx_explained", "real_std", "pred_std"):
        rows[name] = stats[name].tolist()
    rows["n_tokens"] = [n_tokens] * n
    return _table("contextual_neurons_fit", rows)


def heads_table(anatomy, used: tuple[int, ...], models, corpus_ids) -> Any:

    spread = {model.head: float(model.content[corpus_ids].std()) for model in models}
    rows = {"head": [], "class": [], "used": [], "normaliser_median": [], "content_std": []}
    for summary in anatomy.heads:
        for key, value in (("head", summary.head), ("class", summary.head_class), ("used", summary.head in used),
                           ("normaliser_median", summary.normaliser_median), ("content_std", spread.get(summary.head))):
            rows[key].append(value)
    return _table("contextual_neurons_heads", rows)


def curve_table(real, predicted, neurons, n_bins: int) -> Any:
    import torch

    rows = {"neuron": [], "rank": [], "bin": [], "series": [], "value": []}
    for position, neuron in enumerate(neurons.tolist()):
        order = torch.argsort(predicted[:, neuron])
        for index, chunk in enumerate(torch.tensor_split(order, n_bins)):
            if not chunk.numel():
                continue
            for series, values in (("predicted", predicted), ("real", real)):
                for key, value in (("neuron", neuron), ("rank", position + 1), ("bin", index), ("series", series),
                                   ("value", float(values[chunk, neuron].mean()))):
                    rows[key].append(value)
    return _table("contextual_neurons_curve", rows)


def tokens_contribution_table(model, top_values, top_ids, bottom_values, bottom_ids) -> Any:

    rows = {"neuron": [], "side": [], "rank": [], "token_id": [], "token": [], "contribution": []}
    for side, values, ids in (("top", top_values, top_ids), ("bottom", bottom_values, bottom_ids)):
        for neuron in range(values.shape[0]):
            token_ids = ids[neuron].tolist()
            strings = model.token_strings(token_ids)
            for position, (token_id, text, value) in enumerate(zip(token_ids, strings, values[neuron].tolist())):
                for key, item in (("neuron", neuron), ("side", side), ("rank", position + 1), ("token_id", token_id), ("token", text), ("contribution", value)):
                    rows[key].append(item)
    return _table("contextual_neurons_tokens", rows)
