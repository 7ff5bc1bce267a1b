"""Graphs as X: the input kind and dataset of the graph neural network family.

One sample is a graph. X is a list (or 1-D object array) of graphs, each

* a networkx graph: nodes in ``G.nodes`` order, edges in both directions
  for undirected graphs; node features from the attributes named by
  ``node_attrs`` (each a number or a 1-D array, concatenated), or, with
  ``node_attrs=None``, the features ``node_features`` names ("constant":
  one column of ones; "degree": the degree; "constant+degree": both);
* a PyTorch Geometric ``Data`` (``x`` and ``edge_index``; without ``x`` the
  ``node_features`` rule), or
* a pair ``(adjacency, node_features)``: a dense or scipy sparse
  ``(n_nodes, n_nodes)`` matrix (entry ``[i, j]`` nonzero: an edge
  ``i -> j``) and an ``(n_nodes, n_features)`` (or ``(n_nodes,)``) array.

Edge features are read when ``edge_attrs`` names them: networkx edge
attributes, attributes of a ``Data`` (``edge_attr``, ``edge_weight``), or
``"weight"``, the nonzero values of a pair's adjacency matrix.

:class:`GraphInput` converts X once into :class:`Graphs`, all graphs
pre-collated into one disjoint graph (node features stacked, edge indices
offset, edge features in edge order, ``node_ptr``/``edge_ptr`` giving each
graph's slices). It has
``len``, ``shape == (n_graphs,)`` and indexing by rows (``X[rows]``,
``X[rows, ...]`` as scikit-learn's ``_safe_indexing`` asks), so
scikit-learn's splitters, ``cross_val_score`` and ``GridSearchCV`` index
it as any X; they index a plain list of graphs as well, before conversion.

:class:`GraphData` batches :class:`Graphs` for training and prediction: a
batch of rows is a slice (consecutive rows: three tensor slices) or a
gather computed with vectorized index arithmetic, never a Python loop over
graphs; the module receives ``(x, edge_index, batch, edge_attr, n_graphs)``
in PyG's layout.

torch_geometric and networkx are optional (``pip install
'sklears-neural[graph]'``): they are imported when a graph is converted or
a graph network is built, never when the package is imported.
"""

import copy
import numbers

import numpy as np
import scipy.sparse as sp
import torch

from sklears_neural.core.data import DENSE_CHUNK_BYTES, _row_slices, as_tensor

__all__ = [
    "GRAPH_EXTRA_HINT",
    "NODE_FEATURES",
    "NODE_LEVEL_FEATURES",
    "GraphData",
    "GraphInput",
    "Graphs",
    "NodeData",
    "NodeInput",
    "NodeView",
    "import_networkx",
    "import_torch_geometric",
    "to_graphs",
    "to_node_view",
]

#: What to install for the graph family.
GRAPH_EXTRA_HINT = "pip install 'sklears-neural[graph]'"

#: Node features made for graphs that carry none (``node_attrs=None``).
NODE_FEATURES = ("constant", "degree", "constant+degree")
#: ... and for the node-level estimators, which see one graph: "identity"
#: (one-hot node ids, a column per node) ties a model to its graph's size.
NODE_LEVEL_FEATURES = NODE_FEATURES + ("identity",)


def import_torch_geometric():
    """``torch_geometric``, or an ImportError naming the extra to install."""
    try:
        import torch_geometric
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The graph neural network estimators need PyTorch Geometric "
            f"(torch_geometric), which is not installed ({exc}). Install the "
            f"optional extra: {GRAPH_EXTRA_HINT}"
        ) from exc
    return torch_geometric


def import_networkx():
    """``networkx``, or an ImportError naming the extra to install."""
    try:
        import networkx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"Converting networkx graphs needs networkx ({exc}). Install the "
            f"optional extra: {GRAPH_EXTRA_HINT}"
        ) from exc
    return networkx


def _owner(estimator):
    return type(estimator).__name__


