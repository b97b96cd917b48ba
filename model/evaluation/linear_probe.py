"""Linear probes on frozen features, the paper's protocol (UCF101 / ESC-50).

Standardise the features, fit a linear classifier on the training split, report
accuracy on the test split; the regularisation strength is chosen by cross-validation
on the training split only.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from model.evaluation.errors import MetricsError


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of a linear SVM on standardised frozen features (C chosen by 3-fold CV on train).

    Returns {"accuracy", "chance" (majority class of the test split), "classes", "C"}.
    """
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise MetricsError("features and labels differ in length")
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise MetricsError(f"a linear probe needs at least two classes, got {classes.tolist()}")
    pipeline = make_pipeline(StandardScaler(), LinearSVC(max_iter=5000, random_state=seed))
    min_class = int(np.min(np.unique(train_y, return_counts=True)[1]))
    folds = min(3, min_class)
    with warnings.catch_warnings():
        # An SVM on a small probe set may stop at max_iter; the accuracy still stands.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if folds >= 2:
            search = GridSearchCV(
                pipeline,
                {"linearsvc__C": [0.01, 0.1, 1.0]},
                cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            )
            search.fit(train_x, train_y)
            model, c_value = search.best_estimator_, search.best_params_["linearsvc__C"]
        else:
            model, c_value = pipeline.fit(train_x, train_y), 1.0
    accuracy = float((model.predict(test_x) == test_y).mean())
    _, counts = np.unique(test_y, return_counts=True)
    return {
        "accuracy": accuracy,
        "chance": float(counts.max() / counts.sum()),
        "classes": len(classes),
        "C": float(c_value),
    }
