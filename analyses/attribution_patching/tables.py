"""Attribution patching's result tables: every node's estimates with the exact checks beside them,
the per-kind check summary (Spearman, sampled false negatives), the inputs, and the mean over a
prompt set."""
from __future__ import annotations

from typing import Any

from analyses.attribution_patching.circuit import EdgeRows
from analyses.attribution_patching.engine import POSITION_KINDS
from analyses.attribution_patching.exact import Node
from analyses.core.contract import CancelEvent, Input, Progress, Result, check_cancel
from analyses.core.tables import arrow_table, tokens_table_of

CHECK_KINDS = (*POSITION_KINDS, "head", "head_total", "neuron_sum", "neuron_last")


def node_of(kind: str, index: tuple) -> Node:
    return Node(kind, tuple(int(i) for i in index))


def live_nodes(kind: str, shape: tuple, first_changed: int) -> Any:
    """Flat mask of the nodes that can have an effect: a residual, attention or MLP output and a
    head's read of a position before the first changed token are the same in both runs, so their
    estimate and exact effect are both exactly 0 (checking them would only add certain agreements);
    every neuron and whole head can differ."""
    import numpy as np

    mask = np.ones(shape, dtype=bool)
    if kind in POSITION_KINDS or kind == "head":
        mask[..., :first_changed] = False
    return mask.ravel()


def choose_checks(ranking: Any, top_k: int, random_checks: int, rng: Any, live: Any = None) -> tuple[list, list, int]:
    """Flat indices of the top-k nodes by ranking score and a uniform sample of the others (of
    the live ones, where a live_nodes mask is given), and the number of nodes sampled from."""
    import numpy as np

    order = np.argsort(-ranking.ravel(), kind="stable")
    top = order[:top_k].tolist()
    rest = order[top_k:]
    if live is not None:
        rest = rest[live[rest]]
    sampled = sorted(rng.choice(rest, size=min(random_checks, len(rest)), replace=False).tolist()) if len(rest) else []
    return top, sampled, len(rest)


def spearman(first: list, second: list) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    if len(first) < 3 or np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(spearmanr(first, second).statistic)


def check_summary(kind: str, estimate: Any, atp: Any, exact: dict, top: list, sampled: list, fn_threshold: float,
                  frame: int | None = None) -> dict:
    """Spearman over the checked nodes (signed; plain AtP's; of the sizes |estimate| and |exact|)
    and the sampled false-negative estimate of one kind: the sample's misses scaled to the frame it
    was drawn from (frame nodes; every node outside the top-k when not given)."""
    checked = top + sampled
    exact_values = [exact[i] for i in checked]
    estimated = [float(estimate.ravel()[i]) for i in checked]
    largest = max((abs(value) for value in exact_values), default=0.0)
    threshold = fn_threshold * largest
    misses = sum(1 for i in sampled if largest > 0 and abs(exact[i]) >= threshold)
    rest = estimate.size - len(top) if frame is None else frame
    return {
        "kind": kind, "nodes": int(estimate.size), "checked": len(checked),
        "spearman": spearman(estimated, exact_values),
        "spearman_atp": spearman([float(atp.ravel()[i]) for i in checked], exact_values),
        # The ranking by size that the top-k checks and the false negatives use: which nodes matter, whatever their sign.
        "spearman_abs": spearman([abs(value) for value in estimated], [abs(value) for value in exact_values]),
        "false_negatives": misses, "fn_estimate": misses * rest / len(sampled) if sampled else float("nan"), "threshold": threshold,
    }