class Graphs:
    """Many graphs pre-collated into one disjoint graph, indexable by graph.

    Parameters
    ----------
    x : ndarray of shape (n_nodes_total, n_features), float64
        Node features of all graphs, graph after graph.
    edge_index : ndarray of shape (2, n_edges_total), int64
        Source and target node of every edge, as global node numbers
        (graph ``g``'s nodes are ``node_ptr[g]:node_ptr[g + 1]``).
    node_ptr, edge_ptr : ndarray of shape (n_graphs + 1,), int64
        Offsets of each graph's nodes and edges.
    edge_attr : ndarray of shape (n_edges_total, n_edge_features) or None, default=None
        Edge features (float64), in the order of ``edge_index``; None when
        no edge attribute is read (``edge_attrs=None``).
    """

    def __init__(self, x, edge_index, node_ptr, edge_ptr, edge_attr=None):
        self.x = x
        self.edge_index = edge_index
        self.node_ptr = node_ptr
        self.edge_ptr = edge_ptr
        self.edge_attr = edge_attr

    def __len__(self):
        return len(self.node_ptr) - 1

    @property
    def shape(self):
        return (len(self),)

    @property
    def n_features(self):
        return self.x.shape[1]

    @property
    def n_edge_features(self):
        """Edge features per edge: 0 without edge attributes."""
        return 0 if self.edge_attr is None else self.edge_attr.shape[1]

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def size(self):
        return self.x.size

    def __array__(self, dtype=None, copy=None):
        # The node features: what range checks (check_representable) read.
        return self.x if dtype is None else self.x.astype(dtype)

    def __getitem__(self, rows):
        if isinstance(rows, tuple) and len(rows) == 2 and rows[1] is Ellipsis:
            rows = rows[0]  # scikit-learn's _safe_indexing asks for X[rows, ...]
        if isinstance(rows, numbers.Integral):
            rows = [rows]
        x, edge_index, edge_attr, node_ptr, edge_ptr = _take(
            self.x, self.edge_index, self.edge_attr, self.node_ptr, self.edge_ptr, rows)
        return Graphs(x, edge_index, node_ptr, edge_ptr, edge_attr)

    def __iter__(self):
        for g in range(len(self)):
            yield self[g]

    def __repr__(self):
        return (f"Graphs(n_graphs={len(self)}, n_nodes={self.x.shape[0]}, "
                f"n_edges={self.edge_index.shape[1]}, n_features={self.n_features}, "
                f"n_edge_features={self.n_edge_features})")


def _rows_array(rows, n):
    """``rows`` (slice, bool mask, ints, tensor) as an int64 array."""
    if isinstance(rows, torch.Tensor):
        rows = rows.cpu().numpy()
    if isinstance(rows, slice):
        return np.arange(n, dtype=np.int64)[rows]
    rows = np.asarray(rows)
    if rows.dtype == bool:
        return np.flatnonzero(rows)
    return rows.astype(np.int64, copy=False).reshape(-1) % max(n, 1)


