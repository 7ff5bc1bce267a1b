"""ONNX export: the network through ``torch.onnx``, the prediction heads by hand.

:func:`to_onnx` exports a frozen copy of ``module_`` with
``torch.onnx.export(..., dynamo=True)`` (opset :data:`OPSET`, a dynamic batch
axis) and appends what turns its output into predictions, written with
``onnx.helper``:

========================= =====================================================
estimator                 graph outputs (besides ``raw_output``)
========================= =====================================================
classifier, multiclass    ``label`` (N,), ``probabilities`` (N, n_classes):
                          softmax, then the class at the first argmax
classifier, binary        ``label`` (N,), ``probabilities`` (N, 2):
                          logistic, ``[1 - p, p]``, the second class when p > 0.5
classifier, multilabel    ``label`` (N, n_labels) int64 0/1 indicators,
                          ``probabilities`` (N, n_labels)
regressor                 ``prediction`` (N,) or (N, n_outputs); ``exp`` of the
                          network's output for ``loss="poisson"``
========================= =====================================================

The input is ``X``, float32, of shape (N, n_features_in_). ``raw_output`` is
the network's own output (logits, or the regression link's input); the
onnxruntime backend reads it. Labels are the values of ``classes_``: int64
for integer classes, double for float classes, strings for string classes
(a ``Gather`` on a constant holding them). Floats are float32, or float64
for a model trained with ``precision="float64"`` (which computes in float64
after casting ``X``).

Why dynamo: the TorchScript exporter (``dynamo=False``) still works in
torch 2.13 and is ~50x faster (0.05 s against 2.5 s for an MLP), but torch
deprecates it and announces its removal; the torch.export-based exporter
is the supported one. The onnxruntime backend exports once per fitted model
and keeps the bytes through pickling and ``save``.
"""

import contextlib
import copy
import hashlib
import logging
import re
import warnings

import numpy as np
import torch
from torch.nn.utils import parametrize

from sklears_neural._version import __version__

__all__ = [
    "OPSET",
    "export_network",
    "fingerprint",
    "head_signature",
    "rbm_to_onnx",
    "to_onnx",
]

#: ONNX opset of exported graphs (LayerNormalization needs 17).
OPSET = 18

#: Bump when the graphs this module writes change: stored graphs of an
#: older layout are then exported again.
_LAYOUT = 1

_INSTALL_HINT = "pip install sklears-neural[onnx]"


def _require_onnx(exporter=True):
    try:
        import onnx  # noqa: F401

        if exporter:
            import onnxscript  # noqa: F401  # torch.onnx.export(dynamo=True) needs it
    except ImportError as exc:
        raise ImportError(
            f"to_onnx needs the onnx and onnxscript packages ({exc.name} is "
            f"missing): {_INSTALL_HINT}."
        ) from exc


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's chatter: deprecation notes from its own internals,
    and log lines about optional packages (torchvision) it looks for."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


class _Float32Input(torch.nn.Module):
    """The frozen network behind a float32 input: cast to its dtype, then run."""

    def __init__(self, network, dtype):
        super().__init__()
        self.network = network
        self.dtype = dtype

    def forward(self, X):
        return self.network(X.to(self.dtype))


def _frozen_copy(module):
    """A CPU copy in evaluation mode, parametrizations (spectral norm) baked in.

    Not ``parametrize.remove_parametrizations`` on a deep copy: the copy
    shares its injected ``Parametrized*`` class with the original, and
    removal deletes the parametrized property from that class, which would
    break the estimator's own module. Each copy is given back its plain
    class instead, and the tensor the parametrization computes in
    evaluation mode (no power iteration) as a plain parameter.
    """
    frozen = copy.deepcopy(module).cpu().eval()
    with torch.no_grad():
        for m in list(frozen.modules()):
            if not parametrize.is_parametrized(m):
                continue
            values = {
                name: getattr(m, name).detach().clone() for name in m.parametrizations
            }
            m.__class__ = parametrize.type_before_parametrizations(m)
            del m._modules["parametrizations"]
            for name, value in values.items():
                m.register_parameter(
                    name, torch.nn.Parameter(value, requires_grad=False)
                )
    return frozen


