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

The inputs follow the estimator's input kind (``_input_kind().layout``,
see :mod:`sklears_neural.core.inputs`), and the graph runs the network
through the family's ``_forward``, as prediction does:

========== ==============================================================
layout     graph inputs
========== ==============================================================
tabular    ``X``, float32, (N, n_features_in_)
image      ``X``, float32, (N, *input_shape_)
sequence   ``X``, float32, (N, T, n_features_in_), zero-padded, and
           ``lengths``, int64, (N,); N and T dynamic
========== ==============================================================

A sequence network that packs its sequences (``pack_padded_sequence``)
cannot be traced into one graph for every length: :func:`to_onnx` raises a
``ValueError`` naming the family and saying to predict with
``inference_backend="torch"``, as it does for networks whose outputs are per
step or per pixel (the heads take one row per sample). :func:`graph_feed`
turns validated X into the graph's inputs. ``raw_output`` is
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
from sklears_neural.core.data import call_module
from sklears_neural.core.inputs import step_features

__all__ = [
    "OPSET",
    "export_network",
    "fingerprint",
    "graph_feed",
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
    log lines about optional packages (torchvision) it looks for, and the
    traced graph torch.export logs (a hundred lines) when it meets a value
    it cannot follow, which the raised error says in one."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


_CHATTY_LOGGERS = ("torch.onnx", "torch.fx.experimental.symbolic_shapes")


class _Float32Input(torch.nn.Module):
    """The frozen network behind float32 input: cast to its dtype, then run it.

    ``forward`` is the family's ``_forward(module, inputs)`` (by default
    ``module(X)``, or ``module(X, lengths)`` for sequences), so the graph
    computes what prediction computes.
    """

    def __init__(self, network, dtype, forward=None):
        super().__init__()
        self.network = network
        self.dtype = dtype
        self.call = call_module if forward is None else forward

    def forward(self, X, lengths=None):
        X = X.to(self.dtype)
        return self.call(self.network, X if lengths is None else (X, lengths))


class _GraphInputs:
    """The graph's inputs for one input layout, and examples of them.

    ``"tabular"``: ``X`` (N, n_features); ``"image"``: ``X`` (N,
    *input_shape); ``"sequence"``: ``X`` (N, T, n_features) and ``lengths``
    (N,) int64, zero-padded beyond each length.
    """

    def __init__(self, layout, n_features, input_shape=None):
        if layout not in ("tabular", "image", "sequence"):
            raise ValueError(
                f"to_onnx exports tabular, image and sequence inputs, not {layout!r}."
            )
        self.layout = layout
        if layout == "image":
            self.sample_shape = tuple(int(d) for d in input_shape)
        else:
            self.sample_shape = (int(n_features),)
        self.names = ["X", "lengths"] if layout == "sequence" else ["X"]

    def example(self):
        # Two rows, three steps: torch.export specializes a dimension whose
        # example size is 1.
        if self.layout == "sequence":
            return (torch.zeros(2, 3, *self.sample_shape),
                    torch.full((2,), 3, dtype=torch.int64))
        return (torch.zeros(2, *self.sample_shape),)

    def dynamic_shapes(self):
        batch = torch.export.Dim("batch")
        if self.layout == "sequence":
            return ({0: batch, 1: torch.export.Dim("steps")}, {0: batch})
        return ({0: batch},)

    def dynamic_axes(self):
        """Per graph input, the axes that must stay symbolic."""
        return [(0, 1), (0,)] if self.layout == "sequence" else [(0,)]

    def check_example(self):
        """Three new samples (and steps) for the check: a feed of float32 and int64."""
        rng = np.random.RandomState(0)
        if self.layout == "sequence":
            lengths = np.array([4, 2, 3], dtype=np.int64)
            X = rng.randn(3, 4, *self.sample_shape).astype(np.float32)
            X[np.arange(4)[None, :] >= lengths[:, None]] = 0.0
            return {"X": X, "lengths": lengths}
        return {"X": rng.randn(3, *self.sample_shape).astype(np.float32)}


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


def _module_dtype(module):
    param = next(module.parameters(), None)
    return torch.float32 if param is None else param.dtype


def export_network(module, n_features, *, layout="tabular", input_shape=None,
                   forward=None, owner=None):
    """``module`` as an ONNX model: input ``X`` (float32), output ``raw_output``.

    Sequences add the input ``lengths`` (int64).

    Parameters
    ----------
    module : torch.nn.Module
    n_features : int
        Values per row (tabular) or features per step (sequence).
    layout : {"tabular", "image", "sequence"}, default="tabular"
        The input kind's ``layout``: the graph takes ``X`` (N, n_features),
        ``X`` (N, *input_shape), or ``X`` (N, T, n_features) with
        ``lengths`` (N,) int64.
    input_shape : tuple of int, default=None
        One sample's shape, for images.
    forward : callable, default=None
        ``forward(module, inputs)``: the family's ``_forward``; None calls
        the module with the inputs.
    owner : str, default=None
        The estimator's class name, for the messages.

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    ValueError
        If ``torch.onnx.export`` fails, or the graph does not compute what
        the module computes on new inputs; the message names the layers
        this library does not know, where there are any. For sequences it
        names the family and says to predict with
        ``inference_backend="torch"``.
    """
    _require_onnx()
    inputs = _GraphInputs(layout, n_features, input_shape)
    if layout == "sequence" and any(
        isinstance(m, torch.nn.RNNBase) for m in module.modules()
    ):
        # Recurrent layers run on packed sequences, which no graph of any
        # length can hold: say so now, not after seconds of tracing.
        raise _unexportable(module, "its recurrent layers run on packed sequences",
                            inputs, owner)
    frozen = _frozen_copy(module)
    dtype = _module_dtype(frozen)
    wrapper = _Float32Input(frozen, dtype, forward).eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                inputs.example(),
                input_names=inputs.names,
                output_names=["raw_output"],
                opset_version=OPSET,
                dynamo=True,
                dynamic_shapes=inputs.dynamic_shapes(),
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many kinds; all mean the same here
        root = exc
        while root.__cause__ is not None:  # the exporter wraps torch.export's error
            root = root.__cause__
        lines = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip().splitlines()
        reason = f"{type(root).__name__}: {lines[0][:300] if lines else ''}"
        raise _unexportable(
            module, f"torch.onnx.export failed ({reason})", inputs, owner
        ) from exc
    model = program.model_proto
    _verify(model, wrapper, inputs, owner)
    return model


def _unexportable(module, what, inputs=None, owner=None):
    from sklears_neural.core.plan import unknown_layers

    if inputs is not None and inputs.layout == "sequence":
        return ValueError(
            f"Cannot export {owner or 'the estimator'} to ONNX: its "
            f"{type(module).__name__} does not export for sequences of any length "
            f"(graph inputs X (N, T, F) and lengths (N,)): {what}. A network that "
            "packs its sequences (pack_padded_sequence) or reads the lengths as "
            "Python numbers cannot be traced into one graph. Predict with "
            "inference_backend='torch'."
        )
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


def _verify(model, wrapper, inputs, owner=None):
    """The graph takes any batch size (and length) and computes what the module does.

    torch.export specializes what it cannot follow (a Python loop over rows,
    a branch on a value) to the example input, without an error; onnx's
    reference evaluator on three other samples (of other lengths) catches
    that, in milliseconds.
    """
    from onnx.reference import ReferenceEvaluator

    frozen = wrapper.network
    for graph_input, axes in zip(model.graph.input, inputs.dynamic_axes()):
        dims = graph_input.type.tensor_type.shape.dim
        for axis in axes:
            if not dims[axis].dim_param:
                what = "batch size" if axis == 0 else "sequence length"
                raise _unexportable(
                    frozen,
                    f"the graph fixes the {what} to {dims[axis].dim_value}, "
                    "so a layer depends on it",
                    inputs,
                    owner,
                )
    feed = inputs.check_example()
    try:
        (got,) = ReferenceEvaluator(model).run(None, feed)
    except Exception as exc:  # a graph specialized to the example's shapes
        got = exc
    with torch.no_grad():
        tensors = [torch.from_numpy(feed[name]) for name in inputs.names]
        expected = wrapper(*tensors).double().numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    if isinstance(got, Exception) or got.shape != expected.shape or not np.allclose(
        got, expected, rtol=1e-4, atol=1e-5 * scale
    ):
        raise _unexportable(
            frozen,
            "the graph does not compute what the module computes "
            "on new inputs, so a layer's forward depends on its input "
            "values in a way torch.export followed for the example "
            "inputs only",
            inputs,
            owner,
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


def _layout(estimator):
    kind = estimator._input_kind()
    return getattr(kind, "layout", None)


def head_signature(estimator):
    """What the graph's inputs and heads depend on, as plain data (part of the fingerprint)."""
    task = _task(estimator)
    classes = getattr(estimator, "classes_", None)
    layout = _layout(estimator)
    # Tabular graphs keep the signature they always had (stored graphs stay
    # valid); other inputs add their layout and sample shape.
    inputs = () if layout == "tabular" else (
        (layout, tuple(getattr(estimator, "input_shape_", None) or ())),
    )
    return inputs + (
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
    layout = _layout(estimator)
    owner = type(estimator).__name__
    _check_one_output_row(estimator, layout, owner)
    model = export_network(
        estimator.module_,
        step_features(estimator) if layout == "sequence" else estimator.n_features_in_,
        layout=layout,
        input_shape=getattr(estimator, "input_shape_", None),
        forward=estimator._forward,
        owner=owner,
    )
    _append_heads(model, estimator)
    return _finish(model, estimator, path)


def _check_one_output_row(estimator, layout, owner):
    """The heads take one row of outputs per sample: refuse per-step outputs early."""
    from sklears_neural.core.persistence import example_inputs

    if layout == "tabular":
        return
    module = estimator.module_
    flags = [(m, m.training) for m in module.modules()]
    device = next((t.device for t in module.state_dict().values()), None)
    try:
        module.eval()
        with torch.no_grad():
            out = estimator._forward(
                module,
                example_inputs(estimator, n_samples=2, n_steps=3,
                               dtype=_module_dtype(module), device=device),
            )
    finally:
        for m, training in flags:
            m.training = training
    if isinstance(out, torch.Tensor) and out.ndim != 2:
        raise ValueError(
            f"Cannot export {owner} to ONNX: its network gives outputs of shape "
            f"(N, {', '.join(str(d) for d in out.shape[1:])}) per batch, and the "
            "exported heads take one row of outputs per sample (per-step and "
            "per-pixel outputs are not exported). Predict with "
            "inference_backend='torch'."
        )


def graph_feed(estimator, X):
    """The inputs of ``estimator``'s graph for validated ``X``, as ONNX Runtime takes them.

    Parameters
    ----------
    estimator : fitted BaseNeuralEstimator
    X : ndarray or PaddedSequences
        ``X`` as the estimator's input kind validates it
        (``estimator._input_kind().validate(estimator, X, reset=False)``):
        dense rows, ``(n, *input_shape_)`` arrays, or padded sequences.

    Returns
    -------
    dict of str to ndarray
        ``{"X": float32}``, plus ``"lengths"`` (int64) for sequences.
    """
    if _layout(estimator) == "sequence":
        return {
            "X": np.ascontiguousarray(X.values, dtype=np.float32),
            "lengths": np.ascontiguousarray(X.lengths, dtype=np.int64),
        }
    return {"X": np.ascontiguousarray(X, dtype=np.float32)}


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
