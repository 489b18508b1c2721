"""Arrow tables of first-layer-heads, in long format, from the per-layer anatomies."""
from __future__ import annotations

from typing import Any

from analyses.first_layer_heads import engine
from analyses.first_layer_heads.anatomy import LayerAnatomy


def _table(rows: dict[str, list], types: dict[str, Any]) -> Any:
    import pyarrow as pa

    return pa.table({name: pa.array(values, type=types[name]) for name, values in rows.items()})


def pattern_tables(anatomies: list[LayerAnatomy]) -> dict[str, Any]:
    import pyarrow as pa

    pattern = {"layer": [], "head": [], "dest_pos": [], "key_offset": [], "weight": [], "method": []}
    mass = {"layer": [], "head": [], "dest_pos": [], "bucket": [], "mass": []}
    width = {"layer": [], "head": [], "dest_pos": [], "width50": [], "width90": [], "decay_ratio": []}
    for anatomy in anatomies:
        for dest in anatomy.dests:
            row = engine.by_offset(anatomy.pattern, dest)
            sink, rest = engine.split_sink(row)
            buckets, w50, w90, decay = engine.masses(rest), engine.widths(rest, 0.5), engine.widths(rest, 0.9), engine.decay_ratio(rest)
            buckets = {"sink": sink, **buckets}
            for head in range(row.shape[0]):
                weights = row[head].tolist()
                pattern["layer"] += [anatomy.layer] * len(weights)
                pattern["head"] += [head] * len(weights)
                pattern["dest_pos"] += [dest] * len(weights)
                pattern["key_offset"] += list(range(len(weights)))
                pattern["weight"] += weights
                pattern["method"] += [anatomy.method] * len(weights)
                for name in buckets:
                    for key, value in (("layer", anatomy.layer), ("head", head), ("dest_pos", dest), ("bucket", name), ("mass", float(buckets[name][head]))):
                        mass[key].append(value)
                for key, value in (("layer", anatomy.layer), ("head", head), ("dest_pos", dest), ("width50", int(w50[head])),
                                   ("width90", int(w90[head])), ("decay_ratio", float(decay[head]))):
                    width[key].append(value)
    i32, f64, s = pa.int32(), pa.float64(), pa.string()
    return {
        "first_layer_heads_pattern": _table(pattern, {"layer": i32, "head": i32, "dest_pos": i32, "key_offset": i32, "weight": f64, "method": s}),
        "first_layer_heads_mass": _table(mass, {"layer": i32, "head": i32, "dest_pos": i32, "bucket": s, "mass": f64}),
        "first_layer_heads_width": _table(width, {"layer": i32, "head": i32, "dest_pos": i32, "width50": i32, "width90": i32, "decay_ratio": f64}),
    }


def normaliser_table(anatomies: list[LayerAnatomy], bin_size: int, first_pos: int) -> Any:
    import pyarrow as pa
    import torch

    rows = {"layer": [], "head": [], "set_name": [], "pos": [], "pos_end": [], "n": [], "mean": [], "median": [], "q25": [], "q75": []}
    for anatomy in anatomies:
        by_set: dict[str, list] = {}
        for set_name, sample in anatomy.normaliser:
            by_set.setdefault(set_name, []).append(sample)
        for set_name, samples in sorted(by_set.items()):
            length = max(sample.shape[-1] for sample in samples)
            for start in range(max(1, first_pos), length, bin_size):
                stop = min(start + bin_size, length)
                for head in range(anatomy.pattern.shape[0]):
                    values = torch.cat([sample[head, start:stop] for sample in samples])
                    if not values.numel():
                        continue
                    quantiles = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype)).tolist()
                    for key, value in (("layer", anatomy.layer), ("head", head), ("set_name", set_name), ("pos", start), ("pos_end", stop - 1),
                                       ("n", int(values.numel())), ("mean", float(values.mean())), ("median", quantiles[1]),
                                       ("q25", quantiles[0]), ("q75", quantiles[2])):
                        rows[key].append(value)
    i32, f64 = pa.int32(), pa.float64()
    return _table(rows, {"layer": i32, "head": i32, "set_name": pa.string(), "pos": i32, "pos_end": i32, "n": pa.int64(),
                         "mean": f64, "median": f64, "q25": f64, "q75": f64})