class Collector:
    """Scores and checks inputs one at a time and accumulates every table's columns."""

    def __init__(self, model, params, state: dict) -> None:
        from analyses.attribution_patching import setup as atp_setup

        self.model, self.params, self.state = model, params, state or {}
        self.target_id, self.foil_id = atp_setup.metric_tokens(model, params)
        names = {
            "attribution_patching": ("input_id", "kind", "layer", "pos"),
            "atp_heads": ("input_id", "kind", "layer", "head", "pos"),
            "atp_neurons": ("input_id", "kind", "rank", "layer", "neuron"),
        }
        score_columns = ("estimate", "atp", "graddrop", "exact", "checked")
        self.rows: dict = {table: {column: [] for column in (*keys, *score_columns)} for table, keys in names.items()}
        self.inputs: list[dict] = []
        self.checks: list[dict] = []
        self.tokens: list = []
        self.edges = EdgeRows()
        self.edge_note = ""

    def add(self, item: Input, progress: Progress, cancel: CancelEvent) -> None:
        import numpy as np

        from analyses.attribution_patching import engine, exact
        from analyses.attribution_patching import setup as atp_setup
        from analyses.causal_trace.engine import batch_tokens_limit

        model, params = self.model, self.params
        change = atp_setup.locate_change(model, item, params)
        setup, target = atp_setup.build_setup(model, item, params, self.state, change, self.target_id, self.foil_id)
        seq_len = len(change.ids)
        batch_rows = max(1, batch_tokens_limit(model, seq_len) // seq_len)
        # Progress: the node scores are the first 60% of an input, then its exact checks, then its edges.
        def scores_progress(done: int, total: int, note: str = "") -> None:
            progress(6 * done, 10 * max(1, total), note)

        scores, _, source = engine.node_scores(model, setup, params.method, params.graddrop, batch_rows, cancel=cancel, progress=scores_progress)
        check_cancel(cancel)
        rng = np.random.default_rng([params.seed, item.input_id])
        chosen: dict = {}
        nodes: list[Node] = []
        for kind in CHECK_KINDS:
            ranking = scores.graddrop[kind] if scores.graddrop is not None else np.abs(scores.estimate[kind])
            shape = scores.estimate[kind].shape
            chosen[kind] = choose_checks(ranking, params.top_k, params.random_checks, rng, live_nodes(kind, shape, change.changed[0]))
            top, sampled, _ = chosen[kind]
            nodes += [node_of(kind, np.unravel_index(flat, shape)) for flat in top + sampled]
        progress(6, 10, f"exact patching of {len(nodes)} checked nodes")
        effects = exact.exact_effects(model, setup, nodes, source, scores.z_patched, batch_rows, cancel)
        exact_of: dict = {kind: {} for kind in CHECK_KINDS}
        for node, effect in zip(nodes, effects):
            flat = int(np.ravel_multi_index(node.index, scores.estimate[node.kind].shape))
            exact_of[node.kind][flat] = effect
        summaries = {}
        for kind in CHECK_KINDS:
            top, sampled, frame = chosen[kind]
            summaries[kind] = check_summary(kind, scores.estimate[kind], scores.atp[kind], exact_of[kind], top, sampled, params.fn_threshold, frame)
            self.checks.append({"input_id": item.input_id, **summaries[kind]})
        if params.edges:
            from analyses.attribution_patching import edges as eap

            self.edge_note = eap.unavailable(model) or "scored"
            if self.edge_note == "scored":
                summary = self.edges.add(model, setup, params, item.input_id, scores, source, summaries, rng, batch_rows, cancel, progress)
                self.checks.append({"input_id": item.input_id, **summary})
        self._store_nodes(item.input_id, scores, chosen, exact_of)
        clean_metric, corrupt_metric = (scores.base_metric, scores.source_metric) if params.resolved_direction() == "noising" else (scores.source_metric, scores.base_metric)
        self.inputs.append({
            "input_id": item.input_id, "corruption": change.corruption, "changed_start": change.changed[0], "changed_end": change.changed[1],
            "direction": params.resolved_direction(), "metric": params.metric, "target_token": model.token_strings([target])[0],
            "foil_token": model.token_strings([self.foil_id])[0] if self.foil_id is not None else None,
            "clean_metric": clean_metric, "corrupt_metric": corrupt_metric, "samples": setup.samples,
        })
        self.tokens.append((item.input_id, list(change.ids), model.token_strings(list(change.ids))))

    def _store_nodes(self, input_id: int, scores: Any, chosen: dict, exact_of: dict) -> None:
        import numpy as np

        for kind in CHECK_KINDS:
            estimate = scores.estimate[kind]
            ranking = scores.graddrop[kind] if scores.graddrop is not None else np.abs(estimate)
            top, sampled, _ = chosen[kind]
            label = {**dict.fromkeys(sampled, "sample"), **dict.fromkeys(top, "top")}
            flats = np.arange(estimate.size)
            index = np.unravel_index(flats, estimate.shape)
            if kind in POSITION_KINDS:
                table, keys = "attribution_patching", {"kind": kind, "layer": index[0], "pos": index[1]}
            elif kind == "head":
                table, keys = "atp_heads", {"kind": kind, "layer": index[0], "head": index[1], "pos": index[2]}
            elif kind == "head_total":
                table, keys = "atp_heads", {"kind": kind, "layer": index[0], "head": index[1], "pos": [None] * estimate.size}
            else:
                ranks = np.empty(estimate.size, dtype=np.int64)
                ranks[np.argsort(-ranking.ravel(), kind="stable")] = np.arange(1, estimate.size + 1)
                table, keys = "atp_neurons", {"kind": kind.removeprefix("neuron_"), "rank": ranks, "layer": index[0], "neuron": index[1]}
            columns = self.rows[table]
            n = estimate.size
            for key, values in {"input_id": [input_id] * n, **keys}.items():
                columns[key].extend(values.tolist() if hasattr(values, "tolist") else ([values] * n if isinstance(values, str) else values))
            columns["estimate"].extend(estimate.ravel().tolist())
            columns["atp"].extend(scores.atp[kind].ravel().tolist())
            columns["graddrop"].extend(scores.graddrop[kind].ravel().tolist() if scores.graddrop is not None else [None] * n)
            columns["exact"].extend(exact_of[kind].get(flat) for flat in range(n))
            columns["checked"].extend(label.get(flat) for flat in range(n))

    def result(self) -> Result:
        from analyses.attribution_patching import SPEC

        def table(name: str, columns: dict) -> Any:
            return arrow_table(SPEC.table(name), columns)

        def rows_to_columns(name: str, rows: list[dict]) -> dict:
            return {column: [row[column] for row in rows] for column, _ in SPEC.table(name).columns}

        tables = {name: table(name, columns) for name, columns in self.rows.items()}
        tables["atp_inputs"] = table("atp_inputs", rows_to_columns("atp_inputs", self.inputs))
        tables["atp_checks"] = table("atp_checks", rows_to_columns("atp_checks", self.checks))
        if self.edges.inputs["input_id"]:
            tables["atp_edges"] = table("atp_edges", self.edges.edges)
            tables["atp_edge_inputs"] = table("atp_edge_inputs", self.edges.inputs)
            tables["atp_circuit"] = table("atp_circuit", self.edges.nodes)
        notes = {
            **self.model.bos(self.params.prepend_bos).record(), **self.state, "method": self.params.method,
            "graddrop": self.params.graddrop and self.params.method == "atp_star", "direction": self.params.resolved_direction(),
            "edges": self.edge_note if self.params.edges else "off",
        }
        return Result(tables=tables, tokens=tokens_table_of(self.tokens), notes=notes)


def mean_table(read: Any) -> Any:
    """Means over the inputs: head_total per (layer, head), resid / attn / mlp at each input's last token per layer."""
    from analyses.attribution_patching import SPEC

    groups: dict = {}
    heads = read("atp_heads", ["input_id", "kind", "layer", "head", "estimate"])
    if heads is not None:
        for row in heads.to_pylist():
            if row["kind"] == "head_total":
                groups.setdefault(("head_total", row["layer"], row["head"]), []).append(row["estimate"])
    positions = read("attribution_patching", ["input_id", "kind", "layer", "pos", "estimate"])
    if positions is not None:
        rows = positions.to_pylist()
        last: dict = {}
        for row in rows:
            last[row["input_id"]] = max(last.get(row["input_id"], -1), row["pos"])
        for row in rows:
            if row["pos"] == last[row["input_id"]]:
                groups.setdefault((row["kind"], row["layer"], -1), []).append(row["estimate"])
    out: dict = {"kind": [], "layer": [], "index": [], "mean_estimate": [], "n_prompts": []}
    for (kind, layer, index), values in sorted(groups.items()):
        for column, value in (("kind", kind), ("layer", layer), ("index", index), ("mean_estimate", sum(values) / len(values)), ("n_prompts", len(values))):
            out[column].append(value)
    return arrow_table(SPEC.table("atp_mean"), out)


def invariants(params: Any, read: Any) -> list[tuple]:
    """Nodes before the noised subject have equal values in both runs: estimate and exact are 0 up
    to float32 rounding. The clean run is one row and the noised runs a batch of ``samples`` rows,
    so the same prefix is computed in different batch shapes (measured on SmolLM2: 7.6e-7 nats, on
    Gemma 3: 2.6e-6, against largest effects near 1); the value is therefore relative to the run's
    largest |estimate| or |exact|, where a real leak of the noise before the subject is of order 1."""
    name, tolerance = "invariant_unchanged_nodes_zero", 1e-5
    inputs = read("atp_inputs", ["input_id", "corruption", "changed_start"])
    if inputs is None:
        return [(name, None, tolerance, None, "skipped: no inputs")]
    starts = {row["input_id"]: row["changed_start"] for row in inputs.to_pylist() if row["corruption"] == "noise"}
    positions = read("attribution_patching", ["input_id", "pos", "estimate", "exact"])
    rows = positions.to_pylist()
    values = [abs(value) for row in rows if row["input_id"] in starts and row["pos"] < starts[row["input_id"]]
              for value in (row["estimate"], row["exact"]) if value is not None]
    if not values:
        return [(name, None, tolerance, None, "skipped: no noised input with tokens before the subject")]
    scale = max((abs(value) for row in rows for value in (row["estimate"], row["exact"]) if value is not None and value == value), default=0.0)
    worst = max(values)
    relative = worst / scale if scale > 0 else worst
    return [(name, relative, tolerance, relative <= tolerance,
             f"max |estimate|, |exact| over {len(values)} values before the subject: {worst:.3g}, relative to the largest {scale:.3g}")]
