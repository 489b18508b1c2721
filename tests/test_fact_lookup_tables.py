"""fact-lookup without a model: entity tables (reading, refusals, recombination) and the probe
module on planted features."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analyses.core.errors import BadInput
from analyses.fact_lookup import probes
from analyses.inputs.entities import ALL_ATHLETES, KNOWN_ATHLETES, check_counts, entity_inputs, load_entities, recombine, split_name


def test_shipped_tables_are_balanced_and_the_known_one_is_a_subset():
    everyone = load_entities(str(ALL_ATHLETES))
    counts = {value: sum(e.value == value for e in everyone) for value in ("baseball", "basketball", "football")}
    assert sum(counts.values()) == len(everyone) >= 300
    assert min(counts.values()) >= 0.9 * max(counts.values())
    known = load_entities(None)
    assert {e.name for e in known} <= {e.name for e in everyone}
    assert KNOWN_ATHLETES.is_file()


def test_inputs_carry_the_name_span():
    entities = load_entities(str(ALL_ATHLETES))[:5]
    for item, entity in zip(entity_inputs(entities), entities):
        start, end = item.meta["name_start"], item.meta["name_end"]
        assert item.text[start:end] == entity.name and item.source == "entities"


def test_recombined_names_never_coincide_with_a_real_entity():
    names = [e.name for e in load_entities(str(ALL_ATHLETES))]
    made_up = recombine(names)
    real = set(names)
    firsts = {split_name(n)[0] for n in names if split_name(n)}
    lasts = {split_name(n)[1] for n in names if split_name(n)}
    assert len(made_up) >= 0.95 * len(names)
    assert len({m.name for m in made_up}) == len(made_up)
    for item in made_up:
        assert item.name not in real
        first, last = split_name(item.name)
        assert first in firsts and last in lasts
        assert split_name(names[item.first_of])[0] == first and split_name(names[item.last_of])[1] == last
        assert item.first_of != item.last_of


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("one.csv", "entity,attribute\nA B,x\nC D,x\n", "at least 2"),
        ("missing.csv", "entity,attribute\nA B,x\nC D,\n", "no attribute"),
        ("short.csv", "entity,attribute\nA B,x\nC D\n", "fields"),
        ("dup.csv", "entity,attribute\nA B,x\nA B,y\n", "twice"),
        ("tpl.csv", "entity,attribute,template\nA B,x,no slot here\nC D,y,\n", "{entity}"),
        ("bad.jsonl", '{"entity": "A B", "attribute": "x"}\nnot json\n', "not a JSON object"),
        ("list.jsonl", '["A B", "x"]\n', "not a JSON object"),
    ],
)
def test_bad_tables_are_refused_with_one_line(tmp_path, name, text, message):
    with pytest.raises(BadInput) as error:
        load_entities(_write(tmp_path, name, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(BadInput, match="not a readable file"):
        load_entities(str(tmp_path / "nope.csv"))


def test_jsonl_with_templates_is_read(tmp_path):
    rows = [{"entity": "Ada Lovelace", "attribute": "maths", "template": "Q: {entity} worked in"}, {"entity": "Marie Curie", "attribute": "physics"}]
    entities = load_entities(_write(tmp_path, "t.jsonl", "\n".join(json.dumps(r) for r in rows)))
    assert entities[0].prompt == "Q: Ada Lovelace worked in" and "Marie Curie" in entities[1].prompt


def test_too_few_entities_per_value_is_refused():
    check_counts(["a"] * 3 + ["b"] * 3, 3)
    with pytest.raises(BadInput, match="b \\(2\\)"):
        check_counts(["a"] * 3 + ["b"] * 2, 3)
    with pytest.raises(BadInput, match="at least 2"):
        check_counts(["a"] * 5, 2)


def _planted(seed: int, signal: float, n: int = 150, d: int = 40, classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    directions = rng.standard_normal((classes, d))
    return (rng.standard_normal((n, d)) + signal * directions[labels]).astype(np.float32), labels, directions


def test_probe_finds_a_planted_direction_and_the_control_stays_at_chance():
    features, labels, directions = _planted(0, 1.5)
    scored = probes.score(features, labels, folds=5)
    assert scored.accuracy > 0.9
    assert scored.control < scored.majority + 0.15
    assert scored.majority == np.bincount(labels).max() / len(labels)
    learned = probes.directions(features, labels)
    centred = directions - directions.mean(0)
    cosines = np.sum(learned * centred / np.linalg.norm(centred, axis=1, keepdims=True), axis=1)
    assert (cosines > 0.5).all()


def test_probe_on_noise_is_at_chance():
    features, labels, _ = _planted(1, 0.0)
    assert probes.score(features, labels, folds=5).accuracy < 0.55


def test_batched_probe_predicts_as_scikit_learn_does_on_every_label_set():
    """The batched fit (all shuffles at once, SVD basis) against a plain scikit-learn pipeline per
    fold and per label set, fitted to convergence: the same held-out predictions."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features, labels, _ = _planted(3, 0.4, n=90, d=120)
    features[:, 5] = 2.0  # a constant feature, left unscaled as StandardScaler does
    folds = probes.fold_indices(labels, 4, 0)
    sets = probes.label_sets(labels, 5, 0)
    batched = probes.held_out_predictions(features, sets, folds, 0.5)
    reference = np.zeros_like(batched)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row, targets in enumerate(sets):
            for train, test in folds:
                scaler = StandardScaler().fit(features[train])
                model = LogisticRegression(C=0.5, max_iter=20000, tol=1e-10).fit(scaler.transform(features[train]), targets[train])
                reference[row, test] = model.predict(scaler.transform(features[test]))
    assert (batched == reference).all()
    assert (sets[0] == labels).all() and all(sorted(row) == sorted(labels) for row in sets)


