"""Explain fitted estimators: gradient attributions, LIME, SHAP, TCAV, attention.

Every explainer is built as ``Explainer(estimator, **settings)`` and
returns an :class:`Explanation` from ``explain(X, target=None)``. The
gradient methods need one of our networks (or a pipeline ending in one);
the model-agnostic ones take any fitted scikit-learn estimator or pipeline.
captum, shap and lime are not imported at run time.
"""

import importlib

from sklears_neural.explain._base import Explainer
from sklears_neural.explain._explanation import Explanation

# Each method's module is imported on first use: TCAV and KernelSHAP pull
# in scikit-learn models that a saliency map does not need.
_METHODS = {
    "Saliency": "gradients",
    "IntegratedGradients": "gradients",
    "SmoothGrad": "gradients",
    "GuidedBackprop": "gradients",
    "LRP": "lrp",
    "LimeExplainer": "lime",
    "KernelShapExplainer": "kernel_shap",
    "PermutationImportance": "permutation",
    "TCAV": "tcav",
    "AttentionMap": "attention",
}

__all__ = ["Explainer", "Explanation", *_METHODS]


def __getattr__(name):
    if name in _METHODS:
        module = importlib.import_module(f"sklears_neural.explain.{_METHODS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
