"""The model an explainer explains: which output, in which input space.

Two views of a fitted estimator:

- :class:`TorchModel`, for the gradient methods: a float64 copy of one of
  our networks, as a differentiable function from the input *as the user
  passes it* (rows, images, sequences; a pipeline's raw input) to the
  explained outputs. Preprocessing steps of a :class:`~sklearn.pipeline.Pipeline`
  become part of that function where they are affine (scalers, PCA); any
  other step makes the pipeline non-differentiable, and the error says to
  use a model-agnostic method.
- :class:`PredictFunction`, for the model-agnostic methods (KernelSHAP,
  LIME, permutation importance, TCAV's random baselines): any fitted
  scikit-learn estimator or pipeline as a NumPy function of flat 2-D rows.

Both resolve ``output`` the same way: a classifier's ``predict_proba``
columns (``"probability"``) or its raw scores (``"logit"``: the log-odds
``-z, z`` of a binary classifier, the softmax's logits of a multiclass one),
and a regressor's predictions (``"prediction"``).
"""

import copy
from numbers import Integral

import numpy as np
import scipy.sparse as sp
import torch
from sklearn import config_context
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_array, check_is_fitted

from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.inputs import TABULAR, ArrayInput, SequenceInput

__all__ = ["PredictFunction", "TorchModel", "resolve_targets", "split_pipeline"]

OUTPUTS = ("auto", "probability", "logit")


def split_pipeline(estimator):
    """``(preprocessing steps, final estimator)``; no steps for a bare estimator."""
    if isinstance(estimator, Pipeline):
        steps = [(name, step) for name, step in estimator.steps[:-1]
                 if step is not None and step != "passthrough"]
        return steps, estimator.steps[-1][1]
    return [], estimator


def _check_fitted(estimator):
    _, final = split_pipeline(estimator)
    check_is_fitted(final)


def _resolve_output(final, output):
    classifier = is_classifier(final)
    if output == "auto":
        return "probability" if classifier else "prediction"
    if output not in OUTPUTS:
        raise ValueError(
            f"output={output!r} is not one of {', '.join(map(repr, OUTPUTS))}."
        )
    if not classifier:
        raise ValueError(
            f"output={output!r} applies to classifiers; a regressor's explained "
            "output is its prediction. Leave output='auto'."
        )
    return output


def _output_names(final, n_outputs):
    if hasattr(final, "classes_"):
        return np.asarray(final.classes_).tolist()
    return [f"y{k}" for k in range(n_outputs)]


def generated_feature_names(feature_shape):
    """Names for the flattened features of one sample of ``feature_shape``.

    ``x3`` for rows, ``x[c,h,w]`` for images and other N-D samples.
    """
    if len(feature_shape) == 1:
        return [f"x{i}" for i in range(feature_shape[0])]
    return ["x[" + ",".join(map(str, index)) + "]" for index in np.ndindex(*feature_shape)]


def _sequence_feature_names(n_steps, n_features):
    return [f"t{t}:x{f}" for t in range(n_steps) for f in range(n_features)]


def _frame_names(X):
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    return [str(c) for c in columns]


# -- model-agnostic view ------------------------------------------------------------