def test_a_perfectly_predictable_label_has_the_smallest_p_value():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.standard_normal((60, 30))
    features[:, :3] += 20.0 * np.eye(3)[labels]
    scored = probes.score(features, labels, folds=5, n_permutations=200, seed=1)
    assert scored.accuracy == 1.0 and scored.ci_low == 1.0
    assert scored.p_value == 1 / 201
    assert len(scored.null) == 200 and scored.null_q95 < 0.6


def test_shuffled_labels_have_no_small_p_value_and_the_score_is_seeded():
    rng = np.random.default_rng(6)
    labels = rng.permutation(np.repeat([0, 1, 2], 20))
    features = rng.standard_normal((60, 30))
    first = probes.score(features, labels, folds=5, n_permutations=100, seed=2)
    again = probes.score(features, labels, folds=5, n_permutations=100, seed=2)
    assert first.p_value > 0.05
    assert first.ci_low <= first.accuracy <= first.ci_high
    assert first.accuracy == again.accuracy and (first.null == again.null).all() and first.p_value == again.p_value
    assert probes.p_value(0.5, [0.4, 0.5, 0.6]) == 3 / 4


def test_the_ablation_decomposition_adds_up_exactly():
    """log p(correct) = log mass(answer set) + log p(correct | set): the two drops sum to the total,
    and each equals a plain per-entity computation."""
    import math

    import torch

    from analyses.fact_lookup.lookup import decompose

    gen = torch.Generator().manual_seed(0)
    vocab = torch.randn(7, 50, generator=gen, dtype=torch.float64).log_softmax(-1)
    ablated_vocab = (vocab + torch.randn(7, 50, generator=gen, dtype=torch.float64)).log_softmax(-1)
    answers, labels = [3, 11, 40], torch.tensor([0, 2, 1, 1, 0, 2, 2])
    total, leaves, within = decompose(vocab[:, answers], ablated_vocab[:, answers], labels)
    assert np.abs(total - (leaves + within)).max() < 1e-12
    for row in range(7):
        p = [math.exp(vocab[row, a]) for a in answers]
        q = [math.exp(ablated_vocab[row, a]) for a in answers]
        k = int(labels[row])
        assert total[row] == pytest.approx(math.log(p[k]) - math.log(q[k]), abs=1e-12)
        assert leaves[row] == pytest.approx(math.log(sum(p)) - math.log(sum(q)), abs=1e-12)
        assert within[row] == pytest.approx(math.log(p[k] / sum(p)) - math.log(q[k] / sum(q)), abs=1e-12)


def test_the_stride_never_skips_the_first_four_layers():
    from analyses.fact_lookup.lookup import strided_layers

    assert strided_layers(30, 3) == [0, 1, 2, 3] + list(range(6, 30, 3))
    assert strided_layers(2, 5) == [0, 1]
    assert strided_layers(12, 1) == list(range(12))
