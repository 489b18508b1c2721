"""The edges' tables: the top-N edges with their exact checks, the pruned circuit (the kept edges
and the nodes they join, each node with its own exact check) and every input's edge sum against
its own score.

Pruning: of the stored top-N edges (by |estimate|), keep those with |estimate| at least
edge_threshold times the largest |estimate|, then only those whose downstream node reaches the
logits through kept edges (a key/value head reaches them when one of its query heads does)."""
from __future__ import annotations

from typing import Any

from analyses.attribution_patching import edges as eap
from analyses.attribution_patching.exact import Node
from analyses.core.contract import CancelEvent


def top_edges(scores: Any, count: int) -> list[tuple[int, int]]:
    """(upstream, downstream) indices of the ``count`` edges of largest |estimate|, largest first."""
    import numpy as np

    magnitude = np.nan_to_num(np.abs(scores), nan=-1.0).ravel()
    order = np.argsort(-magnitude, kind="stable")
    valid = int((magnitude >= 0).sum())
    return [tuple(int(i) for i in np.unravel_index(flat, scores.shape)) for flat in order[: min(count, valid)]]  # type: ignore[misc]


def reaches_logits(kept: list[tuple[str, str]], group_of: dict[str, list[str]]) -> set[str]:
    """Nodes with a path to the logits over (upstream node, downstream node) edges; a key/value
    node (group_of: its query heads) reaches them through any of its heads."""
    reached = {"logits"}
    changed = True
    while changed:
        changed = False
        for node, heads in group_of.items():
            if node not in reached and any(head in reached for head in heads):
                reached.add(node)
                changed = True
        for up, down in kept:
            if down in reached and up not in reached:
                reached.add(up)
                changed = True
    return reached


def prune(edges: list[tuple[str, str, float]], threshold: float, group_of: dict[str, list[str]]) -> list[bool]:
    """Whether each (upstream, downstream node, estimate) edge is in the pruned circuit."""
    largest = max((abs(score) for _, _, score in edges), default=0.0)
    strong = [largest > 0 and abs(score) >= threshold * largest for _, _, score in edges]
    candidates = [(up, down) for (up, down, _), keep in zip(edges, strong) if keep]
    reached = reaches_logits(candidates, group_of)
    return [keep and down in reached for (_, down, _), keep in zip(edges, strong)]


def kv_groups(model) -> dict[str, list[str]]:
    n_heads, n_kv = int(model.bridge.cfg.n_heads), eap.kv_heads(model)
    if n_kv == n_heads:
        return {}
    per = n_heads // n_kv
    return {eap.kv_node(layer, group, n_kv, n_heads): [f"L{layer}.H{head}" for head in range(group * per, (group + 1) * per)]
            for layer in range(model.n_layers) for group in range(n_kv)}