def _take(x, edge_index, edge_attr, node_ptr, edge_ptr, rows, batch_size=None):
    """Graphs ``rows`` of a collated set: vectorized gathers, no loop over graphs.

    Works on NumPy arrays or torch tensors alike (x, edge_index, edge_attr,
    which may be None); the offsets are NumPy. Returns ``(x, edge_index,
    edge_attr, node_ptr, edge_ptr)`` sliced, relabelled and re-offset. With
    ``batch_size``, the node ids of ``edge_index`` count from the first node
    of each run of ``batch_size`` rows (an epoch's batches) instead of the
    first row's.
    """
    n = len(node_ptr) - 1
    if isinstance(rows, slice) and rows.step in (None, 1) and batch_size is None:
        start, stop, _ = rows.indices(n)
        stop = max(start, stop)
        a, b = node_ptr[start], node_ptr[stop]
        ea, eb = edge_ptr[start], edge_ptr[stop]
        return (x[a:b], edge_index[:, ea:eb] - a,
                None if edge_attr is None else edge_attr[ea:eb],
                node_ptr[start:stop + 1] - a, edge_ptr[start:stop + 1] - ea)
    rows = _rows_array(rows, n)
    counts = node_ptr[rows + 1] - node_ptr[rows]
    ecounts = edge_ptr[rows + 1] - edge_ptr[rows]
    new_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_ptr[1:])
    new_eptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(ecounts, out=new_eptr[1:])
    nodes = np.repeat(node_ptr[rows] - new_ptr[:-1], counts) + np.arange(new_ptr[-1])
    edges = np.repeat(edge_ptr[rows] - new_eptr[:-1], ecounts) + np.arange(new_eptr[-1])
    row_shift = new_ptr[:-1] - node_ptr[rows]
    if batch_size is not None:
        row_shift -= new_ptr[np.arange(len(rows)) // batch_size * batch_size]
    shift = np.repeat(row_shift, ecounts)
    if isinstance(x, torch.Tensor):
        nodes_t = torch.as_tensor(nodes, device=x.device)
        edges_t = torch.as_tensor(edges, device=edge_index.device)
        shift_t = torch.as_tensor(shift, device=edge_index.device)
        return (torch.index_select(x, 0, nodes_t),
                _gather_edges(edge_index, edges_t, shift_t),
                None if edge_attr is None else torch.index_select(edge_attr, 0, edges_t),
                new_ptr, new_eptr)
    return (x[nodes], edge_index[:, edges] + shift,
            None if edge_attr is None else edge_attr[edges], new_ptr, new_eptr)


def _gather_edges(edge_index, edges, shift):
    """``edge_index[:, edges] + shift``, a row at a time.

    ``index_select`` along the second axis of a ``(2, n_edges)`` tensor
    costs 8x two 1-D ``index_select`` (400 us against 50 us for 40,000
    edges on this machine's CPU).
    """
    out = torch.empty((2, len(edges)), dtype=edge_index.dtype, device=edge_index.device)
    for row in range(2):
        torch.index_select(edge_index[row], 0, edges, out=out[row])
        out[row].add_(shift)
    return out


# -- conversion ----------------------------------------------------------------------


def _default_features(n_nodes, degree, node_features):
    if node_features == "identity":
        return np.eye(n_nodes)
    columns = []
    if "constant" in node_features:
        columns.append(np.ones(n_nodes))
    if "degree" in node_features:
        columns.append(np.asarray(degree, dtype=np.float64))
    return np.stack(columns, axis=1)


def _degrees(edge_index, n_nodes):
    """In-degree of every node (the number of messages it receives)."""
    return np.bincount(edge_index[1], minlength=n_nodes).astype(np.float64)


def _attribute_rows(items, names, i, what, option):
    """Rows of float64 values from ``(key, attribute dict)`` items, concatenated by name."""
    rows = []
    for key, data in items:
        values = []
        for name in names:
            if name not in data:
                raise ValueError(
                    f"Graph {i} of X: {what} {key!r} has no attribute {name!r} "
                    f"({option}={list(names)!r}). Every {what} needs every attribute "
                    f"named in {option}."
                )
            values.append(np.asarray(data[name], dtype=np.float64).reshape(-1))
        rows.append(np.concatenate(values) if values else np.zeros(0))
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ValueError(
            f"Graph {i} of X: its {what}s have {option} {list(names)!r} of different "
            f"sizes ({sorted(widths)}). Every {what} needs the same features."
        )
    return rows


def _from_networkx(G, i, node_attrs, node_features, edge_attrs, owner):
    nodes = list(G.nodes)
    n = len(nodes)
    position = {node: k for k, node in enumerate(nodes)}
    triples = list(G.edges(data=True))
    pairs = [(position[u], position[v]) for u, v, _ in triples]
    edges = np.asarray(pairs, dtype=np.int64).reshape(-1, 2).T
    edge_attr = None
    if edge_attrs is not None:
        rows = _attribute_rows((((u, v), d) for u, v, d in triples), edge_attrs, i,
                               "edge", "edge_attrs")
        # No edges: width 0 for now; to_graphs gives it the others' width.
        edge_attr = np.stack(rows) if rows else np.zeros((0, 0))
    if not G.is_directed():
        # Both directions of each edge (a self-loop once), with its attributes.
        loops = edges[0] == edges[1]
        edges = np.concatenate([edges, edges[::-1][:, ~loops]], axis=1)
        if edge_attr is not None:
            edge_attr = np.concatenate([edge_attr, edge_attr[~loops]])
    if node_attrs is None:
        x = _default_features(n, _degrees(edges, n), node_features)
    else:
        rows = _attribute_rows(G.nodes(data=True), node_attrs, i, "node", "node_attrs")
        x = np.stack(rows) if rows else np.zeros((0, 0))
    return x, edges, edge_attr


def _pyg_edge_attr(data, names, i, n_edges):
    """The Data attributes ``names`` as (n_edges, k) columns ("weight": ``edge_weight``)."""
    columns = []
    for name in names:
        value = getattr(data, name, None)
        if value is None and name == "weight":
            value = getattr(data, "edge_weight", None)
        if value is None:
            raise ValueError(
                f"Graph {i} of X (a torch_geometric Data) has no attribute {name!r} "
                "named in edge_attrs. For a Data, edge_attrs names its attributes, "
                "such as 'edge_attr' or 'edge_weight' ('weight' reads edge_weight)."
            )
        value = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach")
                           else value, dtype=np.float64)
        if value.ndim == 1:
            value = value[:, None]
        if value.ndim != 2 or value.shape[0] != n_edges:
            raise ValueError(
                f"Graph {i} of X: its edge attribute {name!r} has shape "
                f"{value.shape} but the graph has {n_edges} edges; edge attributes "
                "need shape (n_edges,) or (n_edges, k), a row per column of edge_index."
            )
        columns.append(value)
    return np.concatenate(columns, axis=1)


def _from_pyg(data, i, node_features, edge_attrs):
    edge_index = data.edge_index
    edges = (np.zeros((2, 0), dtype=np.int64) if edge_index is None
             else edge_index.detach().cpu().numpy().astype(np.int64))
    n = int(data.num_nodes) if data.num_nodes is not None else 0
    if data.x is None:
        x = _default_features(n, _degrees(edges, n), node_features)
    else:
        x = data.x.detach().cpu().numpy().astype(np.float64)
    edge_attr = (None if edge_attrs is None
                 else _pyg_edge_attr(data, edge_attrs, i, edges.shape[1]))
    return x, edges, edge_attr


