"""tiny-cuda-nn itself against the pure-PyTorch hash grid: weights move between them unchanged.

These run only where ``tinycudann`` imports (it needs CUDA and a build against the local torch);
everywhere else the same layout is checked against a transcription of tcnn's formulas
(tests/test_fields.py, tests/test_io_loaders.py). The hash table here is filled with values of
order 1 (tcnn initialises it to +-1e-4), so a wrong entry order or level offset shows.
"""
from __future__ import annotations

import pytest
import torch

tcnn = pytest.importorskip("tinycudann", reason="tinycudann is not installed (needs CUDA)")
if not torch.cuda.is_available():  # pragma: no cover - tinycudann without a GPU
    pytest.skip("tinycudann needs a CUDA device", allow_module_level=True)

from gmn_inr.fields import HashGridField  # noqa: E402
from graphs import tcnn_to_graph, to_graph  # noqa: E402
from graphs.tcnn import hash_encoding_from_tcnn  # noqa: E402

#: tcnn builds with --use_fast_math and fused multiply-adds: with table values of order 1 its
#: float32 features differ from PyTorch's by up to ~2e-5 (measured on an H100: 1.1e-5 for the
#: paper's grid, 2.1e-5 for an 8-level one); a wrong entry or level would be off by O(1)
FEATURE_ATOL = 5e-5

#: dense coarse levels and hashed fine levels (16 -> 128 over 4 levels; 2^12 entries)
ENCODINGS = [
    {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2, "log2_hashmap_size": 12,
     "base_resolution": 16, "per_level_scale": 2.0},
    {"otype": "HashGrid", "n_levels": 8, "n_features_per_level": 4, "log2_hashmap_size": 14,
     "base_resolution": 8, "per_level_scale": 1.5},
]


def _points(n: int = 4096, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", ENCODINGS, ids=lambda c: f"L{c['n_levels']}F{c['n_features_per_level']}")
def test_encoding_params_load_into_hashgrid_encoding(cfg):
    """``tcnn.Encoding`` (float32) and :class:`HashGridEncoding` holding its ``params`` agree."""
    torch.manual_seed(0)
    enc = tcnn.Encoding(3, cfg, dtype=torch.float32)
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    u = _points()
    with torch.no_grad():
        want = enc(u.cuda()).float().cpu()
        ours = hash_encoding_from_tcnn(enc.params.detach().cpu(), cfg)
        got = ours(u)
    assert got.shape == want.shape == (u.shape[0], cfg["n_levels"] * cfg["n_features_per_level"])
    torch.testing.assert_close(got, want, atol=FEATURE_ATOL, rtol=1e-5)


@pytest.mark.parametrize("cfg", ENCODINGS[:1], ids=("paper",))
def test_hashgrid_encoding_params_load_into_tcnn(cfg):
    """The other way: a table trained in PyTorch copied into ``tcnn.Encoding`` gives the same features."""
    torch.manual_seed(1)
    enc = tcnn.Encoding(3, cfg, dtype=torch.float32)
    ours = hash_encoding_from_tcnn(torch.zeros_like(enc.params.detach().cpu()), cfg)
    with torch.no_grad():
        ours.params.uniform_(-1.0, 1.0)
        enc.params.copy_(ours.params.cuda())
    u = _points(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(u), enc(u.cuda()).float().cpu(), atol=FEATURE_ATOL, rtol=1e-5)


def _network(n_out: int = 4):
    cfg = {"encoding": ENCODINGS[0],
           "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
                       "n_neurons": 64, "n_hidden_layers": 2}}
    torch.manual_seed(2)
    net = tcnn.NetworkWithInputEncoding(3, n_out, cfg["encoding"], cfg["network"])
    with torch.no_grad():
        p = net.params
        g = torch.Generator(device=p.device).manual_seed(3)
        p.copy_((torch.rand(p.shape, generator=g, device=p.device) * 2 - 1).to(p.dtype) * 0.3)
    return net, cfg


def test_network_with_input_encoding_loads_as_hashgrid_field():
    """``tcnn.NetworkWithInputEncoding`` (half-precision MLP) and ``HashGridField.from_tcnn`` of its
    ``params`` give the same radiance outputs, up to the half precision tcnn computes in."""
    net, cfg = _network()
    field = HashGridField.from_tcnn(net.params.detach().float().cpu(), cfg, 4)
    u = _points(seed=2)
    with torch.no_grad():
        want = net(u.cuda()).float().cpu()
        got = field(u * 2 - 1)                    # the field takes xyz in [-1, 1]
    assert got.shape == want.shape == (u.shape[0], 4)
    scale = want.abs().max().item()
    assert scale > 1e-2, "the outputs are too small for the comparison to mean anything"
    torch.testing.assert_close(got, want, atol=2e-2 * scale, rtol=2e-2)


def test_to_graph_takes_tcnn_modules():
    """``to_graph`` on a tcnn module is the graph of the equivalent PyTorch field."""
    net, cfg = _network()
    a = to_graph(net)
    b = tcnn_to_graph(net.params.detach().float().cpu(), cfg, 4)
    assert a.num_nodes == b.num_nodes and a.num_edges == b.num_edges
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(a.edge_attr, b.edge_attr)
    assert torch.equal(a.edge_index, b.edge_index)