def export_network(module, n_features):
    """``module`` as an ONNX model: input ``X`` (float32), output ``raw_output``.

    Parameters
    ----------
    module : torch.nn.Module
        Taking ``(batch, n_features)``.
    n_features : int

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    ValueError
        If ``torch.onnx.export`` fails; the message names the layers this
        library does not know, where there are any.
    """
    _require_onnx()
    frozen = _frozen_copy(module)
    param = next(frozen.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    wrapper = _Float32Input(frozen, dtype).eval()
    # Two rows: torch.export specializes a dimension whose example size is 1.
    example = torch.zeros(2, int(n_features), dtype=torch.float32)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                (example,),
                input_names=["X"],
                output_names=["raw_output"],
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many kinds; all mean the same here
        root = exc
        while root.__cause__ is not None:  # the exporter wraps torch.export's error
            root = root.__cause__
        lines = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip().splitlines()
        reason = f"{type(root).__name__}: {lines[0][:300] if lines else ''}"
        raise _unexportable(module, f"torch.onnx.export failed ({reason})") from exc
    model = program.model_proto
    _verify(model, frozen, int(n_features))
    return model


def _unexportable(module, what):
    from sklears_neural.core.inference import unknown_layers

    unknown = unknown_layers(module)
    which = (
        f" It holds layers sklears-neural does not know: {', '.join(unknown)}."
        if unknown
        else ""
    )
    return ValueError(
        f"Cannot export the {type(module).__name__} module to ONNX: {what}.{which} "
        "Replace or remove those layers (or give them an ONNX translation through "
        "torch.onnx's custom_translation_table), or predict with "
        "inference_backend='torch'."
    )


def _verify(model, frozen, n_features):
    """The graph takes any batch size and computes what the module computes.

    torch.export specializes what it cannot follow (a Python loop over rows,
    a branch on a value) to the example input, without an error; onnx's
    reference evaluator on three other rows catches that, in milliseconds.
    """
    from onnx.reference import ReferenceEvaluator

    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise _unexportable(
            frozen,
            f"the graph fixes the batch size to {batch.dim_value}, "
            "so a layer depends on it",
        )
    X = np.random.RandomState(0).randn(3, n_features).astype(np.float32)
    (got,) = ReferenceEvaluator(model).run(None, {"X": X})
    param = next(frozen.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    with torch.no_grad():
        expected = frozen(torch.from_numpy(X).to(dtype)).double().numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not np.allclose(
        got, expected, rtol=1e-4, atol=1e-5 * scale
    ):
        raise _unexportable(
            frozen,
            "the graph does not compute what the module computes "
            "on new rows, so a layer's forward depends on its input "
            "values in a way torch.export followed for the example "
            "rows only",
        )


# -- heads ---------------------------------------------------------------------


def _task(estimator):
    """``"multiclass"``, ``"binary"``, ``"multilabel"`` or ``"regression"``."""
    activation = estimator.out_activation_
    if activation == "softmax":
        return "multiclass"
    if activation == "logistic":
        kind = estimator._label_binarizer.y_type_
        return "multilabel" if kind == "multilabel-indicator" else "binary"
    if activation in ("identity", "exp"):
        return "regression"
    raise ValueError(
        f"to_onnx does not know the output activation {activation!r} of "
        f"{type(estimator).__name__}; it writes softmax, logistic, identity and "
        "exp heads."
    )


def head_signature(estimator):
    """What the heads depend on, as plain data (part of the fingerprint)."""
    task = _task(estimator)
    classes = getattr(estimator, "classes_", None)
    return (
        _LAYOUT,
        OPSET,
        type(estimator).__name__,
        task,
        estimator.out_activation_,
        int(estimator.n_outputs_),
        int(estimator.n_features_in_),
        (
            None
            if classes is None or task == "regression"
            else (np.asarray(classes).dtype.str, np.asarray(classes).tolist())
        ),
    )


def fingerprint(estimator):
    """SHA-256 (hex) of the module's state and heads: what a graph came from."""
    digest = hashlib.sha256(repr(head_signature(estimator)).encode())
    for name, tensor in sorted(estimator.module_.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _classes_constant(classes):
    """``classes_`` as an array ONNX can hold, and its TensorProto type."""
    from onnx import TensorProto

    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if kind in "iu":
        return classes.astype(np.int64), TensorProto.INT64
    if kind == "b":
        return classes.astype(bool), TensorProto.BOOL
    if kind == "f":
        return classes.astype(np.float64), TensorProto.DOUBLE
    if kind in "US" or (kind == "O" and all(isinstance(c, str) for c in classes)):
        return np.array([str(c) for c in classes], dtype=object), TensorProto.STRING
    raise ValueError(
        f"to_onnx cannot write class labels of type {classes.dtype} "
        f"({type(classes[0]).__name__}); ONNX holds integer, float, bool and string "
        "labels. Encode the targets as one of those and fit again."
    )


def _append_heads(model, estimator):
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    raw = graph.output[0]
    float_type = raw.type.tensor_type.elem_type
    float_dtype = np.float64 if float_type == TensorProto.DOUBLE else np.float32
    batch = raw.type.tensor_type.shape.dim[0].dim_param or "batch"
    n_outputs = int(estimator.n_outputs_)
    nodes, outputs = [], []

    def constant(name, value):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, output, **attributes):
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    task = _task(estimator)
    if task == "regression":
        out = "raw_output"
        if estimator.out_activation_ == "exp":
            out = node("Exp", [out], "sklears_mean")
        if n_outputs == 1:
            node(
                "Reshape",
                [out, constant("sklears_flat", np.array([-1], np.int64))],
                "prediction",
            )
            shape = [batch]
        else:
            node("Identity", [out], "prediction")
            shape = [batch, n_outputs]
        outputs.append(helper.make_tensor_value_info("prediction", float_type, shape))
    else:
        half = np.array(0.5, float_dtype)
        if task == "multiclass":
            node("Softmax", ["raw_output"], "probabilities", axis=1)
            # The first argmax of the probabilities, as scikit-learn's LabelBinarizer.
            index = node(
                "ArgMax", ["probabilities"], "sklears_index", axis=1, keepdims=0
            )
            n_columns = n_outputs
        elif task == "binary":
            p = node("Sigmoid", ["raw_output"], "sklears_p")
            q = node(
                "Sub",
                [constant("sklears_one", np.array(1.0, float_dtype)), p],
                "sklears_q",
            )
            node("Concat", [q, p], "probabilities", axis=1)
            positive = node(
                "Greater", [p, constant("sklears_half", half)], "sklears_positive"
            )
            index = node(
                "Reshape",
                [
                    node(
                        "Cast", [positive], "sklears_positive_int", to=TensorProto.INT64
                    ),
                    constant("sklears_flat", np.array([-1], np.int64)),
                ],
                "sklears_index",
            )
            n_columns = 2
        else:  # multilabel
            node("Sigmoid", ["raw_output"], "probabilities")
            positive = node(
                "Greater",
                ["probabilities", constant("sklears_half", half)],
                "sklears_positive",
            )
            node("Cast", [positive], "label", to=TensorProto.INT64)
            n_columns = n_outputs
        if task == "multilabel":
            outputs.append(
                helper.make_tensor_value_info(
                    "label", TensorProto.INT64, [batch, n_outputs]
                )
            )
        else:
            classes, label_type = _classes_constant(estimator.classes_)
            if (
                len(classes) == 1
            ):  # a binary target seen with one class predicts it always
                classes = np.concatenate([classes, classes])
            node(
                "Gather", [constant("sklears_classes", classes), index], "label", axis=0
            )
            outputs.append(helper.make_tensor_value_info("label", label_type, [batch]))
        outputs.append(
            helper.make_tensor_value_info(
                "probabilities", float_type, [batch, n_columns]
            )
        )
    graph.node.extend(nodes)
    kept = list(graph.output)
    del graph.output[:]
    graph.output.extend(outputs + kept)


def _finish(model, estimator, path):
    import onnx

    model.producer_name = "sklears-neural"
    model.producer_version = __version__
    model.doc_string = (
        f"{type(estimator).__name__} exported by sklears-neural {__version__}"
    )
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def to_onnx(estimator, path=None):
    """The fitted ``estimator`` as a serialized ONNX ``ModelProto``.

    See the module docstring for the graph's inputs and outputs.
    ``BaseNeuralEstimator.to_onnx`` calls this through a cache.

    Parameters
    ----------
    estimator : fitted BaseNeuralEstimator
    path : str or os.PathLike, default=None
        Also write the bytes there.

    Returns
    -------
    bytes
    """
    model = export_network(estimator.module_, estimator.n_features_in_)
    _append_heads(model, estimator)
    return _finish(model, estimator, path)


def rbm_to_onnx(rbm, path=None):
    """A fitted ``BernoulliRBM``'s ``transform`` as ONNX: ``sigmoid(X W^T + b_h)``.

    Written with ``onnx.helper`` directly: the RBM keeps NumPy arrays, not a
    torch module. Input ``X`` (float32, (N, n_features)); output
    ``transformed`` (N, n_components), computed in the dtype of
    ``components_`` (float32, or float64 after a float64 fit).

    Parameters
    ----------
    rbm : fitted BernoulliRBM
    path : str or os.PathLike, default=None

    Returns
    -------
    bytes
    """
    _require_onnx(exporter=False)
    from onnx import TensorProto, helper, numpy_helper

    weights = np.asarray(rbm.components_)
    dtype = np.float64 if weights.dtype == np.float64 else np.float32
    float_type = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    n_components, n_features = weights.shape
    initializers = [
        numpy_helper.from_array(weights.astype(dtype), "components"),
        numpy_helper.from_array(
            np.asarray(rbm.intercept_hidden_, dtype=dtype), "intercept_hidden"
        ),
    ]
    nodes = [
        helper.make_node("Cast", ["X"], ["sklears_x"], to=float_type),
        helper.make_node(
            "Gemm",
            ["sklears_x", "components", "intercept_hidden"],
            ["sklears_logits"],
            transB=1,
        ),
        helper.make_node("Sigmoid", ["sklears_logits"], ["transformed"]),
    ]
    graph = helper.make_graph(
        nodes,
        "BernoulliRBM",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", n_features])],
        [
            helper.make_tensor_value_info(
                "transformed", float_type, ["batch", n_components]
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what onnxruntime >= 1.17 reads
    return _finish(model, rbm, path)