def _from_pair(pair, i, node_features, edge_attrs, owner):
    adjacency, features = pair
    A = sp.coo_matrix(adjacency) if not sp.issparse(adjacency) else adjacency.tocoo()
    if A.shape[0] != A.shape[1]:
        raise ValueError(
            f"Graph {i} of X: its adjacency matrix has shape {A.shape}; it must be "
            "square (n_nodes, n_nodes)."
        )
    mask = A.data != 0
    edges = np.stack([A.row[mask], A.col[mask]]).astype(np.int64)
    order = np.lexsort((edges[1], edges[0]))
    edges = edges[:, order]
    edge_attr = None
    if edge_attrs is not None:
        if list(edge_attrs) != ["weight"]:
            raise ValueError(
                f"Graph {i} of X is an (adjacency, node_features) pair, whose only "
                "edge attribute is 'weight' (the adjacency matrix's nonzero values); "
                f"got edge_attrs={list(edge_attrs)!r}. Use edge_attrs='weight', or "
                "pass torch_geometric Data objects with edge_attr."
            )
        edge_attr = np.asarray(A.data[mask], dtype=np.float64)[order][:, None]
    n = A.shape[0]
    if features is None:
        x = _default_features(n, _degrees(edges, n), node_features)
    else:
        try:
            x = np.asarray(features, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Graph {i} of X: its node features cannot be read as numbers ({exc})."
            ) from None
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(
                f"Graph {i} of X: its node features have shape {x.shape}, but its "
                f"adjacency matrix has {n} nodes; {owner} takes (n_nodes, "
                "n_features) or (n_nodes,) features."
            )
    return x, edges, edge_attr


def _is_networkx(item):
    module = type(item).__module__ or ""
    return module.startswith("networkx")


def _is_pyg(item):
    module = type(item).__module__ or ""
    return module.startswith("torch_geometric")


def _convert(item, i, node_attrs, node_features, edge_attrs, owner):
    if _is_networkx(item):
        return _from_networkx(item, i, node_attrs, node_features, edge_attrs, owner)
    if _is_pyg(item):
        return _from_pyg(item, i, node_features, edge_attrs)
    if isinstance(item, tuple) and len(item) == 2:
        return _from_pair(item, i, node_features, edge_attrs, owner)
    raise TypeError(
        f"Graph {i} of X is a {type(item).__name__}; {owner} takes a list of graphs, "
        "each a networkx graph, a torch_geometric Data, or an (adjacency, "
        "node_features) pair. A 2-D array is not a list of graphs: for rows of "
        "features use MLPClassifier / MLPRegressor."
    )


