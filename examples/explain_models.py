"""Explain three models and save the plots: why did each predict what it did?

- a CNN on digits (8x8 images): integrated-gradients heatmaps;
- an MLP pipeline on breast cancer (30 named features): a KernelSHAP
  summary over the test set and a LIME explanation of one patient;
- a Transformer reading digits row by row: attention rollout over the rows.

Everything runs on bundled data, on the CPU. Run
``python examples/explain_models.py [output folder]``; the PNG files (and
an HTML attention report) are written to the folder (default
``explain_plots``).
"""

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a script: files, not windows

import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklears_neural import CNNClassifier, MLPClassifier, TransformerClassifier  # noqa: E402
from sklears_neural.explain import (  # noqa: E402
    AttentionMap,
    IntegratedGradients,
    KernelShapExplainer,
    LimeExplainer,
)


def _save(figure, path):
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def explain_digits_cnn(out_dir, fast):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16, y, test_size=0.25, stratify=y, random_state=0)
    cnn = CNNClassifier(input_shape=(1, 8, 8), max_iter=3 if fast else 30, random_state=0)
    cnn.fit(X_train, y_train)
    print(f"digits CNN test accuracy: {cnn.score(X_test, y_test):.3f}")
    # Attributions of each predicted class's probability, from a black image.
    explained = IntegratedGradients(cnn, n_steps=16 if fast else 64).explain(X_test[:4])
    print(f"  integrated gradients: largest |convergence delta| "
          f"{abs(explained.convergence_delta).max():.1e}")
    return [_save(explained.plot("image"), out_dir / "digits_cnn_integrated_gradients.png")]


def explain_cancer_mlp(out_dir, fast):
    data = load_breast_cancer(as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, stratify=data.target, random_state=0)
    model = make_pipeline(StandardScaler(),
                          MLPClassifier(max_iter=50 if fast else 300, random_state=0))
    model.fit(X_train, y_train)
    print(f"breast cancer MLP test accuracy: {model.score(X_test, y_test):.3f}")
    # SHAP values of P(benign) over the test set, against a k-means summary
    # of the training set.
    shap = KernelShapExplainer(model, background=X_train, nsamples=256 if fast else 2048,
                               random_state=0)
    shap_values = shap.explain(X_test[: 10 if fast else 60], target=1)
    lime = LimeExplainer(model, training_data=X_train, num_samples=500 if fast else 5000,
                         random_state=0)
    one_patient = lime.explain(X_test[:1], target=1)
    print(f"  LIME surrogate local R^2: {one_patient.local_r2[0]:.2f}")
    return [
        _save(shap_values.plot("summary"), out_dir / "cancer_mlp_shap_summary.png"),
        _save(one_patient.plot("bar"), out_dir / "cancer_mlp_lime.png"),
    ]


def explain_digits_transformer(out_dir, fast):
    X, y = load_digits(return_X_y=True)
    rows = (X / 16).reshape(-1, 8, 8)  # each image read as 8 rows of 8 pixels
    X_train, X_test, y_train, y_test = train_test_split(
        rows, y, test_size=0.25, stratify=y, random_state=0)
    transformer = TransformerClassifier(max_iter=3 if fast else 40, random_state=0)
    transformer.fit(X_train, y_train)
    print(f"digits Transformer test accuracy: {transformer.score(X_test, y_test):.3f}")
    # Attention rolled out through both layers (Abnar & Zuidema, 2020).
    attention = AttentionMap(transformer, rollout=True).explain(X_test[:4])
    html = out_dir / "digits_transformer_attention.html"
    AttentionMap.to_html(attention, html)
    return [_save(attention.plot("sequence"), out_dir / "digits_transformer_attention.png"),
            html]


def main(out_dir="explain_plots", fast=False):
    """Fit, explain and save; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        written = (explain_digits_cnn(out_dir, fast) + explain_cancer_mlp(out_dir, fast)
                   + explain_digits_transformer(out_dir, fast))
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main(*sys.argv[1:2])
