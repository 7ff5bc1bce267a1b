"""Gradient attributions of our networks: saliency maps and their refinements.

Each method differentiates the explained output (``output``: a classifier's
probability by default, its logit with ``output="logit"``, a regressor's
prediction) with respect to the input as the user passes it, through a
float64 copy of the fitted network in evaluation mode.
"""

from sklears_neural.explain._base import GradientExplainer

__all__ = ["Saliency"]


class Saliency(GradientExplainer):
    """Saliency map: the gradient of the explained output with respect to the input.

    ``values[i] = |d f_t(x_i) / d x_i|`` (Simonyan et al., 2014), or the
    signed gradient with ``abs=False``. One forward and one backward pass per
    sample; the same as ``captum.attr.Saliency``.

    Explains ``output``: a classifier's ``predict_proba`` column of the
    target class by default, its logit with ``output="logit"``; a regressor's
    prediction.

    Parameters
    ----------
    estimator : fitted estimator of sklears_neural, or Pipeline ending in one
        Preprocessing steps must be affine (scalers, PCA) to be
        differentiated through.
    abs : bool, default=True
        Return the gradient's absolute value (captum's default).
    output : {"auto", "probability", "logit"}, default="auto"
        ``"auto"``: probabilities for classifiers, predictions for regressors.
    batch_size : int or "auto", default="auto"
        Samples per forward/backward pass; ``"auto"`` keeps a pass near
        2**20 input values.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklears_neural import MLPClassifier
    >>> from sklears_neural.explain import Saliency
    >>> X, y = load_iris(return_X_y=True)
    >>> model = MLPClassifier(max_iter=300, random_state=0).fit(X, y)
    >>> Saliency(model).explain(X[:5]).values.shape
    (5, 4)
    """

    _parameter_constraints: dict = {
        **GradientExplainer._parameter_constraints,
        "abs": ["boolean"],
    }

    def __init__(self, estimator, *, abs=True, output="auto", batch_size="auto"):
        self.estimator = estimator
        self.abs = abs
        self.output = output
        self.batch_size = batch_size

    def _attribute(self, model, x, targets, lengths):
        grads, _ = model.gradient(x, targets, lengths)
        return grads.abs() if self.abs else grads
