"""Graph neural networks on PyTorch Geometric layers: :class:`GraphNet`.

:class:`GraphNet` maps a batch of graphs in PyG's layout -- node features
``x`` ``(n_nodes, n_features)``, ``edge_index`` ``(2, n_edges)``,
``batch`` (the graph of each node) and optional edge features
``edge_attr`` ``(n_edges, n_edge_features)`` -- to ``(n_graphs,
n_outputs)`` raw outputs::

    for each hidden width h:
        x = conv(x, edge_index[, edge features]) -> [norm] -> activation -> [dropout]
        (+ x before the layer, when residual and the widths match)
        [top-k / SAG pooling of the nodes]
    readout = pool(x, batch)                       # mean / max / sum / attention
    out = Linear(act(Linear(readout)))             # raw outputs

The convolutions, pooling and message passing are PyG's (``GCNConv``,
``GATConv``, ``SAGEConv``, ``GINConv``/``GINEConv``, ``NNConv``, ``global_*_pool``,
``AttentionalAggregation``, ``TopKPooling``, ``SAGPooling``): this module
only wires them. Its constructor takes plain JSON-able values, so a saved
model rebuilds it. PyG is imported when a network is built.
"""

from torch import nn

from sklears_neural.core.graph_inputs import import_torch_geometric
from sklears_neural.core.noise import Dropout
from sklears_neural.core.registry import register_module
from sklears_neural.core.resolve import ACTIVATIONS

__all__ = ["CONVS", "GraphNet", "HIERARCHICAL", "NORMS", "POOLINGS", "SAGE_AGGRS"]

#: Convolution names of ``conv``.
CONVS = ("gcn", "gat", "sage", "gin", "mpnn")
#: Global pooling (readout) names of ``pooling``.
POOLINGS = ("mean", "max", "sum", "attention")
#: Hierarchical pooling names of ``hierarchical`` (besides None).
HIERARCHICAL = ("topk", "sag")
#: Aggregations of GraphSAGE.
SAGE_AGGRS = ("mean", "max", "lstm")
#: Node normalizations of ``norm`` (besides None).
NORMS = ("batch", "layer")


#: How each conv reads edge features: "weight" (one column, GCN's
#: ``edge_weight``), "attr" (``edge_attr=``, any width), or None (none).
EDGE_INPUT = {"gcn": "weight", "gat": "attr", "sage": None, "gin": "attr", "mpnn": "attr"}


def check_edge_features(conv, n_edge_features):
    """Raise a ValueError when ``conv`` cannot read ``n_edge_features`` edge features."""
    if conv not in EDGE_INPUT:
        raise ValueError(f"Unknown conv {conv!r}; valid names are {', '.join(CONVS)}.")
    mode = EDGE_INPUT[conv]
    if conv == "mpnn" and n_edge_features == 0:
        raise ValueError(
            "conv='mpnn' is edge-conditioned (an MLP maps each edge's features to "
            "its message weights), but the graphs have no edge features. Name edge "
            "attributes in edge_attrs, or choose another conv."
        )
    if mode is None and n_edge_features:
        raise ValueError(
            f"conv={conv!r} (PyG's SAGEConv) takes no edge features, but edge_attrs "
            f"gives {n_edge_features}. Use conv='mpnn', 'gat' or 'gin', or "
            "edge_attrs=None."
        )
    if mode == "weight" and n_edge_features > 1:
        raise ValueError(
            f"conv='gcn' reads one edge weight per edge, but edge_attrs gives "
            f"{n_edge_features} edge features. Name one attribute, or use "
            "conv='mpnn', 'gat' or 'gin', which take edge feature vectors."
        )