class EdgeRows:
    """Accumulates the edge tables' columns over inputs."""

    def __init__(self) -> None:
        self.edges: dict = {name: [] for name in ("input_id", "rank", "upstream", "up_layer", "downstream", "node", "down_layer",
                                                  "input", "estimate", "exact", "checked", "in_circuit")}
        self.inputs: dict = {name: [] for name in ("input_id", "downstream", "layer", "input", "input_score", "edge_sum", "exact_sum")}
        self.nodes: dict = {name: [] for name in ("input_id", "node", "layer", "kind", "estimate", "exact", "spearman", "fn_estimate")}

    def add(self, model, setup, params, input_id: int, scores: Any, source: dict, checks: dict, rng: Any, batch_rows: int,
            cancel: CancelEvent | None, progress: Any) -> dict:
        """Score the input's edges, check them and its circuit's nodes exactly; returns the edge
        kind's check summary (atp_checks)."""
        import numpy as np

        from analyses.attribution_patching import exact
        from analyses.attribution_patching.tables import check_summary

        progress(7, 10, "edge attribution patching")
        edge = eap.edge_scores(model, setup, cancel)
        top = top_edges(edge.scores, params.top_edges)
        valid = [tuple(int(i) for i in pair) for pair in np.argwhere(~np.isnan(edge.scores))]
        top_set = set(top)
        rest = [pair for pair in valid if pair not in top_set]
        picks = rng.choice(len(rest), size=min(params.random_checks, len(rest)), replace=False) if rest else []
        sampled = [rest[int(i)] for i in sorted(picks)]
        progress(8, 10, f"exact patching of {len(top) + len(sampled)} edges")
        effects = eap.exact_edges(model, setup, edge, top + sampled, batch_rows, cancel)
        exact_of = dict(zip(top + sampled, effects))
        progress(9, 10, "exact patching of the circuit's nodes")
        flat_scores = edge.scores[tuple(np.array(valid).T)] if valid else np.zeros(0)
        index_of = {pair: i for i, pair in enumerate(valid)}
        summary = check_summary("edge", flat_scores, flat_scores, {index_of[pair]: value for pair, value in exact_of.items()},
                                [index_of[pair] for pair in top], [index_of[pair] for pair in sampled], params.fn_threshold)

        triples = [(edge.ups[u].name, edge.downs[d].node, float(edge.scores[u, d])) for u, d in top]
        kept = prune(triples, params.edge_threshold, kv_groups(model))
        for rank, ((u, d), keep) in enumerate(zip(top, kept), start=1):
            up, down = edge.ups[u], edge.downs[d]
            for column, value in (("input_id", input_id), ("rank", rank), ("upstream", up.name), ("up_layer", up.layer), ("downstream", down.name),
                                  ("node", down.node), ("down_layer", down.layer), ("input", down.input), ("estimate", float(edge.scores[u, d])),
                                  ("exact", exact_of[(u, d)]), ("checked", "top"), ("in_circuit", keep)):
                self.edges[column].append(value)
        sums = np.nansum(edge.scores, axis=0)
        for j, down in enumerate(edge.downs):
            for column, value in (("input_id", input_id), ("downstream", down.name), ("layer", down.layer), ("input", down.input),
                                  ("input_score", float(edge.input_scores[j])), ("edge_sum", float(sums[j])), ("exact_sum", edge.exact_sum)):
                self.inputs[column].append(value)
        self._add_nodes(model, setup, input_id, scores, source, checks, edge, top, kept, batch_rows, cancel, exact)
        return summary

    def _add_nodes(self, model, setup, input_id: int, scores: Any, source: dict, checks: dict, edge: Any, top: list, kept: list,
                   batch_rows: int, cancel: CancelEvent | None, exact: Any) -> None:
        """The circuit's nodes with their own estimate and exact patching of the whole node."""
        names: dict[str, int] = {}
        for (u, d), keep in zip(top, kept):
            if keep:
                names.setdefault(edge.ups[u].name, edge.ups[u].layer)
                names.setdefault(edge.downs[d].node, edge.downs[d].layer)
        ordered = sorted(names.items(), key=lambda item: (item[1], item[0]))
        checked: list[tuple[str, Node, float, str]] = []
        for name, layer in ordered:
            if name.startswith("L") and ".H" in name:
                head = int(name.split(".H")[1])
                checked.append((name, Node("head_total", (layer, head)), float(scores.estimate["head_total"][layer, head]), "head_total"))
            elif name.endswith(".MLP"):
                checked.append((name, Node("mlp_total", (layer,)), float(scores.estimate["mlp"][layer].sum()), "mlp"))
        effects = exact.exact_effects(model, setup, [node for _, node, _, _ in checked], source, scores.z_patched, batch_rows, cancel) if checked else []
        found = {name: (estimate, effect, kind) for (name, _, estimate, kind), effect in zip(checked, effects)}
        for name, layer in ordered:
            estimate, effect, kind = found.get(name, (None, None, None))
            check = checks.get(kind, {}) if kind else {}
            node_kind = "embed" if name == "embed" else "logits" if name == "logits" else "kv" if ".KV" in name else "mlp" if name.endswith(".MLP") else "head"
            for column, value in (("input_id", input_id), ("node", name), ("layer", layer), ("kind", node_kind), ("estimate", estimate),
                                  ("exact", effect), ("spearman", check.get("spearman")), ("fn_estimate", check.get("fn_estimate"))):
                self.nodes[column].append(value)


def invariants(read: Any) -> list[tuple]:
    """Where the residual stream is the plain sum of its writers, an input's edges sum to its own score."""
    name, tolerance = "invariant_edges_sum_to_input", 1e-4
    rows = read("atp_edge_inputs", ["input_score", "edge_sum", "exact_sum"])
    if rows is None:
        return [(name, None, tolerance, None, "skipped: no edges scored (edges=false or the model's family)")]
    plain = [row for row in rows.to_pylist() if row["exact_sum"]]
    if not plain:
        return [(name, None, tolerance, None, "skipped: post-norm sublayers (Gemma 3): the edges sum to the input's score to first order only")]
    largest = max(abs(row["input_score"]) for row in plain)
    worst = max(abs(row["edge_sum"] - row["input_score"]) for row in plain) / largest if largest > 0 else 0.0
    return [(name, worst, tolerance, worst <= tolerance, f"max |sum of edges - input score| / max |input score| over {len(plain)} inputs")]
