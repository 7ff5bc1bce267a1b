"""Graph neural networks as scikit-learn estimators: GNNClassifier, GNNRegressor, GraphFeaturizer.

X is a list (or 1-D object array) of graphs -- networkx graphs, PyTorch
Geometric ``Data`` objects or ``(adjacency, node_features)`` pairs -- with
one target per graph (:mod:`sklears_neural.core.graph_inputs`). Both
estimators train a :class:`~sklears_neural.nn.gnn.GraphNet` (PyG's
convolutions and pooling) with the shared training core: every training
option of the MLPs applies. Graphs are pre-collated once into one disjoint
graph, and each mini-batch is sliced or gathered from it by vectorized
index arithmetic: no Python loop per graph.

:class:`GraphFeaturizer` converts networkx graphs to PyG ``Data`` objects,
so a ``Pipeline`` can start from raw networkx graphs.

Needs the optional extra: ``pip install 'sklears-neural[graph]'``.
"""

import numbers
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from sklears_neural.core._compat import Interval, ResolvableName, StrOptions
from sklears_neural.core.docstrings import document_parameters
from sklears_neural.core.estimator import BaseNeuralEstimator
from sklears_neural.core.graph_inputs import (
    NODE_FEATURES,
    NODE_LEVEL_FEATURES,
    GraphInput,
    NodeInput,
    import_torch_geometric,
    to_node_view,
)
from sklears_neural.core.layers import ModuleSpec
from sklears_neural.core.registry import register_estimator
from sklears_neural.core.resolve import ACTIVATIONS
from sklears_neural.core.tasks import NeuralClassifierMixin, NeuralRegressorMixin
from sklears_neural.nn.gnn import (
    CONVS,
    HIERARCHICAL,
    NORMS,
    POOLINGS,
    SAGE_AGGRS,
    GraphNet,
    check_edge_features,
)

__all__ = [
    "GNNClassifier",
    "GNNNodeClassifier",
    "GNNNodeRegressor",
    "GNNRegressor",
    "GraphFeaturizer",
]


_ARCHITECTURE = {
    "hidden_layer_sizes": """\
hidden_layer_sizes : tuple of int, default=(64, 64)
    Output width of each graph convolution; the last width is also the
    hidden width of the output MLP after the readout.""",
    "conv": """\
conv : {"gin", "gcn", "gat", "sage", "mpnn"}, default="gin"
    The message-passing layer (PyTorch Geometric's): ``GINConv`` (a
    two-layer MLP on ``(1 + eps) x_i + sum_j x_j``, eps learned), ``GCNConv``
    (``D^-1/2 (A + I) D^-1/2 X W``), ``GATConv`` (attention over neighbours,
    ``heads``, ``concat_heads``), ``SAGEConv`` (``aggr``), or ``NNConv``
    ("mpnn", edge-conditioned: ``W x_i + mean_j h(e_ji) x_j`` with ``h`` an
    MLP from an edge's features to a weight matrix; needs ``edge_attrs``).
    With edge features, "gcn" uses its one column as edge weights, "gat"
    passes them to the attention (``edge_dim``), and "gin" becomes
    ``GINEConv``; "sage" takes none. GIN with sum pooling is the default:
    it is as expressive as the 1-WL test (Xu et al., 2019), and counts
    structure that mean aggregation averages away.""",
    "heads": """\
heads : int, default=1
    Attention heads of ``conv="gat"``.""",
    "concat_heads": """\
concat_heads : bool, default=True
    ``conv="gat"``: concatenate the heads (each ``width // heads`` wide) or
    average them (each ``width`` wide).""",
    "aggr": """\
aggr : {"mean", "max", "lstm"}, default="mean"
    Neighbour aggregation of ``conv="sage"``.""",
    "pooling": """\
pooling : {"sum", "mean", "max", "attention"}, default="sum"
    Readout from nodes to one vector per graph; "attention" is PyG's
    ``AttentionalAggregation`` with a linear gate.""",
    "hierarchical": """\
hierarchical : {None, "topk", "sag"}, default=None
    Top-k (``TopKPooling``) or self-attention graph pooling
    (``SAGPooling``) after every convolution but the last.""",
    "pool_ratio": """\
pool_ratio : float, default=0.5
    Fraction of nodes that hierarchical pooling keeps.""",
    "residual": """\
residual : bool, default=False
    Add each convolution's input to its output where the widths match.""",
    "norm": """\
norm : {None, "batch", "layer"}, default=None
    Normalization of node features after each convolution.""",
    "dropout": """\
dropout : float, default=0.0
    Dropout on node features after each convolution and before the output
    layer (stochastic solvers).""",
    "activation": """\
activation : str or (str, dict), default="gelu"
    Activation after each convolution, inside GIN's MLPs and in the output
    MLP: any name of ``ACTIVATIONS``. GELU rather than ReLU: on graphs with
    constant node features every node starts alike, and ReLU units that go
    dead for that one input never recover; measured on cycles vs trees
    (see doc/gnn.md), ReLU left 1-3 of 10 seeded fits at chance and GELU
    none.""",
    "node_attrs": """\
node_attrs : list of str, str or None, default=None
    networkx node attributes read as node features (numbers or 1-D
    arrays, concatenated in this order). None: the ``node_features`` rule.""",
    "node_features": """\
node_features : {"constant", "degree", "constant+degree"}, default="constant"
    Node features of graphs that carry none (``node_attrs=None`` for
    networkx graphs, a ``Data`` without ``x``, a pair with ``None``
    features): a column of ones, the in-degree, or both.""",
    "edge_attrs": """\
edge_attrs : list of str, str or None, default=None
    Edge features, concatenated in this order: networkx edge attributes
    (numbers or 1-D arrays; an undirected edge gives both directions the
    same values); for a PyG ``Data``, its attributes (``"edge_attr"``,
    ``"edge_weight"``; ``"weight"`` reads ``edge_weight`` when there is no
    ``weight``); for an ``(adjacency, node_features)`` pair only
    ``"weight"``: the matrix's nonzero values. None: edges carry no
    features.""",
    "learning_rate_init": """\
learning_rate_init : float, default=0.01
    Initial step size (stochastic solvers).""",
    "max_iter": """\
max_iter : int, default=100
    Epochs for stochastic solvers, iterations for L-BFGS.""",
}