class PredictFunction:
    """A fitted estimator (or pipeline) as ``f(rows) -> outputs``, NumPy to NumPy.

    Samples are flattened to rows (``(n, C, H, W)`` images become
    ``(n, C*H*W)``) so that methods that perturb features see one feature
    axis; :meth:`__call__` restores each sample's shape before calling the
    estimator.

    Rows reach an estimator fitted on a DataFrame as a DataFrame with its
    columns, so that scikit-learn does not warn about missing feature names
    on every call.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
    output : {"auto", "probability", "logit"}
    perturbed : bool, default=False
        Rows are built from input that was checked already (perturbation
        methods mix the explained samples with background or training
        data): scikit-learn's finiteness checks are skipped
        (``assume_finite``), which would otherwise scan each of millions of
        synthetic values again.

    Attributes
    ----------
    output : str
        ``"probability"``, ``"logit"`` or ``"prediction"``.
    classifier : bool
    layout : {"tabular", "image", "sequence"}
        Of the samples seen by :meth:`prepare`: from the input kind of one
        of our networks, else from the rank of a sample.
    """

    def __init__(self, estimator, output="auto", *, perturbed=False):
        _check_fitted(estimator)
        self.estimator = estimator
        _, self.final = split_pipeline(estimator)
        self.classifier = is_classifier(self.final)
        self.output = _resolve_output(self.final, output)
        self.perturbed = perturbed
        self.sample_shape = None
        self.output_names = None
        self.layout = "tabular"

    def prepare(self, X):
        """``X`` as float64 rows ``(n, n_values)``, and its feature names.

        Remembers the shape of one sample, so that rows are reshaped back
        before the estimator sees them.
        """
        names = _frame_names(X)
        if sp.issparse(X):
            X = X.toarray()
        if isinstance(X, (list, tuple)) and X and np.ndim(X[0]) == 2 and len(
            {np.shape(x) for x in X}
        ) > 1:
            raise ValueError(
                "Model-agnostic explainers perturb a fixed set of features; got "
                "sequences of different lengths. Pad them into one 3-D array "
                "(n_samples, n_steps, n_features), or explain a torch estimator "
                "with a gradient method (IntegratedGradients), which takes ragged "
                "sequences."
            )
        X = check_array(X, dtype=np.float64, allow_nd=True, input_name="X")
        shape = X.shape[1:]
        if self.sample_shape is not None and shape != self.sample_shape:
            raise ValueError(
                f"X has samples of shape {shape}; this explainer was set up on "
                f"samples of shape {self.sample_shape}."
            )
        self.sample_shape = shape
        self.layout = self._layout(shape)
        if names is None:
            names = getattr(self.estimator, "feature_names_in_", None)
            names = None if names is None or len(shape) > 1 else [str(n) for n in names]
        if names is None:
            names = (_sequence_feature_names(*shape) if self.layout == "sequence"
                     else generated_feature_names(shape))
        return X.reshape(X.shape[0], -1), names

    def _layout(self, shape):
        if len(shape) == 1:
            return "tabular"
        kind = (self.final._input_kind() if isinstance(self.final, BaseNeuralEstimator)
                else None)
        if isinstance(kind, SequenceInput) or (kind is None and len(shape) == 2):
            return "sequence"
        return "image"

    def __call__(self, rows):
        """Explained outputs ``(n, n_outputs)`` of rows ``(n, n_values)``."""
        X = np.asarray(rows, dtype=np.float64)
        if self.sample_shape is not None and len(self.sample_shape) > 1:
            X = X.reshape((X.shape[0], *self.sample_shape))
        names = getattr(self.estimator, "feature_names_in_", None)
        if names is not None and X.ndim == 2 and X.shape[1] == len(names):
            import pandas as pd

            X = pd.DataFrame(X, columns=names, copy=False)
        if self.perturbed:
            with config_context(assume_finite=True):  # thread-local: safe in threads
                outputs = self._outputs(X)
        else:
            outputs = self._outputs(X)
        if self.output_names is None:
            self.output_names = _output_names(self.final, outputs.shape[1])
        return outputs

    def _outputs(self, X):
        estimator = self.estimator
        if self.output == "probability":
            return np.asarray(estimator.predict_proba(X), dtype=np.float64)
        if self.output == "prediction":
            predictions = np.asarray(estimator.predict(X), dtype=np.float64)
            return predictions.reshape(len(predictions), -1)
        if hasattr(estimator, "decision_function"):
            scores = np.asarray(estimator.decision_function(X), dtype=np.float64)
        elif isinstance(self.final, BaseNeuralEstimator):
            steps, final = split_pipeline(estimator)
            for _, step in steps:
                X = step.transform(X)
            scores = final._raw_outputs(X)
        else:
            raise ValueError(
                f"output='logit' needs decision_function; {type(self.final).__name__} "
                "has none. Use output='probability'."
            )
        if scores.ndim == 1 or scores.shape[1] == 1:
            scores = scores.reshape(-1, 1)
            if len(getattr(self.final, "classes_", ())) == 2:
                scores = np.hstack([-scores, scores])  # log-odds of each class
        return scores