def _spread(anatomy: LayerAnatomy, head: int, first_pos: int) -> tuple[float, float]:
    """(interquartile range over median, median of the last quarter of positions over the first
    quarter's) of the normaliser: how steady it is across documents and along positions."""
    import torch

    samples = [sample[head, max(1, first_pos):] for _, sample in anatomy.normaliser if sample.shape[-1] > max(1, first_pos) + 3]
    if not samples:
        return float("nan"), float("nan")
    values = torch.cat(samples)
    q25, q50, q75 = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype)).tolist()
    quarter = max(1, min(sample.shape[-1] for sample in samples) // 4)
    early = torch.cat([sample[:quarter] for sample in samples]).median()
    late = torch.cat([sample[-quarter:] for sample in samples]).median()
    return (q75 - q25) / q50 if q50 else float("nan"), float(late / early) if early else float("nan")


def class_table(anatomies: list[LayerAnatomy], first_pos: int) -> Any:
    from analyses.core.tables import arrow_table
    from analyses.first_layer_heads import SCORE_COLUMNS, SPEC

    declared = SPEC.table("first_layer_heads_class")
    rows: dict[str, list] = {name: [] for name, _ in declared.columns}
    for anatomy in anatomies:
        for summary in anatomy.heads:
            iqr_ratio, trend = _spread(anatomy, summary.head, first_pos)
            verdict = summary.verdict
            values = {
                "layer": anatomy.layer, "head": summary.head, "class": summary.head_class, "method": anatomy.method,
                "local_mass": summary.masses["self"] + summary.masses["prev_1_5"], "mid_mass": summary.masses["prev_6_50"],
                "far_mass": summary.masses["beyond_50"], "width50": summary.width50, "width90": summary.width90, "decay_ratio": summary.decay,
                "duplicate_score": summary.duplicate_score, "duplicate_pairs": anatomy.duplicate_pairs,
                "normaliser_median": summary.normaliser_median, "normaliser_iqr_ratio": iqr_ratio, "normaliser_late_over_early": trend,
                "ln_scale_mean": anatomy.scale_mean, "ln_scale_std": anatomy.scale_std, "sink_mass": summary.masses["sink"],
                "margin": verdict.margin, "runner_up": verdict.runner_up, "runner_up_margin": verdict.runner_up_margin, "n_docs": summary.n_docs,
            }
            for score in SCORE_COLUMNS:
                estimate, low, high = summary.scores[score]
                values.update({f"{score}_score": estimate, f"{score}_low": low, f"{score}_high": high})
            for name in rows:
                rows[name].append(values[name])
    return arrow_table(declared, rows)


def intervals_table(anatomies: list[LayerAnatomy], thresholds: Any) -> Any:
    """The class scores in long form for drawing: per head and score, its estimate, the ends of its
    95% interval over documents and the score's threshold, one curve each (prefixed with the layer
    when more than one layer is analysed)."""
    from analyses.core.tables import arrow_table
    from analyses.first_layer_heads import SCORE_COLUMNS, SPEC

    declared = SPEC.table("first_layer_heads_intervals")
    rows: dict[str, list] = {name: [] for name, _ in declared.columns}
    several = len(anatomies) > 1
    for anatomy in anatomies:
        for summary in anatomy.heads:
            for score in SCORE_COLUMNS:
                estimate, low, high = summary.scores[score]
                for bound, value in (("estimate", estimate), ("low", low), ("high", high), ("threshold", thresholds.of(score))):
                    curve = f"layer {anatomy.layer} {bound}" if several else bound
                    for name, item in zip(rows, (anatomy.layer, summary.head, score, curve, value)):
                        rows[name].append(item)
    return arrow_table(declared, rows)


def terms_table(anatomies: list[LayerAnatomy]) -> Any:
    """Additive layers only: per head and destination, the spread (std over the visible keys) of
    each term of the positional score; the largest says what shapes the pattern."""
    import pyarrow as pa

    rows = {"layer": [], "head": [], "dest_pos": [], "term": [], "spread": []}
    for anatomy in anatomies:
        if anatomy.terms is None:
            continue
        for dest in anatomy.dests:
            for name, values in anatomy.terms.items():
                spread = values[:, dest, : dest + 1].double().std(-1, unbiased=False)
                for head in range(values.shape[0]):
                    for key, value in (("layer", anatomy.layer), ("head", head), ("dest_pos", dest), ("term", name), ("spread", float(spread[head]))):
                        rows[key].append(value)
    return _table(rows, {"layer": pa.int32(), "head": pa.int32(), "dest_pos": pa.int32(), "term": pa.string(), "spread": pa.float64()})