def _make_conv(pyg, conv, n_in, n_out, *, heads, concat_heads, aggr, activation,
               n_edge_features):
    layers = pyg.nn
    edge_dim = int(n_edge_features) or None
    if conv == "gcn":
        return layers.GCNConv(n_in, n_out), n_out
    if conv == "gat":
        if concat_heads:
            if n_out % heads:
                raise ValueError(
                    f"conv='gat' with concat_heads=True splits each hidden width "
                    f"among the heads: width {n_out} is not a multiple of heads={heads}."
                )
            return layers.GATConv(n_in, n_out // heads, heads=heads, concat=True,
                                  edge_dim=edge_dim), n_out
        return layers.GATConv(n_in, n_out, heads=heads, concat=False,
                              edge_dim=edge_dim), n_out
    if conv == "sage":
        return layers.SAGEConv(n_in, n_out, aggr=aggr), n_out
    if conv == "gin":
        mlp = nn.Sequential(nn.Linear(n_in, n_out), ACTIVATIONS.build(activation),
                            nn.Linear(n_out, n_out))
        if edge_dim:
            # GINE: ReLU(x_j + Linear(e_ji)) summed, then the MLP.
            return layers.GINEConv(mlp, train_eps=True, edge_dim=edge_dim), n_out
        return layers.GINConv(mlp, train_eps=True), n_out
    if conv == "mpnn":
        # NNConv (Gilmer et al.'s edge network): x_i' = W x_i + mean_j h(e_ji) x_j,
        # h an MLP from edge features to an (n_in, n_out) matrix.
        edge_net = nn.Sequential(nn.Linear(edge_dim, n_out), ACTIVATIONS.build(activation),
                                 nn.Linear(n_out, n_in * n_out))
        return layers.NNConv(n_in, n_out, edge_net, aggr="mean"), n_out
    raise ValueError(f"Unknown conv {conv!r}; valid names are {', '.join(CONVS)}.")


