"""Linear probes: multinomial logistic regression with stratified k-fold held-out accuracy, a
random-label control (the same probe on shuffled labels) and the majority baseline.

Features are standardised inside each fold (fit on the training part only). Activations are
passed as the float32 arrays the capture wrote; nothing is copied before the fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProbeScore:
    accuracy: float
    control: float
    majority: float


def _probe(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500, random_state=seed))


def held_out_accuracy(features: Any, labels: Any, folds: int, c: float, seed: int) -> float:
    """Mean accuracy over the held-out parts of a stratified k-fold split."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    correct = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in splitter.split(features, labels):
            probe = _probe(c, seed).fit(features[train], labels[train])
            correct += int(np.sum(probe.predict(features[test]) == labels[test]))
    return correct / len(labels)


def score(features: Any, labels: Any, folds: int, c: float = 1.0, seed: int = 0) -> ProbeScore:
    """Held-out accuracy on the true labels and on a seeded permutation of them, and the majority rate."""
    import numpy as np

    labels = np.asarray(labels)
    shuffled = np.random.default_rng(seed).permutation(labels)
    majority = float(np.bincount(labels).max() / len(labels))
    return ProbeScore(held_out_accuracy(features, labels, folds, c, seed), held_out_accuracy(features, shuffled, folds, c, seed), majority)


def directions(features: Any, labels: Any, c: float = 1.0, seed: int = 0) -> Any:
    """Per class, the probe's weight vector in the raw feature space [n_classes, d], unit norm
    (fit on all rows; for two classes the second row is the negated first)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = _probe(c, seed).fit(features, labels)
    scaler, model = probe[0], probe[-1]
    weights = model.coef_ / scaler.scale_[None, :]
    if weights.shape[0] == 1:
        weights = np.concatenate([-weights, weights])
    return weights / np.linalg.norm(weights, axis=1, keepdims=True).clip(1e-12)
