"""Linear probes: multinomial logistic regression with stratified k-fold held-out accuracy, a
permutation null (the same probe refitted on many label shuffles), a p-value against it, a
bootstrap interval over entities and the majority baseline.

Features are standardised inside each fold (fit on the training part only), as scikit-learn's
StandardScaler does. The probe minimises C * sum(cross-entropy) + |W|^2 / 2 (intercept not
penalised): scikit-learn's LogisticRegression objective. All label sets (the true labels and every
shuffle) are fitted at once, batched, in the training rows' SVD basis, where the optimum is the
same (the weights lie in the span of the training rows) and Boehning's bound on the softmax
Hessian is diagonal: an accelerated majorise-minimise step per iteration, a few matrix products
for every shuffle together. The folds are fixed by the true labels; each shuffle is refitted on
the same folds (the question the null answers: what accuracy does this probe reach on these
folds when the labels carry no information about the features).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95


@dataclass(frozen=True)
class ProbeScore:
    """Held-out accuracy with its bootstrap interval (over entities), the accuracies of the
    label shuffles (the null), the p-value against them and the majority rate."""

    accuracy: float
    ci_low: float
    ci_high: float
    null: Any  # np.ndarray [n_permutations]
    p_value: float
    majority: float

    @property
    def control(self) -> float:
        """The null's mean: the accuracy the probe reaches by chance on these folds."""
        return float(self.null.mean()) if len(self.null) else float("nan")

    @property
    def null_q95(self) -> float:
        import numpy as np

        return float(np.quantile(self.null, CONFIDENCE)) if len(self.null) else float("nan")

    def null_interval(self) -> tuple[float, float]:
        import numpy as np

        if not len(self.null):
            return float("nan"), float("nan")
        low, high = np.quantile(self.null, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
        return float(low), float(high)


def _probe(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500, random_state=seed))