def to_graphs(X, *, node_attrs=None, node_features="constant", edge_attrs=None,
              owner="GraphInput"):
    """X (a list or object array of graphs, or :class:`Graphs`) as :class:`Graphs`.

    Parameters
    ----------
    X : list, tuple, 1-D object ndarray or Graphs
    node_attrs : list of str or None, default=None
        networkx node attributes to read as features, in order.
    node_features : {"constant", "degree", "constant+degree", "identity"}, default="constant"
        Features of graphs without any (``node_attrs=None``, a ``Data``
        without ``x``, a pair with ``None`` features); "identity" is one
        column per node (an ``n_nodes`` identity matrix), for one graph.
    edge_attrs : list of str, str or None, default=None
        Edge features to read, concatenated in order: networkx edge
        attributes; attributes of a ``Data`` (``"edge_attr"``,
        ``"edge_weight"``; ``"weight"`` falls back to ``edge_weight``); for
        an ``(adjacency, node_features)`` pair only ``"weight"``, the
        adjacency matrix's nonzero values. None: no edge features.
    owner : str
        Names the estimator in messages.

    Returns
    -------
    Graphs
        float64 features, checked: one feature width (and edge feature
        width), finite, no empty graph.

    Raises
    ------
    TypeError
        If X is not a list of graphs (a 2-D numeric array, a sparse matrix).
    ValueError
        On an empty graph, NaN/inf features, or mixed feature widths.
    """
    if isinstance(X, Graphs):
        graphs = X
    else:
        if sp.issparse(X) or isinstance(X, (str, bytes)) or (
            isinstance(X, np.ndarray) and (X.dtype != object or X.ndim != 1)
        ) or isinstance(X, torch.Tensor) or not hasattr(X, "__len__"):
            shape = getattr(X, "shape", None)
            raise TypeError(
                f"{owner} takes X as a list (or 1-D object array) of graphs: networkx "
                "graphs, torch_geometric Data objects or (adjacency, node_features) "
                f"pairs. Got {type(X).__name__}"
                + (f" of shape {tuple(shape)}" if shape is not None else "")
                + ". A 2-D array is not a list of graphs: for rows of features use "
                "MLPClassifier / MLPRegressor; GraphFeaturizer converts networkx graphs."
            )
        if node_features not in NODE_LEVEL_FEATURES:
            raise ValueError(
                f"The 'node_features' parameter of {owner} must be one of "
                f"{', '.join(map(repr, NODE_LEVEL_FEATURES))}. Got {node_features!r} "
                "instead."
            )
        if node_attrs is not None:
            node_attrs = [node_attrs] if isinstance(node_attrs, str) else list(node_attrs)
        if edge_attrs is not None:
            edge_attrs = [edge_attrs] if isinstance(edge_attrs, str) else list(edge_attrs)
        xs, edges, attrs = [], [], []
        for i, item in enumerate(X):
            x, e, a = _convert(item, i, node_attrs, node_features, edge_attrs, owner)
            if x.shape[0] == 0:
                raise ValueError(
                    f"Graph {i} of X has no nodes; every graph needs at least one node."
                )
            if e.size and (e.min() < 0 or e.max() >= x.shape[0]):
                raise ValueError(
                    f"Graph {i} of X has an edge to node {int(e.max())}, but only "
                    f"{x.shape[0]} nodes."
                )
            xs.append(x)
            edges.append(e)
            attrs.append(a)
        if not xs:
            raise ValueError(
                f"Found array with 0 sample(s) while a minimum of 1 is required by {owner}."
            )
        widths = [x.shape[1] for x in xs]
        if len(set(widths)) > 1:
            bad = next(i for i, w in enumerate(widths) if w != widths[0])
            raise ValueError(
                f"The graphs of X have different numbers of node features: graph 0 has "
                f"{widths[0]}, graph {bad} has {widths[bad]}. Every node of every graph "
                "needs the same features."
            )
        counts = np.array([x.shape[0] for x in xs], dtype=np.int64)
        ecounts = np.array([e.shape[1] for e in edges], dtype=np.int64)
        node_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        edge_ptr = np.concatenate([[0], np.cumsum(ecounts)]).astype(np.int64)
        shift = np.repeat(node_ptr[:-1], ecounts)
        edge_index = np.concatenate(edges, axis=1) + shift
        # Sorted by target node: PyG's sequence aggregations (SAGE's "lstm")
        # need it. Graph g's targets lie in its node range, so each graph's
        # edges stay in its own edge_ptr segment; gathers keep the order.
        order = np.argsort(edge_index[1], kind="stable")
        edge_index = edge_index[:, order]
        edge_attr = None if edge_attrs is None else _stack_edge_attr(attrs, edge_attrs)[order]
        graphs = Graphs(np.concatenate(xs).astype(np.float64), edge_index,
                        node_ptr, edge_ptr, edge_attr)
    if graphs.x.shape[1] == 0:
        raise ValueError(
            f"The graphs of X have 0 node features; {owner} needs at least one. Name "
            "node attributes in node_attrs, or use node_attrs=None for constant or "
            "degree features."
        )
    if not np.isfinite(graphs.x).all():
        kind = "NaN" if np.isnan(graphs.x).any() else "infinity"
        bad = int(np.searchsorted(graphs.node_ptr, np.flatnonzero(
            ~np.isfinite(graphs.x).all(axis=1))[0], side="right") - 1)
        raise ValueError(
            f"Input X contains {kind} (node features of graph {bad}). {owner} does not "
            "accept missing values encoded as NaN: impute them first, or drop those graphs."
        )
    if graphs.edge_attr is not None and not np.isfinite(graphs.edge_attr).all():
        bad = int(np.searchsorted(graphs.edge_ptr, np.flatnonzero(
            ~np.isfinite(graphs.edge_attr).all(axis=1))[0], side="right") - 1)
        raise ValueError(
            f"Input X contains NaN or infinity in the edge attributes of graph {bad}. "
            f"{owner} needs finite edge features: impute them first."
        )
    return graphs


def _stack_edge_attr(attrs, names):
    """Per-graph edge features as one array; graphs without edges take the width."""
    widths = [a.shape[1] for a in attrs if a.shape[0]]
    if len(set(widths)) > 1:
        bad = next(i for i, a in enumerate(attrs) if a.shape[0] and a.shape[1] != widths[0])
        raise ValueError(
            f"The graphs of X have different numbers of edge features "
            f"(edge_attrs={names!r}): {widths[0]} on the first graph with edges, "
            f"{attrs[bad].shape[1]} on graph {bad}. Every edge needs the same features."
        )
    width = widths[0] if widths else len(names)
    return np.concatenate([a if a.shape[0] else np.zeros((0, width)) for a in attrs])