# -- differentiable view ------------------------------------------------------------


def _affine_step(name, step):
    """A fitted affine transformer as a torch function of float64 rows, or None."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    def t(array):
        return None if array is None else torch.as_tensor(np.asarray(array, np.float64))

    if isinstance(step, StandardScaler):
        mean, scale = t(step.mean_), t(step.scale_)
        return lambda x: (x - mean if mean is not None else x) / (
            scale if scale is not None else 1.0)
    if isinstance(step, RobustScaler):
        center, scale = t(step.center_), t(step.scale_)
        return lambda x: (x - center if center is not None else x) / (
            scale if scale is not None else 1.0)
    if isinstance(step, MinMaxScaler):
        if step.clip:
            return None
        scale, offset = t(step.scale_), t(step.min_)
        return lambda x: x * scale + offset
    if isinstance(step, MaxAbsScaler):
        scale = t(step.scale_)
        return lambda x: x / scale
    if type(step) is PCA:
        mean, components = t(step.mean_), t(step.components_)
        whiten = t(np.sqrt(step.explained_variance_)) if step.whiten else None
        return lambda x: ((x - mean) @ components.T) / (whiten if whiten is not None else 1.0)
    return None


def _differentiable_steps(steps, method):
    functions = []
    for name, step in steps:
        function = _affine_step(name, step)
        if function is None:
            raise TypeError(
                f"{method} differentiates through the pipeline, and its step "
                f"{name!r} ({type(step).__name__}) has no differentiable "
                "translation (StandardScaler, RobustScaler, MinMaxScaler without "
                "clip, MaxAbsScaler and PCA do). Use a model-agnostic explainer "
                "(KernelShapExplainer, LimeExplainer, PermutationImportance), which "
                "calls the whole pipeline, or explain the last step on "
                "pipeline[:-1].transform(X)."
            )
        functions.append(function)
    return functions


class TorchModel:
    """One of our fitted networks as a differentiable function of the user's input.

    Parameters
    ----------
    estimator : BaseNeuralEstimator or Pipeline ending in one
    output : {"auto", "probability", "logit"}
    method : str
        The explainer's name, for error messages.
    device : str or torch.device or None
        Where to compute; None: the network's own device.

    Attributes
    ----------
    module : torch.nn.Module
        A float64 copy of the fitted network in evaluation mode, its
        parameters frozen: the explainer may hook it without touching the
        estimator, which other threads may be using.
    output : str
    output_names : list
    """

    def __init__(self, estimator, output="auto", *, method="This explainer", device=None):
        steps, final = split_pipeline(estimator)
        if not isinstance(final, BaseNeuralEstimator):
            raise TypeError(
                f"{method} needs the gradients of a network: a fitted estimator of "
                "sklears_neural (MLP, CNN, RNN, Transformer, NeuralNet...) or a "
                f"Pipeline ending in one; got {type(final).__name__}. Any model "
                "can be explained with KernelShapExplainer, LimeExplainer or "
                "PermutationImportance."
            )
        check_is_fitted(final, "module_")
        self.kind = final._input_kind()
        if not isinstance(self.kind, (type(TABULAR), ArrayInput, SequenceInput)):
            raise TypeError(
                f"{method} differentiates the output with respect to float input; "
                f"{type(final).__name__} reads token ids, which have no gradient."
            )
        self.estimator = estimator
        self.final = final
        self.method = method
        self.steps = _differentiable_steps(steps, method)
        self.classifier = is_classifier(final)
        self.output = _resolve_output(final, output)
        module = final.module_
        if device is None:
            device = next(module.parameters(), torch.empty(0)).device
        self.device = torch.device(device)
        self.module = copy.deepcopy(module).to(device=self.device, dtype=torch.float64)
        self.module.eval()
        self.module.requires_grad_(False)
        self.n_outputs = getattr(final, "n_outputs_", None)
        self.output_names = None
        self.layout = "tabular"  # of the explained input, set by prepare()
        self.image_shape = None

    # -- input ---------------------------------------------------------------

    def prepare(self, X):
        """Validate ``X``: the explained input, its lengths and feature names.

        Returns
        -------
        x : ndarray, float64
            ``(n_samples, *feature_shape)`` as the user passed X: flat rows
            stay flat; ragged sequences are zero-padded to the longest.
        lengths : ndarray of int or None
            Sequence lengths, for sequence input.
        feature_names : list of str
        """
        names = _frame_names(X)
        final = self.final
        if self.steps or isinstance(self.estimator, Pipeline):
            if sp.issparse(X):
                X = X.toarray()
            x = check_array(X, dtype=np.float64, input_name="X")
            n_in = getattr(self.estimator, "n_features_in_", x.shape[1])
            if x.shape[1] != n_in:
                raise ValueError(
                    f"X has {x.shape[1]} features, but the pipeline was fitted with "
                    f"{n_in} features."
                )
            names = names or _names_in(self.estimator) or generated_feature_names(x.shape[1:])
            self.layout = "tabular"
            return x, None, names
        flat = _ndim(X) == 2
        valid = self.kind.validate(final, X, reset=False)
        lengths = None
        if isinstance(self.kind, SequenceInput):
            values = valid.values
            lengths = None if flat else valid.lengths  # flat rows: all full length
        else:
            values = valid.toarray() if sp.issparse(valid) else np.asarray(valid)
        x = np.asarray(values, dtype=np.float64)
        self.layout = "tabular" if flat else (
            "sequence" if isinstance(self.kind, SequenceInput) else "image")
        # Flat rows of images: the picture's shape, for plots.
        self.image_shape = values.shape[1:] if isinstance(self.kind, ArrayInput) else None
        if flat:
            x = x.reshape(x.shape[0], -1)
            names = names or _names_in(final) or generated_feature_names(x.shape[1:])
        elif isinstance(self.kind, SequenceInput):
            names = _sequence_feature_names(*x.shape[1:])
        else:
            names = generated_feature_names(x.shape[1:])
        return x, lengths, names

    def _final_sample_shape(self, width):
        final = self.final
        if isinstance(self.kind, ArrayInput):
            return tuple(final.input_shape_)
        if isinstance(self.kind, SequenceInput):
            n_step = final.n_step_features_
            return (width // n_step, n_step)
        return (width,)

    # -- forward -------------------------------------------------------------

    def tensor(self, x):
        """``x`` (NumPy or tensor) as a float64 tensor on the model's device."""
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = np.array(x)  # torch warns on read-only arrays (pandas' views)
        return torch.as_tensor(x, dtype=torch.float64, device=self.device)

    def network_inputs(self, x, lengths=None):
        """What the network's forward takes for explained input ``x`` (a tensor)."""
        z = x
        for step in self.steps:
            z = step(z)
        if z.ndim == 2:  # flat rows: the shape of one of the network's samples
            z = z.reshape((z.shape[0], *self._final_sample_shape(z.shape[1])))
        if isinstance(self.kind, SequenceInput):
            if lengths is not None:
                lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
                if int(lengths.min()) == z.shape[1]:
                    lengths = None  # full-length batch: no packing, as in training
            return (z, lengths)
        return z

    def raw(self, x, lengths=None, module=None):
        """The network's raw outputs ``(n, n_outputs)`` for explained input ``x``."""
        module = self.module if module is None else module
        return self.final._forward(module, self.network_inputs(x, lengths))

    def outputs_from_raw(self, raw):
        """Explained outputs from raw network outputs: probabilities, logits, predictions."""
        final = self.final
        if self.classifier:
            binary = raw.shape[1] == 1 and len(final.classes_) == 2
            if self.output == "probability":
                if final._is_multiclass():
                    outputs = torch.softmax(raw, dim=1)
                else:
                    p = torch.sigmoid(raw)
                    outputs = torch.cat([1 - p, p], dim=1) if binary else p
            else:
                outputs = torch.cat([-raw, raw], dim=1) if binary else raw
        else:
            outputs = torch.exp(raw) if getattr(final, "out_activation_", None) == "exp" else raw
        if self.output_names is None:
            self.output_names = _output_names(final, outputs.shape[1])
        return outputs

    def __call__(self, x, lengths=None, module=None):
        """Explained outputs ``(n, n_outputs)`` of explained input ``x`` (a tensor)."""
        return self.outputs_from_raw(self.raw(x, lengths, module))

    def predict(self, x, lengths=None, batch_size=1024):
        """Explained outputs as NumPy, without gradients, in batches of rows."""
        chunks = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                rows = slice(start, start + batch_size)
                part_lengths = None if lengths is None else lengths[rows]
                chunks.append(self(self.tensor(x[rows]), part_lengths).cpu().numpy())
        return np.concatenate(chunks)

    def gradient(self, x, targets, lengths=None, module=None):
        """d output[target] / d x for a batch: ``(grads, outputs)`` as tensors.

        Parameters
        ----------
        x : torch.Tensor of shape (n, *feature_shape)
        targets : torch.Tensor of shape (n,), int64
        lengths : array of int or None
        module : torch.nn.Module or None
            A hooked copy of :attr:`module` (guided backprop, LRP).
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), cudnn_rnn_backward(self.device):
            outputs = self(x, lengths, module)
            selected = outputs.gather(1, targets.to(outputs.device).view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(selected, x)
        return grads, outputs.detach()


def _ndim(X):
    """Dimensions of X as given; None for ragged collections."""
    if hasattr(X, "ndim"):
        return X.ndim
    try:
        return np.ndim(X)
    except ValueError:  # inhomogeneous: ragged sequences
        return None


def _names_in(estimator):
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


class cudnn_rnn_backward:
    """cuDNN runs an RNN's backward pass only in training mode: use the native one."""

    def __init__(self, device):
        self._flags = (torch.backends.cudnn.flags(enabled=False)
                       if device.type == "cuda" else None)

    def __enter__(self):
        if self._flags is not None:
            self._flags.__enter__()

    def __exit__(self, *exc):
        if self._flags is not None:
            self._flags.__exit__(*exc)