class _BaseGNN(BaseNeuralEstimator):
    """What the graph-level estimators share: graph input and the GraphNet."""

    _parameter_constraints: dict = {
        **BaseNeuralEstimator._parameter_constraints,
        "hidden_layer_sizes": [list, tuple],
        "conv": [StrOptions(set(CONVS))],
        "heads": [Interval(Integral, 1, None, closed="left")],
        "concat_heads": ["boolean"],
        "aggr": [StrOptions(set(SAGE_AGGRS))],
        "pooling": [StrOptions(set(POOLINGS))],
        "hierarchical": [None, StrOptions(set(HIERARCHICAL))],
        "pool_ratio": [Interval(Real, 0, 1, closed="right")],
        "residual": ["boolean"],
        "norm": [None, StrOptions(set(NORMS))],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "activation": [ResolvableName(ACTIVATIONS)],
        "node_attrs": [None, str, list, tuple],
        "node_features": [StrOptions(set(NODE_FEATURES))],
        "edge_attrs": [None, str, list, tuple],
    }

    def _input_kind(self):
        return GraphInput(node_attrs=self.node_attrs, node_features=self.node_features,
                          edge_attrs=self.edge_attrs)

    def _build_module(self, n_features_in, n_outputs):
        import_torch_geometric()
        sizes = [int(h) for h in self.hidden_layer_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(
                "hidden_layer_sizes must hold at least one positive int (one "
                f"convolution width each); got {self.hidden_layer_sizes!r}."
            )
        if not self._is_stochastic():
            if self.dropout > 0:
                raise ValueError(
                    "solver='lbfgs' needs a deterministic objective, but dropout makes "
                    "it random. Use solver='adam' or 'sgd', or dropout=0."
                )
            if self.norm == "batch":
                raise ValueError(
                    "solver='lbfgs' cannot train batch normalization (its line search "
                    "moves the running statistics). Use norm=None or 'layer', or "
                    "solver='adam' or 'sgd'."
                )
        n_edge_features = int(getattr(self, "n_edge_features_in_", 0))
        check_edge_features(self.conv, n_edge_features)
        if self.conv == "gat" and self.concat_heads and any(h % self.heads for h in sizes):
            raise ValueError(
                f"conv='gat' with concat_heads=True splits each width among the "
                f"heads: hidden_layer_sizes={tuple(sizes)} are not all multiples of "
                f"heads={self.heads}. Use multiples, or concat_heads=False."
            )
        return ModuleSpec(
            GraphNet,
            {
                "n_features": int(n_features_in),
                "n_outputs": int(n_outputs),
                "hidden_layer_sizes": sizes,
                "conv": self.conv,
                "heads": int(self.heads),
                "concat_heads": bool(self.concat_heads),
                "aggr": self.aggr,
                # Node-level estimators have no readout parameters.
                "pooling": getattr(self, "pooling", "sum"),
                "hierarchical": getattr(self, "hierarchical", None),
                "pool_ratio": float(getattr(self, "pool_ratio", 0.5)),
                "residual": bool(self.residual),
                "norm": self.norm,
                "dropout": float(self.dropout),
                "activation": ACTIVATIONS.to_json(self.activation),
                "n_edge_features": n_edge_features,
            },
        )

    def _batch_augmenter(self):
        # The core's augmentations are for tabular, image, sequence and
        # token batches; none applies to graphs yet.
        if self.augment is None or (isinstance(self.augment, (list, tuple))
                                    and not self.augment):
            return None
        raise ValueError(
            f"No augmentation applies to graph inputs yet: {type(self).__name__} "
            f"got augment={self.augment!r}; set augment=None."
        )

    def to_onnx(self, path=None):
        """Export the fitted estimator to ONNX: the network and its predictions.

        The graph takes a batch of graphs in PyTorch Geometric's layout:
        ``x`` (float32, (n_nodes, n_features_in_)), ``edge_index`` (int64,
        (2, n_edges)), ``batch`` (int64, (n_nodes,): each node's graph) and
        ``ptr`` (int64, (n_graphs + 1,): each graph's first node, as a PyG
        ``Batch`` carries it; only its length is read), plus ``edge_attr``
        (float32, (n_edges, n_edge_features_in_)) when fitted with edge
        features. A node-level estimator's graph takes ``x``, ``edge_index``
        (and ``edge_attr``) of one graph and gives a row per node. Every size
        is dynamic. The outputs are those of the other estimators
        (``raw_output``, ``label`` and ``probabilities``, or
        ``prediction``); see :mod:`sklears_neural.core.export`.

        GIN, GCN, GraphSAGE and the edge-conditioned MPNN export, with every
        readout. GAT and hierarchical (top-k, SAG) pooling raise
        ``NotImplementedError``: their PyG layers compute shapes from values
        (self-loop handling, top-k selection), which ``torch.export``
        cannot trace into one graph for every input size. Prediction with
        ``inference_backend="onnxruntime"`` is not offered for graphs; run
        the exported graph in ONNX Runtime yourself.

        Parameters
        ----------
        path : str or os.PathLike, default=None
            Also write the model to this file.

        Returns
        -------
        model : bytes
            A serialized ``onnx.ModelProto``.

        Raises
        ------
        NotImplementedError
            For ``conv="gat"`` and hierarchical pooling (see above).
        """
        from sklears_neural.core.export import _append_heads, _finish
        from sklears_neural.nn.gnn import export_graph_network

        check_is_fitted(self, "module_")
        model = export_graph_network(self.module_, self.n_features_in_,
                                     getattr(self, "n_edge_features_in_", 0),
                                     owner=type(self).__name__)
        _append_heads(model, self)
        return _finish(model, self, path)


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class GNNClassifier(NeuralClassifierMixin, ClassifierMixin, _BaseGNN):
    """Graph neural network classifier: one label per graph.

    Trains a :class:`~sklears_neural.nn.gnn.GraphNet` (PyTorch Geometric
    convolutions, a readout per graph and a small output MLP) with the
    log-loss and every training option of
    :class:`~sklears_neural.MLPClassifier`.

    X is a list (or 1-D object array) of graphs: networkx graphs (features
    from ``node_attrs``), PyG ``Data`` objects, or ``(adjacency,
    node_features)`` pairs; y has one label per graph. scikit-learn's
    splitters, ``cross_val_score`` and ``GridSearchCV`` index such an X as
    any other.

    Parameters
    ----------
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight``; ``"balanced"``
        uses ``n_samples / (n_classes * np.bincount(y))``.
    <shared parameters>

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out accuracy per epoch with ``early_stopping``, else ``None``.
    validation_loss_curve_ : list of float or None
        Held-out log-loss per epoch with ``early_stopping``, else ``None``.
    n_features_in_ : int
        Node features per node seen in fit.
    n_edge_features_in_ : int
        Edge features per edge seen in fit (0 without ``edge_attrs``).
    out_activation_ : str
        ``"softmax"`` or ``"logistic"``.
    module_ : GraphNet
        The trained network; it outputs logits.

    See Also
    --------
    GNNRegressor : The regression counterpart.
    GraphFeaturizer : networkx graphs to PyG ``Data``, for a Pipeline.

    Examples
    --------
    >>> import networkx as nx
    >>> from sklears_neural.models.gnn import GNNClassifier
    >>> X = [nx.cycle_graph(n) for n in range(4, 12)] + [nx.path_graph(n) for n in range(4, 12)]
    >>> y = [1] * 8 + [0] * 8
    >>> clf = GNNClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """

    _parameter_constraints: dict = {
        **_BaseGNN._parameter_constraints,
        **NeuralClassifierMixin._parameter_constraints,
    }

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        conv="gin",
        *,
        heads=1,
        concat_heads=True,
        aggr="mean",
        pooling="sum",
        hierarchical=None,
        pool_ratio=0.5,
        residual=False,
        norm=None,
        dropout=0.0,
        activation="gelu",
        node_attrs=None,
        node_features="constant",
        edge_attrs=None,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.01,
        power_t=0.5,
        max_iter=100,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        class_weight=None,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.conv = conv
        self.heads = heads
        self.concat_heads = concat_heads
        self.aggr = aggr
        self.pooling = pooling
        self.hierarchical = hierarchical
        self.pool_ratio = pool_ratio
        self.residual = residual
        self.norm = norm
        self.dropout = dropout
        self.activation = activation
        self.node_attrs = node_attrs
        self.node_features = node_features
        self.edge_attrs = edge_attrs
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.class_weight = class_weight
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment


@register_estimator
@document_parameters(extra=_ARCHITECTURE)
class GNNRegressor(NeuralRegressorMixin, RegressorMixin, _BaseGNN):
    """Graph neural network regressor: one target (or several) per graph.

    Trains a :class:`~sklears_neural.nn.gnn.GraphNet` on half the squared
    error (or half the Poisson deviance with a log link), with every
    training option of :class:`~sklears_neural.MLPRegressor`. X is taken as
    by :class:`GNNClassifier`. Targets are not scaled: standardize ``y``
    (e.g. with ``TransformedTargetRegressor``) when its scale is far from 1.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"poisson"`` needs ``y >= 0`` and predicts ``exp`` of the network's
        output.
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out R^2 per epoch with ``early_stopping``.
    validation_loss_curve_ : list of float or None
        Held-out loss per epoch with ``early_stopping``.
    n_features_in_ : int
        Node features per node seen in fit.
    n_edge_features_in_ : int
        Edge features per edge seen in fit (0 without ``edge_attrs``).
    out_activation_ : str
        ``"identity"`` or ``"exp"``.
    module_ : GraphNet
        The trained network.

    See Also
    --------
    GNNClassifier : The classification counterpart.

    Examples
    --------
    >>> import networkx as nx
    >>> from sklears_neural.models.gnn import GNNRegressor
    >>> X = [nx.path_graph(n) for n in range(3, 13)]
    >>> reg = GNNRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    >>> reg.fit(X, [G.number_of_nodes() / 10 for G in X]).predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {
        **_BaseGNN._parameter_constraints,
        **NeuralRegressorMixin._parameter_constraints,
    }

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        conv="gin",
        *,
        loss="squared_error",
        heads=1,
        concat_heads=True,
        aggr="mean",
        pooling="sum",
        hierarchical=None,
        pool_ratio=0.5,
        residual=False,
        norm=None,
        dropout=0.0,
        activation="gelu",
        node_attrs=None,
        node_features="constant",
        edge_attrs=None,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.01,
        power_t=0.5,
        max_iter=100,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.conv = conv
        self.loss = loss
        self.heads = heads
        self.concat_heads = concat_heads
        self.aggr = aggr
        self.pooling = pooling
        self.hierarchical = hierarchical
        self.pool_ratio = pool_ratio
        self.residual = residual
        self.norm = norm
        self.dropout = dropout
        self.activation = activation
        self.node_attrs = node_attrs
        self.node_features = node_features
        self.edge_attrs = edge_attrs
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment


#: The node-level estimators' parameters: no readout.
_NODE_CONSTRAINTS = {
    **{name: rule for name, rule in _BaseGNN._parameter_constraints.items()
       if name not in ("pooling", "hierarchical", "pool_ratio")},
    "node_features": [StrOptions(set(NODE_LEVEL_FEATURES))],
}

#: Their parameter docs: one graph, so one-hot node ids are a choice.
_NODE_ARCHITECTURE = {
    **_ARCHITECTURE,
    "node_features": """\
node_features : {"constant", "degree", "constant+degree", "identity"}, default="constant"
    Node features of a graph that carries none (``node_attrs=None`` for a
    networkx graph, a ``Data`` without ``x``, a pair with ``None``
    features): a column of ones, the in-degree, both, or ``"identity"``,
    one column per node (its one-hot id, as in Kipf and Welling's karate
    club example). Identity features tie the model to the training graph:
    ``predict`` needs a graph of as many nodes, and transfers nothing to
    another graph.""",
}


class _NodeLevel:
    """What the node-level estimators change: one graph, nodes as samples.

    A subclass says which targets mark an unlabelled node
    (``_unlabelled``) and how its message names them (``_UNLABELLED``).
    """

    # "auto": every labelled node in one batch (one message-passing run over
    # the whole graph per step, as transductive GCN training does).
    _auto_batch_size = None

    def _input_kind(self):
        return NodeInput(node_attrs=self.node_attrs, node_features=self.node_features,
                         edge_attrs=self.edge_attrs)

    def _build_module(self, n_features_in, n_outputs):
        spec = _BaseGNN._build_module(self, n_features_in, n_outputs)
        kwargs = {**spec.kwargs, "level": "node", "pooling": "sum", "hierarchical": None}
        return ModuleSpec(spec.module_class, kwargs)

    def _labelled(self, X, y, sample_weight):
        """The view of the labelled nodes, their targets and weights."""
        view = to_node_view(X, node_attrs=self.node_attrs, node_features=self.node_features,
                            edge_attrs=self.edge_attrs, owner=type(self).__name__)
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != len(view):
            raise ValueError(
                f"y has {y.shape[0] if y.ndim else 0} targets but the graph has "
                f"{len(view)} nodes; {type(self).__name__} takes one target per node "
                f"({self._UNLABELLED}: unlabelled)."
            )
        unlabelled = self._unlabelled(y)
        if unlabelled.all():
            raise ValueError(
                f"Every node is unlabelled ({self._UNLABELLED}): at least one labelled "
                "node is needed."
            )
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)
            if sample_weight.ndim == 1 and len(sample_weight) == len(view):
                sample_weight = sample_weight[~unlabelled]
        keep = np.flatnonzero(~unlabelled)
        return view[keep], y[keep], sample_weight

    def fit(self, X, y, sample_weight=None):
        """Fit on the labelled nodes of one graph.

        Parameters
        ----------
        X : graph
            One networkx graph, PyG ``Data`` or ``(adjacency, node_features)`` pair.
        y : array-like of shape (n_nodes,) or (n_nodes, n_outputs)
            One target per node; the class docstring says which value marks
            an unlabelled node (transductive, as scikit-learn's
            ``LabelSpreading``): those nodes take part in message passing but
            not in the loss.
        sample_weight : array-like of shape (n_nodes,), default=None
            Weights of all nodes (those of unlabelled nodes are unused).

        Returns
        -------
        self
        """
        # Parameters first, as fit's own validation would check them.
        self._validate_params()
        view, y, sample_weight = self._labelled(X, y, sample_weight)
        return super().fit(view, y, sample_weight)

    def _raw_outputs(self, X, forward=None, module=None):
        # The core predicts in chunks of nodes (inference.PREDICT_CHUNK), and
        # each chunk's output needs message passing over the whole graph: run
        # it once per call and let every chunk index the result. The memo
        # lives in this call only (thread-safe, never stale); it is keyed by
        # the module and node features, since the core may switch to a
        # float64 copy of the network, with its own dataset, within a call.
        if self.__dict__.get("inference_backend", "torch") != "torch":
            return super()._raw_outputs(X, forward, module)
        inner = self._forward if forward is None else forward
        memo = {}

        def whole_graph_once(net, inputs):
            x, edge_index, nodes, edge_attr = inputs
            key = (id(net), id(x))
            if key not in memo:
                # Holding net and x keeps their ids from being reused.
                memo[key] = (net, x, inner(net, (x, edge_index, None, edge_attr)))
            return memo[key][2][nodes]

        return super()._raw_outputs(X, whole_graph_once, module)

    def score(self, X, y, sample_weight=None):
        """The task's score (accuracy or R^2) on the labelled nodes of ``y``.

        Unlabelled nodes are left out, so ``y`` may hold the targets of a
        held-out set of nodes only, the others marked unlabelled.
        """
        view, y, sample_weight = self._labelled(X, y, sample_weight)
        return super().score(view, y, sample_weight)


@register_estimator
@document_parameters(extra=_NODE_ARCHITECTURE)
class GNNNodeClassifier(_NodeLevel, NeuralClassifierMixin, ClassifierMixin, _BaseGNN):
    """Graph neural network node classifier: one label per node of one graph.

    Transductive semi-supervised learning with scikit-learn's convention:
    ``fit(graph, y)`` with one label per node and -1 for unlabelled nodes
    (as ``LabelSpreading``); every node takes part in message passing, the
    labelled ones in the loss. ``predict(graph)`` returns one label per
    node; on a new graph it predicts inductively (meaningful for "sage"
    and "gin", whose layers do not depend on the training graph's size).
    Trains a :class:`~sklears_neural.nn.gnn.GraphNet` with ``level="node"``
    (no pooling). ``batch_size="auto"`` trains on all labelled nodes at
    once: one step per epoch.

    Parameters
    ----------
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight``.
    <shared parameters>

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (-1 excluded).
    <shared attributes>
    n_features_in_ : int
        Node features per node seen in fit.
    n_edge_features_in_ : int
        Edge features per edge seen in fit (0 without ``edge_attrs``).
    module_ : GraphNet
        The trained network (``level="node"``).

    Examples
    --------
    >>> import networkx as nx
    >>> import numpy as np
    >>> from sklears_neural.models.gnn import GNNNodeClassifier
    >>> G = nx.karate_club_graph()
    >>> y = np.full(34, -1)
    >>> y[[0, 33]] = [0, 1]
    >>> clf = GNNNodeClassifier(max_iter=20, random_state=0).fit(G, y)
    >>> clf.predict(G).shape
    (34,)
    """

    _parameter_constraints: dict = {
        **_NODE_CONSTRAINTS,
        **NeuralClassifierMixin._parameter_constraints,
    }
    _UNLABELLED = "-1"

    def _unlabelled(self, y):
        if y.ndim == 1 and y.dtype.kind in "iuf":
            return y == -1
        if y.ndim == 1 and y.dtype.kind == "O":
            return np.array([isinstance(v, numbers.Number) and v == -1 for v in y],
                            dtype=bool)
        return np.zeros(len(y), dtype=bool)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on the labelled nodes of one graph (label -1: unlabelled).

        Parameters
        ----------
        X : graph
        y : array-like of shape (n_nodes,)
        classes : array-like of shape (n_classes,), default=None
            All classes, on the first call.
        sample_weight : array-like of shape (n_nodes,), default=None

        Returns
        -------
        self
        """
        self._validate_params()
        view, y, sample_weight = self._labelled(X, y, sample_weight)
        return super().partial_fit(view, y, classes=classes, sample_weight=sample_weight)

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        conv="gcn",
        *,
        heads=1,
        concat_heads=True,
        aggr="mean",
        residual=False,
        norm=None,
        dropout=0.0,
        activation="relu",
        node_attrs=None,
        node_features="constant",
        edge_attrs=None,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.01,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        class_weight=None,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.conv = conv
        self.heads = heads
        self.concat_heads = concat_heads
        self.aggr = aggr
        self.residual = residual
        self.norm = norm
        self.dropout = dropout
        self.activation = activation
        self.node_attrs = node_attrs
        self.node_features = node_features
        self.edge_attrs = edge_attrs
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.class_weight = class_weight
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment


@register_estimator
@document_parameters(extra=_NODE_ARCHITECTURE)
class GNNNodeRegressor(_NodeLevel, NeuralRegressorMixin, RegressorMixin, _BaseGNN):
    """Graph neural network node regressor: one target (or several) per node.

    The regression counterpart of :class:`GNNNodeClassifier`:
    ``fit(graph, y)`` with one float target per node, where **NaN marks an
    unlabelled node** (the analogue of the classifier's -1, which is a
    valid regression target); every node takes part in message passing,
    the labelled ones in the loss. With several outputs (``y`` of shape
    ``(n_nodes, n_outputs)``) a node is unlabelled when its whole row is
    NaN; a row with some NaN is refused. ``predict(graph)`` returns one
    value (or row) per node, ``score(graph, y)`` the R^2 on the labelled
    nodes of ``y``. Trains half the squared error (or half the Poisson
    deviance) with every training option of
    :class:`~sklears_neural.MLPRegressor`; targets are not scaled.

    ``predict`` on a new graph runs the fitted layers on it (inductive): no
    layer holds state tied to the training graph's nodes (GCN's
    normalization is recomputed for each graph). GraphSAGE and GIN were
    designed for this; GCN and GAT transfer as well when the new graph's
    degrees resemble the training graph's, since GCN scales messages by
    degree. ``node_features="identity"`` (one column per node) ties a model
    to its graph: another graph needs the same number of nodes.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"poisson"`` needs ``y >= 0`` and predicts ``exp`` of the network's
        output.
    <shared parameters>

    Attributes
    ----------
    <shared attributes>
    validation_scores_ : list of float or None
        Held-out R^2 per epoch with ``early_stopping`` (held-out labelled
        nodes).
    validation_loss_curve_ : list of float or None
        Held-out loss per epoch with ``early_stopping``.
    n_features_in_ : int
        Node features per node seen in fit.
    n_edge_features_in_ : int
        Edge features per edge seen in fit (0 without ``edge_attrs``).
    n_outputs_ : int
        Targets per node.
    out_activation_ : str
        ``"identity"`` or ``"exp"``.
    module_ : GraphNet
        The trained network (``level="node"``).

    See Also
    --------
    GNNNodeClassifier : The classification counterpart (label -1: unlabelled).
    GNNRegressor : One target per graph.

    Examples
    --------
    >>> import networkx as nx
    >>> import numpy as np
    >>> from sklears_neural.models.gnn import GNNNodeRegressor
    >>> G = nx.karate_club_graph()
    >>> y = np.array([d / 10 for _, d in G.degree()])
    >>> y[::2] = np.nan                                  # unlabelled nodes
    >>> reg = GNNNodeRegressor(max_iter=20, random_state=0).fit(G, y)
    >>> reg.predict(G).shape
    (34,)
    """

    _parameter_constraints: dict = {
        **_NODE_CONSTRAINTS,
        **NeuralRegressorMixin._parameter_constraints,
    }
    _UNLABELLED = "NaN"

    def _unlabelled(self, y):
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{type(self).__name__} takes float targets (NaN: unlabelled); "
                f"y cannot be read as numbers ({exc})."
            ) from None
        missing = np.isnan(y).reshape(len(y), -1)
        partly = missing.any(axis=1) & ~missing.all(axis=1)
        if partly.any():
            raise ValueError(
                f"Node {int(np.flatnonzero(partly)[0])} has NaN in some of its targets "
                "but not all. A node is unlabelled when all its targets are NaN; a "
                "node with some targets is not supported (fit one model per output)."
            )
        return missing.all(axis=1)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on the labelled nodes of one graph (NaN: unlabelled).

        Parameters
        ----------
        X : graph
        y : array-like of shape (n_nodes,) or (n_nodes, n_outputs)
        sample_weight : array-like of shape (n_nodes,), default=None

        Returns
        -------
        self
        """
        self._validate_params()
        view, y, sample_weight = self._labelled(X, y, sample_weight)
        return super().partial_fit(view, y, sample_weight=sample_weight)

    def __init__(
        self,
        hidden_layer_sizes=(64, 64),
        conv="gcn",
        *,
        loss="squared_error",
        heads=1,
        concat_heads=True,
        aggr="mean",
        residual=False,
        norm=None,
        dropout=0.0,
        activation="relu",
        node_attrs=None,
        node_features="constant",
        edge_attrs=None,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.01,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        l1_ratio=0.0,
        weight_decay=0.0,
        warmup_iters=0,
        clip_grad_norm=None,
        clip_grad_value=None,
        device="cpu",
        strategy=None,
        precision="float32",
        inference_backend="torch",
        callbacks=None,
        augment=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.conv = conv
        self.loss = loss
        self.heads = heads
        self.concat_heads = concat_heads
        self.aggr = aggr
        self.residual = residual
        self.norm = norm
        self.dropout = dropout
        self.activation = activation
        self.node_attrs = node_attrs
        self.node_features = node_features
        self.edge_attrs = edge_attrs
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.l1_ratio = l1_ratio
        self.weight_decay = weight_decay
        self.warmup_iters = warmup_iters
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.device = device
        self.strategy = strategy
        self.precision = precision
        self.inference_backend = inference_backend
        self.callbacks = callbacks
        self.augment = augment


class GraphFeaturizer(TransformerMixin, BaseEstimator):
    """networkx graphs to PyTorch Geometric ``Data`` objects, for a Pipeline.

    Stateless apart from the node-feature width it checks: ``fit`` learns
    ``n_features_in_`` (node features per node), ``transform`` returns a
    list of ``Data`` (``x`` float32, ``edge_index`` int64; undirected graphs
    get both directions of each edge), so ``Pipeline([("graphs",
    GraphFeaturizer(node_attrs=[...])), ("gnn", GNNClassifier())])`` starts
    from raw networkx graphs. Also takes ``Data`` objects and
    ``(adjacency, node_features)`` pairs. With ``edge_attrs``, each ``Data``
    carries ``edge_attr`` (float32, one row per edge), which a downstream
    estimator reads with ``edge_attrs="edge_attr"``.

    Parameters
    ----------
    node_attrs : list of str, str or None, default=None
        networkx node attributes read as node features, in order.
    node_features : {"constant", "degree", "constant+degree"}, default="constant"
        Features of graphs that carry none.
    edge_attrs : list of str, str or None, default=None
        Edge attributes read as edge features, in order (see
        :class:`GNNClassifier`).

    Attributes
    ----------
    n_features_in_ : int
        Node features per node seen in fit.
    n_edge_features_in_ : int
        Edge features per edge seen in fit (0 without ``edge_attrs``).

    Examples
    --------
    >>> import networkx as nx
    >>> from sklears_neural.models.gnn import GraphFeaturizer
    >>> data = GraphFeaturizer(node_features="degree").fit_transform([nx.path_graph(3)])
    >>> data[0].x.ravel().tolist(), data[0].edge_index.shape
    ([1.0, 2.0, 1.0], torch.Size([2, 4]))
    """

    _parameter_constraints: dict = {
        "node_attrs": [None, str, list, tuple],
        "node_features": [StrOptions(set(NODE_FEATURES))],
        "edge_attrs": [None, str, list, tuple],
    }

    def __init__(self, node_attrs=None, node_features="constant", edge_attrs=None):
        self.node_attrs = node_attrs
        self.node_features = node_features
        self.edge_attrs = edge_attrs

    def _kind(self):
        return GraphInput(node_attrs=self.node_attrs, node_features=self.node_features,
                          edge_attrs=self.edge_attrs)

    def fit(self, X, y=None):
        """Learn the node- and edge-feature widths of ``X``; returns self."""
        self._validate_params()
        self._kind().validate(self, X, reset=True)
        return self

    def transform(self, X):
        """``X`` as a list of ``torch_geometric.data.Data``."""
        import torch

        check_is_fitted(self, "n_features_in_")
        import_torch_geometric()
        from torch_geometric.data import Data

        graphs = self._kind().validate(self, X, reset=False)
        x = torch.as_tensor(graphs.x, dtype=torch.float32)
        edges = torch.as_tensor(graphs.edge_index)
        attrs = (None if graphs.edge_attr is None
                 else torch.as_tensor(graphs.edge_attr, dtype=torch.float32))
        out = []
        for g in range(len(graphs)):
            a, b = graphs.node_ptr[g], graphs.node_ptr[g + 1]
            ea, eb = graphs.edge_ptr[g], graphs.edge_ptr[g + 1]
            data = Data(x=x[a:b], edge_index=edges[:, ea:eb] - int(a))
            if attrs is not None:
                data.edge_attr = attrs[ea:eb]
            out.append(data)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = True
        return tags