# -- the input kind and its dataset ---------------------------------------------------


class GraphInput:
    """One sample is a graph: the input kind of the graph-level GNN estimators.

    Parameters
    ----------
    node_attrs : list of str or None, default=None
        networkx node attributes read as node features.
    node_features : {"constant", "degree", "constant+degree", "identity"}, default="constant"
        Features of graphs that carry none.
    edge_attrs : list of str, str or None, default=None
        Edge features to read (see :func:`to_graphs`).
    """

    layout = "graph"

    def __init__(self, node_attrs=None, node_features="constant", edge_attrs=None):
        self.node_attrs = node_attrs
        self.node_features = node_features
        self.edge_attrs = edge_attrs

    def _graphs(self, estimator, X):
        return to_graphs(X, node_attrs=self.node_attrs, node_features=self.node_features,
                         edge_attrs=self.edge_attrs, owner=_owner(estimator))

    def _check_widths(self, estimator, graphs, *, reset):
        """Set (fit) or check (predict) ``n_features_in_`` and ``n_edge_features_in_``."""
        owner = _owner(estimator)
        if reset:
            estimator.n_features_in_ = int(graphs.n_features)
            estimator.n_edge_features_in_ = int(graphs.n_edge_features)
            estimator.__dict__.pop("feature_names_in_", None)
            return
        if graphs.n_features != estimator.n_features_in_:
            raise ValueError(
                f"X has {graphs.n_features} node features, but {owner} is expecting "
                f"{estimator.n_features_in_} node features as input."
            )
        # Models fitted before edge features existed have no attribute: 0.
        expected = getattr(estimator, "n_edge_features_in_", 0)
        if graphs.n_edge_features != expected:
            raise ValueError(
                f"X has {graphs.n_edge_features} edge features, but {owner} is "
                f"expecting {expected} (edge_attrs={self.edge_attrs!r})."
            )

    def validate(self, estimator, X, *, reset):
        """X as :class:`Graphs`; sets ``n_features_in_`` (node features) in fit."""
        graphs = self._graphs(estimator, X)
        self._check_widths(estimator, graphs, reset=reset)
        return graphs

    def validate_with_targets(self, estimator, X, y, *, reset, y_numeric=False):
        from sklearn.utils.validation import check_array

        graphs = self.validate(estimator, X, reset=reset)
        y = check_array(y, ensure_2d=False, dtype="numeric" if y_numeric else None,
                        input_name="y")
        if len(graphs) != y.shape[0]:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples: "
                f"[{len(graphs)}, {y.shape[0]}]"
            )
        return graphs, y

    def dataset(self, X, y=None, sample_weight=None, *, dtype, device,
                target_dtype=None):
        return GraphData(X, y, sample_weight, dtype=dtype, device=device,
                         target_dtype=target_dtype)

    def tags(self, tags):
        # X is not 2-D rows: scikit-learn's generic checks, which feed 2-D
        # arrays, do not apply (see doc/gnn.md and tests/test_gnn.py for the
        # checks that are run on graphs instead).
        tags.input_tags.two_d_array = False
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags


class GraphData:
    """Collated graphs, targets and sample weights of one fit.

    The protocol of :class:`~sklears_neural.core.data.ArrayData`
    (``n_samples``, ``batch(index) -> (inputs, y, w)``, ``all()``,
    ``chunks()``, ``sparse``, ``device``, ``dtype``); a batch's inputs are
    ``(x, edge_index, batch, edge_attr, n_graphs)``: the batch's graphs as
    one disjoint graph in PyG's layout, ``batch`` the graph (0 .. n-1 within
    the batch) of each node, ``edge_attr`` the edge features (or None) and
    ``n_graphs`` the number of graphs, a Python int, so the network never
    reads it back from the device. Node features and edges live on
    ``device`` once; a batch is slices (consecutive rows) or gathers.
    """

    sparse = False

    def __init__(self, X, y, sample_weight, *, dtype, device, target_dtype=None):
        if not isinstance(X, Graphs):
            X = to_graphs(X)
        self.device = device
        self.dtype = dtype
        self.n_samples = len(X)
        self.x = as_tensor(X.x, dtype, device)
        # Contiguous: the epoch's gathers read each row of it.
        self.edge_index = torch.as_tensor(X.edge_index, dtype=torch.int64).to(device)
        self.edge_index = self.edge_index.contiguous()
        self.edge_attr = (None if X.edge_attr is None
                          else as_tensor(X.edge_attr, dtype, device))
        self.node_ptr = X.node_ptr
        self.edge_ptr = X.edge_ptr
        self.y = None if y is None else as_tensor(y, target_dtype or dtype, device)
        self.w = (None if sample_weight is None
                  else as_tensor(sample_weight, dtype, device))

    def batch(self, index):
        """Graphs ``index`` as ``((x, edge_index, batch, edge_attr, n_graphs), y, w)``."""
        epoch_batch = self._epoch_batch(index)
        if epoch_batch is not None:
            return epoch_batch
        x, edge_index, edge_attr, node_ptr, _ = _take(
            self.x, self._edge_index(), self.edge_attr, self.node_ptr, self.edge_ptr,
            index)
        counts = torch.as_tensor(np.diff(node_ptr), device=self.device)
        n_graphs = len(counts)
        batch = torch.repeat_interleave(
            torch.arange(n_graphs, device=self.device), counts, output_size=x.shape[0])
        y = None if self.y is None else self.y[index]
        w = None if self.w is None else self.w[index]
        return (x, edge_index, batch, edge_attr, n_graphs), y, w

    def gathered(self, order, batch_size=None):
        """This data with its graphs in ``order``: one gather per epoch.

        The trainer asks for it once per shuffled epoch, so each batch is
        then a slice (consecutive graphs) rather than a gather of its own.
        With ``batch_size``, the batches' own arithmetic (node ids and graph
        ids counted from each batch's first node and graph) is done here
        too, once for the epoch, and a batch of the epoch
        (``slice(k * batch_size, (k + 1) * batch_size)``) is views only:
        per batch, Python work between two steps runs on caches the step
        just evicted and cost GIN's graph benchmark 5% of an epoch.

        Parameters
        ----------
        order : torch.Tensor
            A permutation of ``range(n_samples)``, int64.
        batch_size : int, optional
            The size of the slices the epoch will take.

        Returns
        -------
        GraphData
        """
        view = copy.copy(self)
        if batch_size is None or batch_size >= self.n_samples:
            batch_size = None
        (view.x, edge_index, view.edge_attr, view.node_ptr,
         view.edge_ptr) = _take(self.x, self.edge_index, self.edge_attr, self.node_ptr,
                                self.edge_ptr, order, batch_size)
        view.y = None if self.y is None else self.y[order]
        view.w = None if self.w is None else self.w[order]
        if batch_size is None:
            view.edge_index = edge_index
        else:
            # Node ids count from each batch's first node: the edge index of
            # the graphs in order is made only if a slice across batches
            # asks for it (a rank's share of a batch).
            view.edge_index = None
            graph_of_node = np.repeat(np.arange(self.n_samples) % batch_size,
                                      np.diff(view.node_ptr))
            view._epoch = (batch_size, edge_index,
                           torch.as_tensor(graph_of_node, device=self.device))
        return view

    def _epoch_batch(self, index):
        """Batch ``index`` of the epoch from its per-batch ids, else None."""
        epoch = self.__dict__.get("_epoch")
        if epoch is None or not isinstance(index, slice) or index.step not in (None, 1):
            return None
        batch_size, edge_index, graph_of_node = epoch
        start, stop, _ = index.indices(self.n_samples)
        if start % batch_size or stop != min(start + batch_size, self.n_samples):
            return None
        a, b = self.node_ptr[start], self.node_ptr[stop]
        ea, eb = self.edge_ptr[start], self.edge_ptr[stop]
        edge_attr = None if self.edge_attr is None else self.edge_attr[ea:eb]
        y = None if self.y is None else self.y[start:stop]
        w = None if self.w is None else self.w[start:stop]
        return ((self.x[a:b], edge_index[:, ea:eb], graph_of_node[a:b], edge_attr,
                 stop - start), y, w)

    def _edge_index(self):
        """The edge index, node ids counting from the first graph's first node."""
        if self.edge_index is None:
            batch_size, edge_index, _ = self._epoch
            first_graphs = np.arange(0, self.n_samples, batch_size)
            bounds = np.append(first_graphs, self.n_samples)
            edges_per_batch = np.diff(self.edge_ptr[bounds])
            offsets = np.repeat(self.node_ptr[first_graphs], edges_per_batch)
            self.edge_index = edge_index + torch.as_tensor(offsets, device=self.device)
        return self.edge_index

    def all(self, *, keep_sparse=False):
        """All graphs as one batch."""
        return self.batch(slice(None))

    def chunks(self, max_bytes=None):
        """Row slices of at most about ``max_bytes`` of node features each."""
        max_bytes = DENSE_CHUNK_BYTES if max_bytes is None else max_bytes
        per_graph = max(1, self.x.numel() // max(self.n_samples, 1)) * self.dtype.itemsize
        return _row_slices(self.n_samples, max(1, max_bytes // per_graph))


# -- node-level: one graph, nodes as samples -------------------------------------------


class NodeView:
    """Some nodes of one graph: the X of the node-level estimators, indexable by node.

    Samples are nodes, but a node's output depends on the whole graph, so
    every view carries the full graph and the nodes it selects. Indexing
    (``view[rows]``, ``view[rows, ...]``) selects nodes, so scikit-learn's
    splitters and the core's validation split take it as any X.

    Parameters
    ----------
    graph : Graphs
        One graph.
    nodes : ndarray of int64
        The selected nodes, in order.
    """

    def __init__(self, graph, nodes):
        self.graph = graph
        self.nodes = nodes

    def __len__(self):
        return len(self.nodes)

    @property
    def shape(self):
        return (len(self.nodes),)

    @property
    def n_features(self):
        return self.graph.n_features

    @property
    def dtype(self):
        return self.graph.x.dtype

    @property
    def size(self):
        return self.graph.x.size

    def __array__(self, dtype=None, copy=None):
        return self.graph.__array__(dtype)

    def __getitem__(self, rows):
        if isinstance(rows, tuple) and len(rows) == 2 and rows[1] is Ellipsis:
            rows = rows[0]
        if isinstance(rows, numbers.Integral):
            rows = [rows]
        return NodeView(self.graph, self.nodes[_rows_array(rows, len(self.nodes))]
                        if not isinstance(rows, slice) else self.nodes[rows])


def to_node_view(X, *, node_attrs=None, node_features="constant", edge_attrs=None,
                 owner="NodeInput"):
    """One graph (or a NodeView) as a :class:`NodeView` of all its nodes."""
    if isinstance(X, NodeView):
        return X
    options = dict(node_attrs=node_attrs, node_features=node_features,
                   edge_attrs=edge_attrs, owner=owner)
    if isinstance(X, Graphs):
        graph = X
    elif isinstance(X, list) or (isinstance(X, np.ndarray) and X.dtype == object
                                 and X.ndim == 1):
        # A list of graphs: accepted when it holds exactly one.
        graph = to_graphs(X, **options)
    else:
        graph = to_graphs([X], **options)
    if len(graph) != 1:
        raise ValueError(
            f"{owner} takes one graph (its nodes are the samples); got {len(graph)}. "
            "For one label per graph use GNNClassifier / GNNRegressor."
        )
    return NodeView(graph, np.arange(graph.x.shape[0], dtype=np.int64))


class NodeInput(GraphInput):
    """One graph whose nodes are the samples: the node-level estimators' kind."""

    layout = "graph"

    def validate(self, estimator, X, *, reset):
        view = to_node_view(X, node_attrs=self.node_attrs,
                            node_features=self.node_features,
                            edge_attrs=self.edge_attrs, owner=_owner(estimator))
        self._check_widths(estimator, view.graph, reset=reset)
        return view

    def dataset(self, X, y=None, sample_weight=None, *, dtype, device,
                target_dtype=None):
        return NodeData(X, y, sample_weight, dtype=dtype, device=device,
                        target_dtype=target_dtype)


class NodeData:
    """Nodes of one graph, their targets and weights: a batch is a set of nodes.

    The protocol of :class:`GraphData`; a batch's inputs are ``(x,
    edge_index, nodes, edge_attr)``: the whole graph (held on ``device``
    once) and the nodes whose outputs the batch needs. The network runs
    message passing over the whole graph and returns those nodes' rows.
    """

    sparse = False

    def __init__(self, X, y, sample_weight, *, dtype, device, target_dtype=None):
        if not isinstance(X, NodeView):
            X = to_node_view(X)
        self.device = device
        self.dtype = dtype
        self.n_samples = len(X)
        self.x = as_tensor(X.graph.x, dtype, device)
        self.edge_index = torch.as_tensor(X.graph.edge_index, dtype=torch.int64).to(device)
        self.edge_attr = (None if X.graph.edge_attr is None
                          else as_tensor(X.graph.edge_attr, dtype, device))
        self.nodes = torch.as_tensor(X.nodes, dtype=torch.int64).to(device)
        self.y = None if y is None else as_tensor(y, target_dtype or dtype, device)
        self.w = (None if sample_weight is None
                  else as_tensor(sample_weight, dtype, device))

    def batch(self, index):
        y = None if self.y is None else self.y[index]
        w = None if self.w is None else self.w[index]
        return (self.x, self.edge_index, self.nodes[index], self.edge_attr), y, w

    def gathered(self, order, batch_size=None):
        """This data with its nodes in ``order`` (the graph itself is kept)."""
        view = copy.copy(self)
        view.nodes = self.nodes[order]
        view.y = None if self.y is None else self.y[order]
        view.w = None if self.w is None else self.w[order]
        return view

    def all(self, *, keep_sparse=False):
        return self.batch(slice(None))

    def chunks(self, max_bytes=None):
        # Every chunk runs the whole graph: one chunk.
        return [slice(0, self.n_samples)]