@register_module
class GraphNet(nn.Module):
    """A stack of PyG graph convolutions, a readout and a small output MLP.

    Parameters
    ----------
    n_features : int
        Node features of the input.
    n_outputs : int
        Output width (raw outputs).
    hidden_layer_sizes : list of int, default=(64, 64)
        Width of each convolution's output (and of the output MLP's hidden layer:
        the last width).
    conv : {"gcn", "gat", "sage", "gin", "mpnn"}, default="gin"
        "mpnn" is PyG's edge-conditioned ``NNConv`` and needs edge features.
    heads : int, default=1
        Attention heads of "gat".
    concat_heads : bool, default=True
        "gat": concatenate the heads (each ``width // heads`` wide) or average them.
    aggr : {"mean", "max", "lstm"}, default="mean"
        Neighbour aggregation of "sage".
    pooling : {"mean", "max", "sum", "attention"}, default="sum"
        Readout from nodes to one vector per graph.
    hierarchical : {None, "topk", "sag"}, default=None
        Top-k or SAG pooling of the nodes after every convolution but the last.
    pool_ratio : float, default=0.5
        Fraction of nodes hierarchical pooling keeps.
    residual : bool, default=False
        Add each layer's input to its output where the widths match.
    norm : {None, "batch", "layer"}, default=None
        Normalization of node features after each convolution.
    dropout : float, default=0.0
        Dropout on node features after each layer and before the output layer.
    activation : str or list, default="gelu"
        Any name of ``ACTIVATIONS`` (JSON form).
    level : {"graph", "node"}, default="graph"
        "graph": ``forward(x, edge_index, batch, edge_attr, n_graphs)`` pools
        each graph to one output row. "node": ``forward(x, edge_index,
        nodes, edge_attr)`` returns the output rows of the nodes ``nodes``
        (no pooling; ``pooling`` unused).
    n_edge_features : int, default=0
        Edge features per edge (``edge_attr``'s width); 0: none. "gcn" reads
        one as its edge weight, "gat" and "gin" (then PyG's ``GINEConv``)
        and "mpnn" a vector; "sage" none.
    """

    def __init__(self, n_features, n_outputs, hidden_layer_sizes=(64, 64), conv="gin",
                 heads=1, concat_heads=True, aggr="mean", pooling="sum",
                 hierarchical=None, pool_ratio=0.5, residual=False, norm=None,
                 dropout=0.0, activation="gelu", level="graph", n_edge_features=0):
        super().__init__()
        if level not in ("graph", "node"):
            raise ValueError(f"Unknown level {level!r}; valid: 'graph', 'node'.")
        if level == "node" and hierarchical is not None:
            raise ValueError("Hierarchical pooling removes nodes: it needs level='graph'.")
        self.level = level
        pyg = import_torch_geometric()
        import torch_geometric.nn  # noqa: F401  (registers pyg.nn)

        check_edge_features(conv, int(n_edge_features))
        self.conv_name = conv
        self.edge_input = EDGE_INPUT[conv] if n_edge_features else None
        self.pooling = pooling
        self.hierarchical = hierarchical
        self.residual = bool(residual)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.pools = nn.ModuleList()
        self.acts = nn.ModuleList()
        n_in = int(n_features)
        sizes = [int(h) for h in hidden_layer_sizes]
        if not sizes:
            raise ValueError("hidden_layer_sizes needs at least one convolution width.")
        for k, h in enumerate(sizes):
            layer, n_out = _make_conv(pyg, conv, n_in, h, heads=int(heads),
                                      concat_heads=bool(concat_heads), aggr=aggr,
                                      activation=activation,
                                      n_edge_features=int(n_edge_features))
            self.convs.append(layer)
            if norm == "batch":
                self.norms.append(nn.BatchNorm1d(n_out))
            elif norm == "layer":
                self.norms.append(nn.LayerNorm(n_out))
            elif norm is None:
                self.norms.append(nn.Identity())
            else:
                raise ValueError(f"Unknown norm {norm!r}; valid: None, 'batch', 'layer'.")
            self.acts.append(ACTIVATIONS.build(activation))
            if hierarchical is not None and k < len(sizes) - 1:
                if hierarchical == "topk":
                    self.pools.append(pyg.nn.TopKPooling(n_out, ratio=float(pool_ratio)))
                elif hierarchical == "sag":
                    self.pools.append(pyg.nn.SAGPooling(n_out, ratio=float(pool_ratio)))
                else:
                    raise ValueError(
                        f"Unknown hierarchical {hierarchical!r}; valid: None, 'topk', 'sag'.")
            n_in = n_out
        # The core's Dropout: its masks come from the fit's generator, so
        # random_state makes fits with dropout reproducible.
        self.dropout = Dropout(float(dropout))
        if pooling == "attention":
            self.readout = pyg.nn.AttentionalAggregation(nn.Linear(n_in, 1))
        elif pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}.")
        self.head = nn.Sequential(nn.Linear(n_in, n_in), ACTIVATIONS.build(activation),
                                  Dropout(float(dropout)), nn.Linear(n_in, int(n_outputs)))

    def _convolve(self, conv, x, edge_index, edge_attr):
        if self.edge_input is None or edge_attr is None:
            return conv(x, edge_index)
        if self.edge_input == "weight":
            return conv(x, edge_index, edge_attr.reshape(-1))
        return conv(x, edge_index, edge_attr=edge_attr)

    def node_embeddings(self, x, edge_index, batch, edge_attr=None):
        """Node features after the convolutions: ``(x, edge_index, batch, edge_attr)``."""
        for k, conv in enumerate(self.convs):
            h = self._convolve(conv, x, edge_index, edge_attr)
            h = self.dropout(self.acts[k](self.norms[k](h)))
            if self.residual and h.shape[-1] == x.shape[-1]:
                h = h + x
            x = h
            if k < len(self.pools):
                x, edge_index, edge_attr, batch, _, _ = self.pools[k](
                    x, edge_index, edge_attr=edge_attr, batch=batch)
        return x, edge_index, batch, edge_attr

    def forward(self, x, edge_index, batch, edge_attr=None, n_graphs=None):
        """Raw outputs: one row per graph ("graph"), or per node of ``batch`` ("node").

        Parameters
        ----------
        x : Tensor of shape (n_nodes, n_features)
        edge_index : LongTensor of shape (2, n_edges)
        batch : LongTensor of shape (n_nodes,)
            "graph": the graph of each node, 0 .. n_graphs - 1. "node": the
            nodes whose output rows are returned, or None for all.
        edge_attr : Tensor of shape (n_edges, n_edge_features), default=None
        n_graphs : int, default=None
            Graphs in the batch ("graph"). None reads it from ``batch`` (one
            device synchronization per call); the estimators pass it.

        Returns
        -------
        Tensor of shape (n_graphs, n_outputs) or (len(batch), n_outputs)
        """
        if self.level == "node":
            h, _, _, _ = self.node_embeddings(x, edge_index, None, edge_attr)
            return self.head(h if batch is None else h[batch])
        from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

        # Graphs are never empty: the last node's graph + 1.
        size = n_graphs if n_graphs is not None else (
            int(batch[-1]) + 1 if batch.numel() else 0)
        x, edge_index, batch, _ = self.node_embeddings(x, edge_index, batch, edge_attr)
        if self.pooling == "mean":
            pooled = global_mean_pool(x, batch, size)
        elif self.pooling == "max":
            pooled = global_max_pool(x, batch, size)
        elif self.pooling == "sum":
            pooled = global_add_pool(x, batch, size)
        else:
            pooled = self.readout(x, batch, dim_size=size)
        return self.head(pooled)


# -- ONNX export ---------------------------------------------------------------------


