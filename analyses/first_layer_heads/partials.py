"""What a shard of first-layer-heads stores, and how finalize rebuilds the corpus sums from it.

A shard stores, per analysed layer: per document its set name, length and ln1 scale sums
(first_layer_heads_docs); per document, head and position its residual log-normaliser
(first_layer_heads_logz); per document and head its row scores pooled over the destinations from
score_from (first_layer_heads_doc_scores); per document and head its attention on every duplicate pair
(first_layer_heads_duplicates); and the shard's summed real attention per (head, destination, key)
(first_layer_heads_attn_sums, the one dense partial: [heads, T, T] per shard, named by its first input). ``layer_corpus``
rebuilds from every stored shard the engine.LayerCorpus that one pass over the whole corpus fills,
so the anatomy, the bootstrap over documents and the normaliser quantiles run unchanged on it.

Per-document values do not depend on the shard (layer 0's residual is the embedding, the scores
come from the weights per document), so everything but the attention sums is the same bits however
the documents were split; the attention sums are added shard by shard in input order (the same
bits for the same shards: resume and sweeps), which against one shard differs by float64 rounding.

Finalize has no model: ``weights_state`` (prepare) keeps the few weights it reads, the additive
split of layer 0 (learned positions) and each layer's sliding window, as plain arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.first_layer_heads import engine


@dataclass(frozen=True)
class StateLayer:
    """The slice of a LayerWeights the anatomy reads after the corpus pass."""

    W_Q: Any
    W_K: Any
    b_Q: Any
    attn_scale: float
    sliding_window: int | None
    ln1: Any

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_kv_heads(self) -> int:
        return self.W_K.shape[0]


@dataclass(frozen=True)
class StateWeights:
    W_E: Any  # the fixed destination token's row only ([1, d]): its id is 0 here
    W_pos: Any
    layers: dict


def weights_state(model, layers: tuple[int, ...], method: str, dest_token: int, first_pos: int) -> dict:
    """The run-level state finalize needs in place of the model (named plain arrays)."""
    import numpy as np

    from analyses.first_layer_heads.anatomy import resolve_method
    from analyses.model.weights import model_weights

    weights = model_weights(model)
    methods = [resolve_method(weights, layer, method) for layer in layers]
    state = {
        "layers": np.asarray(layers, dtype=np.int64),
        "methods": np.asarray(methods),
        "windows": np.asarray([weights.layers[layer].sliding_window or -1 for layer in layers], dtype=np.int64),
        "n_ctx": np.asarray(model.n_ctx, dtype=np.int64),
        "first_pos": np.asarray(first_pos, dtype=np.int64),
    }
    if "additive" in methods:  # layer 0 with learned positions (resolve_method, check)
        layer = weights.layers[0]

        def array(tensor):
            return tensor.detach().cpu().numpy()

        state.update({
            "W_E_dest": array(weights.W_E[dest_token][None]), "W_pos": array(weights.W_pos),
            "W_Q": array(layer.W_Q), "W_K": array(layer.W_K), "attn_scale": np.asarray(layer.attn_scale, dtype=np.float64),
            "ln1_kind": np.asarray(layer.ln1.kind), "ln1_weight": array(layer.ln1.weight), "ln1_eps": np.asarray(layer.ln1.eps),
        })
        if layer.b_Q is not None:
            state["b_Q"] = array(layer.b_Q)
        if layer.ln1.bias is not None:
            state["ln1_bias"] = array(layer.ln1.bias)
    return state


def state_weights(state: dict) -> StateWeights:
    """The weights object analyse_layer reads, from weights_state's arrays (dest token id 0)."""
    import torch

    from analyses.model.weights import Norm

    def tensor(name: str) -> Any:
        return torch.from_numpy(state[name].copy()) if name in state else None

    layers: dict = {}
    for layer, window in zip(state["layers"].tolist(), state["windows"].tolist()):
        layers[layer] = StateLayer(None, None, None, 1.0, None if window < 0 else int(window), None)
    if "W_Q" in state:
        ln1 = Norm(str(state["ln1_kind"]), tensor("ln1_weight"), tensor("ln1_bias"), float(state["ln1_eps"]))
        layers[0] = StateLayer(tensor("W_Q"), tensor("W_K"), tensor("b_Q"), float(state["attn_scale"]), layers[0].sliding_window, ln1)
    return StateWeights(tensor("W_E_dest"), tensor("W_pos"), layers)


