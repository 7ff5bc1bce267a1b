"""The ``inference_backend="onnxruntime"`` glue: the exported graph and its session.

:func:`sklears_neural.core.inference.raw_outputs` sends a tabular model
with ``inference_backend="onnxruntime"`` here (:func:`outputs`), and
``to_onnx`` gets its bytes from :func:`model_bytes`. The graph itself is
built by :mod:`~sklears_neural.core.export`.

Both keep what they build in the module's prediction cache entry (see
:mod:`~sklears_neural.core.inference`), which the caller passes in: the
bytes as ``entry.onnx`` (with the heads they were exported for), the
session as ``entry.session``. Either is rebuilt when the module's weights
change, as the rest of the entry is. With the onnxruntime backend the bytes
are also stored on the estimator (``_onnx_model_``, with the SHA-256 of the
weights and heads they were exported from), so a pickled or saved model
starts its session without exporting again.
"""

import numpy as np
import scipy.sparse as sp
import torch

from sklears_neural.core.data import dense_array, dense_chunk_rows

__all__ = ["model_bytes", "outputs"]


def model_bytes(estimator, entry):
    """The ONNX graph of ``estimator``, exported once per module state.

    Parameters
    ----------
    estimator : fitted BaseNeuralEstimator
    entry : inference cache entry
        Of ``estimator.module_``; keeps the bytes as ``entry.onnx``.

    Returns
    -------
    bytes
        The serialized ``ModelProto``.
    """
    from sklears_neural.core import export  # imports onnx, onnxscript on use

    head = export.head_signature(estimator)
    if entry.onnx is None or entry.onnx[0] != head:
        keep = estimator.__dict__.get("inference_backend") == "onnxruntime"
        stored = estimator.__dict__.get("_onnx_model_")
        digest = export.fingerprint(estimator) if keep or stored is not None else None
        if stored is not None and stored.get("sha256") == digest:
            data = stored["model"].tobytes()
        else:
            data = export.to_onnx(estimator)
            if keep:
                estimator._onnx_model_ = {
                    "sha256": digest,
                    "model": np.frombuffer(data, dtype=np.uint8).copy(),
                }
        entry.onnx = (head, data)
    return entry.onnx[1]


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            "inference_backend='onnxruntime' needs the onnxruntime package: "
            "pip install sklears-neural[onnx] (or set inference_backend='torch')."
        ) from exc
    return onnxruntime


def _session(onnxruntime, model):
    options = onnxruntime.SessionOptions()
    # The thread budget torch has: the two backends compare like for like.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        model, options, providers=["CPUExecutionProvider"]
    )


def outputs(estimator, entry, X, chunk_rows):
    """The graph's ``raw_output`` for ``X``, as float64.

    Parameters
    ----------
    estimator : fitted BaseNeuralEstimator
    entry : inference cache entry
        Of ``estimator.module_``; keeps the session as ``entry.session``.
    X : ndarray or sparse matrix of shape (n_samples, n_features)
        Checked, and representable in float32 (the graph's input dtype). Or
        any input the estimator's input kind validated (images, padded
        sequences), fed as :func:`~sklears_neural.core.export.graph_feed`
        says.
    chunk_rows : int
        Rows per ``session.run``: bounds memory. Sparse ``X`` is made dense
        a bounded number of rows at a time, possibly fewer.

    Returns
    -------
    ndarray of shape (n_samples, n_outputs_), float64
    """
    session = entry.session
    if session is None:
        # Checked before exporting, which takes seconds.
        onnxruntime = _onnxruntime()
        session = entry.session = _session(onnxruntime, model_bytes(estimator, entry))
    step = chunk_rows
    if sp.issparse(X):
        # The graph takes dense float32: a bounded number of rows at a time.
        X = X.tocsr()
        step = min(step, dense_chunk_rows(X.shape[1], 4))
    from sklears_neural.core import export  # torch.onnx only when it runs

    tabular = sp.issparse(X) or (isinstance(X, np.ndarray) and X.ndim == 2)
    chunks = []
    for start in range(0, X.shape[0], step):
        part = X[start:start + step]
        if sp.issparse(part):
            part = dense_array(part, torch.float32)
        if tabular:
            feed = {"X": np.ascontiguousarray(part, dtype=np.float32)}
        else:
            feed = export.graph_feed(estimator, part)
        (out,) = session.run(["raw_output"], feed)
        chunks.append(out.astype(np.float64))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
