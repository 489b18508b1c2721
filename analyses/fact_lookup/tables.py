"""The result tables of fact-lookup (long format) and the builder of each from numpy arrays."""
from __future__ import annotations

from typing import Any

from analyses.core.contract import ResultTable

TABLES = (
    ResultTable(
        "fact_lookup_entities",
        (("input_id", "INTEGER"), ("entity", "VARCHAR"), ("attribute", "VARCHAR"), ("predicted_among_answers", "VARCHAR"),
         ("correct_logprob", "DOUBLE"), ("top1_among_answers_correct", "BOOLEAN"), ("answer_set_prob", "DOUBLE"),
         ("correct_within_set_prob", "DOUBLE"), ("top1_token", "VARCHAR"), ("top1_token_id", "INTEGER"), ("top1_prob", "DOUBLE"),
         ("top1_is_correct", "BOOLEAN"), ("n_name_tokens", "INTEGER"), ("last_name_pos", "INTEGER")),
        "per entity, at the final position of the clean run: log p(correct answer token); the attribute value whose answer token is "
        "most probable among the answer tokens only (predicted_among_answers); answer_set_prob = p summed over every answer token; "
        "correct_within_set_prob = p(correct) / answer_set_prob; the model's own top-1 over the whole vocabulary (token, id, p) "
        "and whether it is the correct answer token",
    ),
    ResultTable(
        "fact_lookup_probe",
        (("site", "VARCHAR"), ("layer", "INTEGER"), ("measure", "VARCHAR"), ("accuracy", "DOUBLE"), ("ci_low", "DOUBLE"),
         ("ci_high", "DOUBLE"), ("p_value", "DOUBLE"), ("n_permutations", "INTEGER"), ("n_entities", "INTEGER"), ("folds", "INTEGER")),
        "held-out k-fold accuracy at the last name token; measure: probe (ci: 95% bootstrap interval over entities; p_value: "
        "(1 + #null >= accuracy) / (1 + n_permutations)), control (mean of the permutation null: the same probe refitted on "
        "n_permutations label shuffles, same folds; ci: the null's 2.5-97.5 percentiles), null_q95 (the null's 95th percentile) "
        "or majority (baseline)",
    ),
    ResultTable(
        "fact_lookup_probe_null",
        (("site", "VARCHAR"), ("layer", "INTEGER"), ("permutation", "INTEGER"), ("accuracy", "DOUBLE")),
        "the permutation null of fact_lookup_probe: held-out accuracy of the probe refitted on each seeded label shuffle",
    ),
    ResultTable(
        "fact_lookup_concat",
        (("layer", "INTEGER"), ("head", "INTEGER"), ("attention", "DOUBLE"), ("attention_low", "DOUBLE"), ("attention_high", "DOUBLE"),
         ("n_entities", "INTEGER")),
        "attention from the last name token to the earlier name tokens (summed), mean over entities with multi-token names, "
        "with its 95% bootstrap interval over those entities (_low, _high)",
    ),
    ResultTable(
        "fact_lookup_intervals",
        (("measure", "VARCHAR"), ("layer", "INTEGER"), ("curve", "VARCHAR"), ("value", "DOUBLE"), ("n_entities", "INTEGER")),
        "per layer, attention averaged over the layer's heads, in long form for the charts: its mean over entities (curve "
        "estimate) and the ends of its 95% bootstrap interval over entities (low, high); measure name_attention: from the last "
        "name token to the earlier name tokens (multi-token names), final_to_name: from the final token to the name tokens",
    ),
    ResultTable(
        "fact_lookup_hidden",
        (("hidden_through", "INTEGER"), ("probe_layer", "INTEGER"), ("measure", "VARCHAR"), ("accuracy", "DOUBLE"),
         ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("p_value", "DOUBLE")),
        "probe accuracy at probe_layer's resid_post when the last name token cannot attend to the earlier name tokens in layers "
        "0..hidden_through; hidden_through -1 = nothing hidden; measures, intervals and p-values as in fact_lookup_probe",
    ),
    ResultTable(
        "fact_lookup_ablation",
        (("component", "VARCHAR"), ("layer", "INTEGER"),
         ("logprob_drop", "DOUBLE"), ("logprob_drop_low", "DOUBLE"), ("logprob_drop_high", "DOUBLE"),
         ("set_mass_drop", "DOUBLE"), ("set_mass_drop_low", "DOUBLE"), ("set_mass_drop_high", "DOUBLE"),
         ("within_set_drop", "DOUBLE"), ("within_set_drop_low", "DOUBLE"), ("within_set_drop_high", "DOUBLE"),
         ("top1_among_answers_clean", "DOUBLE"), ("top1_among_answers_ablated", "DOUBLE"), ("top1_among_answers_drop", "DOUBLE"),
         ("top1_vocab_clean", "DOUBLE"), ("top1_vocab_ablated", "DOUBLE"), ("n_entities", "INTEGER")),
        "component output at the last name token replaced by its mean over the table's entities, at the final position, means "
        "over entities with 95% bootstrap intervals (_low, _high): logprob_drop = drop in log p(correct) = set_mass_drop (drop in "
        "log of the probability on the whole answer set: leaving the set) + within_set_drop (drop in log p(correct) renormalised "
        "within the set: the choice among the answers), exactly; top-1 accuracy among the answer tokens only and over the whole vocabulary",
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
        (("layer", "INTEGER"), ("head", "INTEGER"), ("attn_to_name", "DOUBLE"), ("attn_to_name_low", "DOUBLE"), ("attn_to_name_high", "DOUBLE"),
         ("direct_effect", "DOUBLE"), ("direct_effect_low", "DOUBLE"), ("direct_effect_high", "DOUBLE"), ("n_entities", "INTEGER")),
        "from the final position: summed attention to the name tokens, and the head's direct effect on the correct answer's logit "
        "minus the mean of the other answers' (final norm recomputed without the head's output); means over entities with 95% "
        "bootstrap intervals over entities (_low, _high)",
    ),
    ResultTable(
        "fact_lookup_prompts",
        (("prompt", "VARCHAR"), ("chosen", "BOOLEAN"), ("answer_set_prob", "DOUBLE"), ("answer_set_low", "DOUBLE"), ("answer_set_high", "DOUBLE"),
         ("top1_in_set", "DOUBLE"), ("top1_in_set_low", "DOUBLE"), ("top1_in_set_high", "DOUBLE"), ("among_answers_correct", "DOUBLE"),
         ("n_entities", "INTEGER"), ("example", "VARCHAR")),
        "the candidate prompts measured before the run (parameter prompt; auto chooses the highest answer_set_prob): over "
        "n_entities evenly spread entities, at the final position, the mean probability on the whole answer set and the share "
        "whose top-1 over the vocabulary is an answer token, with 95% bootstrap intervals (_low, _high); among_answers_correct: "
        "share right among the answer tokens (reported, not used to choose); example: the first sampled entity's prompt",
    ),
    ResultTable(
        "fact_lookup_summary",
        (("line", "INTEGER"), ("finding", "VARCHAR")),
        "what the run supports, one line each, written from the other tables (scores with their intervals and p-values)",
    ),
    ResultTable(
        "fact_lookup_recombined",
        (("name", "VARCHAR"), ("first_of", "INTEGER"), ("last_of", "INTEGER")),
        "made-up names: first name of input first_of with the last name of input last_of",
    ),
)


def arrow_table(name: str, columns: dict[str, Any]) -> Any:
    """An Arrow table of one declared result table (the one builder, analyses.core.tables); NaN is null."""
    from analyses.core.tables import arrow_table as build

    declared = next(table for table in TABLES if table.name == name)
    return build(declared, {column: columns[column] for column, _ in declared.columns}, nan_is_null=True)
