"""Parameter-graph converters, one module per architecture family, and their registry.

``to_graph(module)`` turns a field (or any module with a registered converter) into a
:class:`ParameterGraph` whose features follow :mod:`graphs.layout`. Add an architecture
family with :func:`gmn_inr.fields.register_family` (its ``converter=``) or a single module type
with ``@register_converter(MyModule)``, in a file of your own (see README, "Add an
architecture"), or through the ``gmn_inr.graph_converters`` entry-point group.
:func:`batch_graphs` turns graphs into one torch_geometric ``Batch``; :func:`to_batch` converts many
INRs straight into one (fields of one architecture together, from its cached template).
"""
from . import layout
from .graph import GraphBuilder, GraphError, ParameterGraph, batch_graphs, edge_features, node_features
from .registry import (ENTRY_POINT_GROUP, UnregisteredArchitectureError, find_converter, register_converter,
                       registered_types)
from .mlp import add_field_mlp, add_linear, add_mlp, encoding_input_nodes, raw_input_nodes  # noqa: E402  (registers)
from .cells import add_grid_channels, add_storage_cells  # noqa: E402
from .triplane import add_triplane  # noqa: E402
from .hashgrid import add_hash_grid  # noqa: E402
from .octree import add_octree  # noqa: E402
from .tcnn import hash_encoding_from_tcnn, tcnn_to_graph  # noqa: E402
from .traced import TraceError, trace_to_graph  # noqa: E402
from .convert import UntraceableModuleError, to_batch, to_graph  # noqa: E402

__all__ = [
    "ENTRY_POINT_GROUP", "GraphBuilder", "GraphError", "ParameterGraph", "TraceError", "UnregisteredArchitectureError",
    "UntraceableModuleError", "add_field_mlp", "add_grid_channels", "add_hash_grid", "add_linear", "add_mlp",
    "add_octree", "add_storage_cells", "add_triplane", "batch_graphs", "edge_features", "encoding_input_nodes",
    "find_converter", "hash_encoding_from_tcnn", "layout", "node_features", "raw_input_nodes", "register_converter",
    "registered_types", "tcnn_to_graph", "to_batch", "to_graph", "trace_to_graph",
]
