"""Quickstart: a Pipeline + GridSearchCV over sklears-neural's MLPClassifier.

Fits on scikit-learn's bundled digits (nothing is downloaded) and prints the
held-out accuracy, exactly as one would with ``sklearn.neural_network``.
Run: ``python examples/quickstart.py``.
"""

import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklears_neural import MLPClassifier


def main():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    pipe = make_pipeline(
        StandardScaler(),
        MLPClassifier(max_iter=50, random_state=0),
    )
    grid = {
        "mlpclassifier__hidden_layer_sizes": [(64,), (128, 64)],
        "mlpclassifier__alpha": [1e-4, 1e-2],
    }
    search = GridSearchCV(pipe, grid, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_train, y_train)
    accuracy = search.score(X_test, y_test)
    print(f"best parameters: {search.best_params_}")
    print(f"cross-validated accuracy: {search.best_score_:.3f}")
    print(f"test accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