def shard_tables(corpus: dict[int, engine.LayerCorpus], input_ids: list[int], set_names: list[str], score_from: int) -> dict[str, Any]:
    """One shard's partial tables from its corpus pass (documents in input order)."""
    import numpy as np
    import torch

    from analyses.core.tables import arrow_table
    from analyses.first_layer_heads import SPEC

    docs: dict[str, list] = {name: [] for name, _ in SPEC.table("first_layer_heads_docs").columns}
    rows: dict[str, list] = {name: [] for name, _ in SPEC.table("first_layer_heads_logz").columns}
    pools: dict[str, list] = {name: [] for name, _ in SPEC.table("first_layer_heads_doc_scores").columns}
    dups: dict[str, list] = {name: [] for name, _ in SPEC.table("first_layer_heads_duplicates").columns}
    sums: dict[str, list] = {name: [] for name, _ in SPEC.table("first_layer_heads_attn_sums").columns}
    for layer, entry in corpus.items():
        for input_id, set_name, (_, logz), document in zip(input_ids, set_names, entry.residual_logz, entry.documents):
            heads, size = logz.shape
            for name, value in (("layer", layer), ("input_id", input_id), ("set_name", set_name), ("n_tokens", size),
                                ("scale_sum", document.scale_sum), ("scale_sq_sum", document.scale_sq_sum), ("n_scaled", document.n_scaled)):
                docs[name].append(value)
            head, pos = np.meshgrid(np.arange(heads), np.arange(size), indexing="ij")
            rows["layer"].append(np.full(heads * size, layer)), rows["input_id"].append(np.full(heads * size, input_id))
            rows["head"].append(head.ravel()), rows["pos"].append(pos.ravel())
            rows["residual_logz"].append(logz.double().reshape(-1).numpy())
            row_sum, row_count = engine.row_pools(document.rows, score_from)
            for index, score in enumerate(engine.ROW_SCORES):
                for head in range(heads):
                    for name, value in (("layer", layer), ("input_id", input_id), ("head", head), ("score", score),
                                        ("row_sum", float(row_sum[index, head])), ("n_rows", int(row_count[index, head]))):
                        pools[name].append(value)
            pairs = document.dup_cells.shape[1]
            dups["layer"].append(np.full(heads * pairs, layer)), dups["input_id"].append(np.full(heads * pairs, input_id))
            dups["head"].append(np.repeat(np.arange(heads), pairs))
            dups["dest_pos"].append(np.tile(document.dup_cells[0].numpy(), heads)), dups["key_pos"].append(np.tile(document.dup_cells[1].numpy(), heads))
            dups["attn"].append(document.dup_attn.reshape(-1).numpy())
        reached = int((entry.doc_count > 0).sum())
        dest, key = torch.tril_indices(reached, reached)
        for head in range(entry.n_heads):
            sums["layer"].append(np.full(dest.numel(), layer)), sums["first_input"].append(np.full(dest.numel(), min(input_ids)))
            sums["head"].append(np.full(dest.numel(), head))
            sums["dest_pos"].append(dest.numpy()), sums["key_pos"].append(key.numpy())
            sums["attn_sum"].append(entry.attn_sum[head, dest, key].numpy())

    def joined(columns: dict[str, list]) -> dict[str, Any]:
        return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in columns.items()}

    return {
        "first_layer_heads_docs": arrow_table(SPEC.table("first_layer_heads_docs"), docs),
        "first_layer_heads_logz": arrow_table(SPEC.table("first_layer_heads_logz"), joined(rows)),
        "first_layer_heads_doc_scores": arrow_table(SPEC.table("first_layer_heads_doc_scores"), pools),
        "first_layer_heads_duplicates": arrow_table(SPEC.table("first_layer_heads_duplicates"), joined(dups)),
        "first_layer_heads_attn_sums": arrow_table(SPEC.table("first_layer_heads_attn_sums"), joined(sums)),
    }


def _sorted(table, keys: tuple[str, ...]) -> dict[str, Any]:
    """The table's columns as numpy arrays, rows sorted by keys (the first one primary)."""
    import numpy as np

    arrays = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
    order = np.lexsort(tuple(arrays[key] for key in reversed(keys)))
    return {name: values[order] for name, values in arrays.items()}