def resolve_targets(target, outputs, output_names, classifier):
    """Per-sample output indices for ``target``, or None to explain every output.

    Parameters
    ----------
    target : None, "all", a class label, an output index, or an array of them
        None: a classifier's predicted class per sample, a single-output
        regressor's output, every output of a multi-output regressor.
        For classifiers a target is a class label (from ``classes_``); for
        regressors an output index.
    outputs : ndarray of shape (n_samples, n_outputs)
        The explained outputs at the samples.
    output_names : list
    classifier : bool

    Returns
    -------
    ndarray of int of shape (n_samples,) or None
    """
    n, n_outputs = outputs.shape
    if target is None:
        if classifier:
            return np.argmax(outputs, axis=1)
        return np.zeros(n, dtype=np.intp) if n_outputs == 1 else None
    if isinstance(target, str) and target == "all":
        return None
    many = np.ndim(target) > 0 and not isinstance(target, str)
    wanted = list(target) if many else [target]
    if many and len(wanted) != n:
        raise ValueError(f"target has {len(wanted)} entries for {n} samples.")
    indices = np.array([_target_index(t, output_names, classifier, n_outputs)
                        for t in wanted], dtype=np.intp)
    return indices if many else np.full(n, indices[0], dtype=np.intp)


def _target_index(target, output_names, classifier, n_outputs):
    if classifier:
        for index, name in enumerate(output_names):
            if name == target or (isinstance(target, str) and str(name) == target):
                return index
        raise ValueError(
            f"target={target!r} is not a class of the estimator; its classes are "
            f"{list(output_names)}. Pass a class label, or target=None to explain "
            "each sample's predicted class."
        )
    if isinstance(target, Integral) and 0 <= target < n_outputs:
        return int(target)
    raise ValueError(
        f"target={target!r} is not an output index of this regressor, which has "
        f"{n_outputs} output(s): pass an int in [0, {n_outputs - 1}], 'all', or None."
    )
