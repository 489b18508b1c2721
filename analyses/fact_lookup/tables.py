"""The result tables of fact-lookup (long format) and the builder of each from numpy arrays."""
from __future__ import annotations

from typing import Any

from analyses.core.contract import ResultTable

TABLES = (
    ResultTable(
        "fact_lookup_entities",
        (("input_id", "INTEGER"), ("entity", "VARCHAR"), ("attribute", "VARCHAR"), ("predicted", "VARCHAR"),
         ("correct_logprob", "DOUBLE"), ("top1_correct", "BOOLEAN"), ("n_name_tokens", "INTEGER"), ("last_name_pos", "INTEGER")),
        "per entity: the clean run's log p(correct answer token) at the final position and the top-1 among the attribute values' answer tokens",
    ),
    ResultTable(
        "fact_lookup_probe",
        (("site", "VARCHAR"), ("layer", "INTEGER"), ("measure", "VARCHAR"), ("accuracy", "DOUBLE"), ("n_entities", "INTEGER"), ("folds", "INTEGER")),
        "held-out k-fold accuracy at the last name token; measure: probe, control (shuffled labels) or majority (baseline)",
    ),
    ResultTable(
        "fact_lookup_concat",
        (("layer", "INTEGER"), ("head", "INTEGER"), ("attention", "DOUBLE"), ("n_entities", "INTEGER")),
        "attention from the last name token to the earlier name tokens (summed), mean over entities with multi-token names",
    ),
    ResultTable(
        "fact_lookup_hidden",
        (("hidden_through", "INTEGER"), ("probe_layer", "INTEGER"), ("measure", "VARCHAR"), ("accuracy", "DOUBLE")),
        "probe accuracy at probe_layer's resid_post when the last name token cannot attend to the earlier name tokens in layers 0..hidden_through; hidden_through -1 = nothing hidden",
    ),
    ResultTable(
        "fact_lookup_ablation",
        (("component", "VARCHAR"), ("layer", "INTEGER"), ("logprob_drop", "DOUBLE"), ("top1_clean", "DOUBLE"),
         ("top1_ablated", "DOUBLE"), ("top1_drop", "DOUBLE"), ("n_entities", "INTEGER")),
        "component output at the last name token replaced by its mean over the table's entities: mean drop in log p(correct) at the final position, top-1 accuracy among the answer tokens",
    ),
    ResultTable(
        "fact_lookup_norms",
        (("layer", "INTEGER"), ("names", "VARCHAR"), ("mean_norm", "DOUBLE"), ("std_norm", "DOUBLE"), ("n_names", "INTEGER")),
        "L2 norm of the MLP output at the last name token; names: known (the table) or made_up (first and last names recombined)",
    ),
    ResultTable(
        "fact_lookup_neurons",
        (("layer", "INTEGER"), ("neuron", "INTEGER"), ("alignment", "DOUBLE"), ("act_first_last", "DOUBLE"),
         ("act_first_other", "DOUBLE"), ("act_other_last", "DOUBLE"), ("and_score", "DOUBLE"), ("n_entities", "INTEGER")),
        "neurons whose output weights best align (max |cos|) with the layer's probe directions; activations at the last name token averaged over entities; and_score = first_last - mean(first_other, other_last)",
    ),
    ResultTable(
        "fact_lookup_heads",
        (("layer", "INTEGER"), ("head", "INTEGER"), ("attn_to_name", "DOUBLE"), ("direct_effect", "DOUBLE")),
        "from the final position: summed attention to the name tokens, and the head's direct effect on the correct answer's logit minus the mean of the other answers' (final norm recomputed without the head's output)",
    ),
    ResultTable(
        "fact_lookup_recombined",
        (("name", "VARCHAR"), ("first_of", "INTEGER"), ("last_of", "INTEGER")),
        "made-up names: first name of input first_of with the last name of input last_of",
    ),
)


def arrow_table(name: str, columns: dict[str, Any]) -> Any:
    """An Arrow table of one declared result table, typed from its declaration."""
    import pyarrow as pa

    types = {"INTEGER": pa.int32(), "DOUBLE": pa.float64(), "VARCHAR": pa.string(), "BOOLEAN": pa.bool_(), "BIGINT": pa.int64()}
    declared = next(table for table in TABLES if table.name == name).columns
    return pa.table({column: pa.array(list(columns[column]) if not hasattr(columns[column], "tolist") else columns[column].tolist(), type=types[kind], from_pandas=True) for column, kind in declared})