class _OnnxGraphInputs(nn.Module):
    """A frozen :class:`GraphNet` behind the inputs an ONNX graph can take.

    "graph" level: ``(x, edge_index, batch, ptr[, edge_attr])``, as in a PyG
    ``Batch``; only ``ptr``'s length is read (graphs = ``len(ptr) - 1``), so
    the number of graphs is a shape, not a value the graph must compute.
    "node" level: ``(x, edge_index[, edge_attr])``, one output row per node.
    ``x`` and ``edge_attr`` come in float32 and are cast to the network's dtype.
    """

    def __init__(self, network, dtype):
        super().__init__()
        self.network = network
        self.dtype = dtype

    def forward(self, x, edge_index, batch=None, ptr=None, edge_attr=None):
        if edge_attr is not None:
            edge_attr = edge_attr.to(self.dtype)
        if self.network.level == "node":
            return self.network(x.to(self.dtype), edge_index, None, edge_attr)
        return self.network(x.to(self.dtype), edge_index, batch, edge_attr,
                            ptr.shape[0] - 1)


def export_graph_network(network, n_features, n_edge_features, *, owner):
    """A fitted :class:`GraphNet` as an ONNX model whose first output is ``raw_output``.

    Parameters
    ----------
    network : GraphNet
    n_features, n_edge_features : int
    owner : str
        The estimator's class name, for messages.

    Returns
    -------
    onnx.ModelProto
        Inputs ``x`` (float32, (n_nodes, n_features)), ``edge_index`` (int64,
        (2, n_edges)), for level "graph" ``batch`` (int64, (n_nodes,)) and
        ``ptr`` (int64, (n_graphs + 1,)), and ``edge_attr`` (float32,
        (n_edges, n_edge_features)) when the network reads edge features;
        every size dynamic.

    Raises
    ------
    NotImplementedError
        For GAT and hierarchical pooling, whose PyG layers compute shapes
        from values (self-loop removal, top-k selection) that
        ``torch.export`` cannot trace into one graph.
    """
    import warnings

    import torch

    from sklears_neural.core.export import (
        OPSET,
        _frozen_copy,
        _module_dtype,
        _quiet_exporter,
        _require_onnx,
    )

    reasons = []
    if network.conv_name == "gat":
        reasons.append("PyG's GATConv removes and adds self-loops with shapes that "
                       "depend on edge values")
    if len(network.pools):
        reasons.append("top-k and SAG pooling keep a number of nodes that depends on "
                       "their scores")
    if reasons:
        raise NotImplementedError(
            f"Cannot export {owner} to ONNX: {'; '.join(reasons)}, which "
            "torch.export cannot trace into one graph for every input size. Use "
            "conv='gin', 'gcn', 'sage' or 'mpnn' without hierarchical pooling, or "
            "ship the model with save()/load() or pickle."
        )
    _require_onnx()
    frozen = _frozen_copy(network)
    wrapper = _OnnxGraphInputs(frozen, _module_dtype(frozen)).eval()
    # Three graphs of 2-4 nodes (a path each): torch.export specializes any
    # dimension whose example size is 0 or 1.
    sizes = [2, 3, 4]
    ptr = torch.tensor([0, 2, 5, 9])
    pairs = [(a + i, a + i + 1) for a, n in zip(ptr.tolist(), sizes) for i in range(n - 1)]
    edge_index = torch.tensor(pairs + [(v, u) for u, v in pairs]).t().contiguous()
    x = torch.zeros(9, int(n_features))
    nodes, edges = torch.export.Dim("n_nodes"), torch.export.Dim("n_edges")
    inputs = {"x": x, "edge_index": edge_index}
    shapes = {"x": {0: nodes}, "edge_index": {1: edges}}
    if network.level == "graph":
        inputs["batch"] = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
        inputs["ptr"] = ptr
        shapes.update(batch={0: nodes}, ptr={0: torch.export.Dim("n_graphs_plus_one")})
    if n_edge_features:
        inputs["edge_attr"] = torch.ones(edge_index.shape[1], int(n_edge_features))
        shapes["edge_attr"] = {0: edges}
    try:
        with _quiet_exporter(), torch.no_grad(), warnings.catch_warnings():
            # x and batch share their node axis, edge_index and edge_attr
            # their edge axis: the exporter says so once per repeated name.
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            program = torch.onnx.export(
                wrapper, (), kwargs=inputs, input_names=list(inputs),
                output_names=["raw_output"], opset_version=OPSET, dynamo=True,
                dynamic_shapes=shapes, verbose=False)
    except Exception as exc:  # the exporter raises many kinds; all mean the same here
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        first = (str(root).strip().splitlines() or [""])[0][:300]
        raise NotImplementedError(
            f"Cannot export {owner} to ONNX: torch.onnx.export failed "
            f"({type(root).__name__}: {first}). Ship the model with save()/load() "
            "or pickle."
        ) from exc
    return program.model_proto