def layer_corpus(read, layer: int) -> engine.LayerCorpus | None:
    """The corpus sums of one layer over every stored shard (None when no shard stored any)."""
    import math

    import numpy as np
    import torch

    stored = read("first_layer_heads_docs", None, {"layer": layer})
    if stored is None or stored.num_rows == 0:
        return None
    docs = _sorted(stored, ("input_id",))
    ids, lengths = docs["input_id"], docs["n_tokens"].astype(np.int64)
    rows = _sorted(read("first_layer_heads_logz", None, {"layer": layer}), ("input_id", "head", "pos"))
    pools = _sorted(read("first_layer_heads_doc_scores", None, {"layer": layer}), ("input_id", "score", "head"))
    # Scores in ROW_SCORES order within a document: their names sort otherwise.
    rank = {score: index for index, score in enumerate(engine.ROW_SCORES)}
    heads = int(rows["head"].max()) + 1
    length = int(lengths.max())
    corpus = engine.LayerCorpus(heads, length)
    corpus.scale_sum = math.fsum(docs["scale_sum"].tolist())
    corpus.scale_sq_sum = math.fsum(docs["scale_sq_sum"].tolist())
    corpus.n_scaled = int(docs["n_scaled"].sum())
    corpus.doc_count = torch.from_numpy((lengths[None, :] > np.arange(length)[:, None]).sum(1).astype(np.float64))
    # The attention sums shard by shard in input order (sorted by each shard's first input, whatever
    # order the reader returns them in): np.add.at adds in row order.
    attn = np.zeros((heads, length, length), dtype=np.float64)
    sums = _sorted(read("first_layer_heads_attn_sums", ("first_input", "head", "dest_pos", "key_pos", "attn_sum"), {"layer": layer}),
                   ("first_input", "head", "dest_pos", "key_pos"))
    np.add.at(attn, (sums["head"], sums["dest_pos"], sums["key_pos"]), sums["attn_sum"])
    corpus.attn_sum = torch.from_numpy(attn)
    dups = read("first_layer_heads_duplicates", None, {"layer": layer})
    dups = _sorted(dups, ("input_id", "head", "dest_pos", "key_pos")) if dups is not None and dups.num_rows else None
    # The duplicate sums document by document in input order: the same bits however the run was split.
    dup_attn = np.zeros((heads, length, length), dtype=np.float64)
    dup_count = np.zeros((length, length), dtype=np.float64)
    row_bounds = np.searchsorted(rows["input_id"], ids, side="left"), np.searchsorted(rows["input_id"], ids, side="right")
    pool_bounds = np.searchsorted(pools["input_id"], ids, side="left")
    if dups is not None:
        dup_bounds = np.searchsorted(dups["input_id"], ids, side="left"), np.searchsorted(dups["input_id"], ids, side="right")
    for index, (input_id, size) in enumerate(zip(ids.tolist(), lengths.tolist())):
        start, stop = int(row_bounds[0][index]), int(row_bounds[1][index])
        if stop - start != heads * size:
            raise ValueError(f"first_layer_heads_logz: document {input_id} of layer {layer} has {stop - start} rows, not {heads * size}")
        logz = torch.from_numpy(rows["residual_logz"][start:stop].reshape(heads, size))
        first = int(pool_bounds[index])
        block = slice(first, first + len(engine.ROW_SCORES) * heads)
        if first + len(engine.ROW_SCORES) * heads > len(pools["input_id"]) or not (pools["input_id"][block] == input_id).all():
            raise ValueError(f"first_layer_heads_doc_scores: document {input_id} of layer {layer} lacks rows")
        order = np.argsort([rank[str(score)] for score in pools["score"][block].reshape(-1, heads)[:, 0]], kind="stable")
        sums = torch.from_numpy(pools["row_sum"][block].reshape(-1, heads)[order].copy())
        counts = torch.from_numpy(pools["n_rows"][block].reshape(-1, heads)[order].astype(np.float64))
        cells = torch.zeros(2, 0, dtype=torch.long)
        attn_cells = torch.zeros(heads, 0, dtype=torch.float64)
        if dups is not None and dup_bounds[1][index] > dup_bounds[0][index]:
            low, high = int(dup_bounds[0][index]), int(dup_bounds[1][index])
            pairs = (high - low) // heads
            dest, key = dups["dest_pos"][low: low + pairs].astype(np.int64), dups["key_pos"][low: low + pairs].astype(np.int64)
            values = dups["attn"][low:high].reshape(heads, pairs)
            np.add.at(dup_attn, (slice(None), dest, key), values)
            np.add.at(dup_count, (dest, key), 1.0)
            cells, attn_cells = torch.from_numpy(np.stack([dest, key])), torch.from_numpy(values.copy())
        corpus.residual_logz.append((str(docs["set_name"][index]), logz))
        corpus.documents.append(engine.DocumentScores(None, cells, attn_cells, pooled=(sums, counts)))
    corpus.dup_attn_sum = torch.from_numpy(dup_attn)
    corpus.dup_count = torch.from_numpy(dup_count)
    return corpus