def fold_indices(labels: Any, folds: int, seed: int) -> list[tuple[Any, Any]]:
    """The (train, test) row indices of a seeded stratified k-fold split of the true labels."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


def label_sets(labels: Any, n_permutations: int, seed: int) -> Any:
    """[1 + n_permutations, N] int array: the true labels, then seeded shuffles of them."""
    import numpy as np

    labels = np.asarray(labels)
    shuffled = np.random.default_rng(seed).permuted(np.tile(labels, (n_permutations, 1)), axis=1)
    return np.concatenate([labels[None, :], shuffled])


def fit_batched(z: Any, onehot: Any, scale: Any, c: float, tol: float = 1e-5, max_iter: int = 20000) -> tuple[Any, Any]:
    """Multinomial logistic regression for every label set at once.

    z [n, r]: training features with orthogonal, centred columns (U S of the standardised rows);
    scale [r]: the singular values S; onehot [n, L, K] float64. Returns W [r, L, K] and b [L, K]
    minimising C * sum CE + |W|^2 / 2 for each label set (weights and intercepts centred over
    classes, as the penalty makes them at the optimum). Stops when no coordinate of any set moved
    by more than tol (relative, in the bound's metric) over an iteration."""
    import torch

    n, n_sets, k = onehot.shape
    root_w = (0.5 * c * scale**2 + 1.0).sqrt()[:, None, None]  # Boehning bound, diagonal in this basis
    m_w, m_b = root_w**2, 0.5 * c * n
    w = torch.zeros((z.shape[1], n_sets, k), dtype=torch.float64)
    b = torch.zeros((n_sets, k), dtype=torch.float64)
    y_w, y_b = w, b
    t = torch.ones(n_sets, dtype=torch.float64)
    z_t = z.T.contiguous()
    for step in range(max_iter):
        logits = (z @ y_w.reshape(z.shape[1], -1)).reshape(n, n_sets, k) + y_b
        residual = c * (torch.softmax(logits, -1) - onehot)
        # Rows of residual sum to zero over classes, so both gradients stay centred over classes.
        grad_w = (z_t @ residual.reshape(n, -1)).reshape(y_w.shape) + y_w
        grad_b = residual.sum(0)
        w_new, b_new = y_w - grad_w / m_w, y_b - grad_b / m_b
        # Restart the momentum of a label set whose step goes uphill (O'Donoghue and Candes).
        uphill = ((grad_w * (w_new - w)).sum((0, 2)) + (grad_b * (b_new - b)).sum(1)) > 0
        t_new = (1 + (1 + 4 * t * t).sqrt()) / 2
        beta = torch.where(uphill, 0.0, (t - 1) / t_new)
        w_prev, b_prev, w, b = w, b, w_new, b_new
        y_w = w + beta[None, :, None] * (w - w_prev)
        y_b = b + beta[:, None] * (b - b_prev)
        t = torch.where(uphill, 1.0, t_new)
        if step % 10 == 9:
            moved = max(float(((w - w_prev).abs() * root_w).max()), float((b - b_prev).abs().max()) * m_b**0.5)
            size = max(1.0, float((w.abs() * root_w).max()))
            if moved <= tol * size:
                break
    return w, b


def held_out_predictions(features: Any, sets: Any, folds: list[tuple[Any, Any]], c: float) -> Any:
    """[L, N] held-out predictions of the probe for every label set (rows of sets [L, N])."""
    import numpy as np
    import torch

    x = np.asarray(features, dtype=np.float64)
    n_classes = int(sets.max()) + 1
    predictions = np.zeros(sets.shape, dtype=np.int64)
    for train, test in folds:
        mean = x[train].mean(0)
        std = x[train].std(0)
        std[std < 10 * np.finfo(np.float64).eps] = 1.0  # as StandardScaler leaves constant features
        u, s, vt = np.linalg.svd((x[train] - mean) / std, full_matrices=False)
        keep = s > s[0] * 1e-10 if len(s) and s[0] > 0 else np.zeros(len(s), bool)
        z_train = torch.from_numpy(u[:, keep] * s[keep])
        z_test = torch.from_numpy(((x[test] - mean) / std) @ vt[keep].T)
        onehot = torch.nn.functional.one_hot(torch.from_numpy(sets[:, train].T.copy()), n_classes).double()
        w, b = fit_batched(z_train, onehot, torch.from_numpy(s[keep]), c)
        scores = (z_test @ w.reshape(w.shape[0], -1)).reshape(len(test), *b.shape) + b
        predictions[:, test] = scores.argmax(-1).numpy().T
    return predictions


def bootstrap_interval(correct: Any, n_bootstrap: int, seed: int) -> tuple[float, float]:
    """Percentile interval (CONFIDENCE) of the mean of a 0/1 vector over entities resampled with replacement."""
    import numpy as np

    correct = np.asarray(correct, dtype=np.float64)
    if not len(correct) or n_bootstrap < 1:
        return float("nan"), float("nan")
    rows = np.random.default_rng(seed).integers(0, len(correct), (n_bootstrap, len(correct)))
    means = correct[rows].mean(1)
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def p_value(observed: float, null: Any) -> float:
    """(1 + #null >= observed) / (1 + n): the permutation p-value, never zero."""
    import numpy as np

    null = np.asarray(null)
    return float((1 + int(np.sum(null >= observed - 1e-12))) / (1 + len(null)))


def score(features: Any, labels: Any, folds: int, c: float = 1.0, seed: int = 0, n_permutations: int = 100, n_bootstrap: int = 1000) -> ProbeScore:
    """Held-out accuracy on the true labels with its bootstrap interval, the same probe on
    n_permutations seeded shuffles of the labels (same folds), the p-value and the majority rate."""
    import numpy as np

    labels = np.asarray(labels)
    sets = label_sets(labels, n_permutations, seed)
    predictions = held_out_predictions(features, sets, fold_indices(labels, folds, seed), c)
    accuracies = (predictions == sets).mean(1)
    low, high = bootstrap_interval(predictions[0] == labels, n_bootstrap, seed)
    majority = float(np.bincount(labels).max() / len(labels))
    return ProbeScore(float(accuracies[0]), low, high, accuracies[1:], p_value(accuracies[0], accuracies[1:]), majority)


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
