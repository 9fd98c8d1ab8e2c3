"""Parameter-graph converters, one module per architecture family, and their registry.

``to_graph(module)`` turns a field (or any module with a registered converter) into a
:class:`ParameterGraph` whose features follow :mod:`graphs.layout`. Add an architecture
with ``@register_converter(MyModule)`` in a file of your own (see README, "Add an
architecture") or through the ``gmn_inr.graph_converters`` entry-point group.
"""
from . import layout
from .graph import GraphBuilder, GraphError, ParameterGraph, edge_features, node_features
from .registry import (ENTRY_POINT_GROUP, UnregisteredArchitectureError, UntraceableModuleError, find_converter,
                       register_converter, registered_types, to_graph)
from .mlp import add_field_mlp, add_linear, add_mlp, encoding_input_nodes, raw_input_nodes  # noqa: E402  (registers)
from .triplane import add_triplane  # noqa: E402
from .hashgrid import add_hash_grid  # noqa: E402
from .octree import add_octree  # noqa: E402
from .tcnn import hash_encoding_from_tcnn, tcnn_to_graph  # noqa: E402
from .traced import TraceError, trace_to_graph  # noqa: E402


def to_pyg_batch(graphs):
    """``torch_geometric.data.Batch`` of ParameterGraphs (or objects with ``.to_pyg()``)."""
    from torch_geometric.data import Batch

    return Batch.from_data_list([g.to_pyg() for g in graphs])


__all__ = [
    "ENTRY_POINT_GROUP", "GraphBuilder", "GraphError", "ParameterGraph", "TraceError", "UnregisteredArchitectureError",
    "UntraceableModuleError", "add_field_mlp", "add_hash_grid", "add_linear", "add_mlp", "add_octree", "add_triplane", "edge_features",
    "encoding_input_nodes", "find_converter", "hash_encoding_from_tcnn", "layout", "node_features",
    "raw_input_nodes", "register_converter", "registered_types", "tcnn_to_graph", "to_graph", "to_pyg_batch", "trace_to_graph",
]
