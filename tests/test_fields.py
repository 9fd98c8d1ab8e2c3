"""Reference fields: the tcnn hash-grid math, tcnn parameter interchange, encodings, octrees."""
import math

import numpy as np
import pytest
import torch

from gmn_inr.fields import (FrequencyEncoding, FrequencySpec, HashGridEncoding, HashGridField, HashGridSpec,
                            OctreeField, TriplaneField, arch_spec, build_field, load_field)
from gmn_inr.fields.spec import SpecError


def tcnn_hash_grid_numpy(params: np.ndarray, x: np.ndarray, n_levels, F, log2T, base, pls) -> np.ndarray:
    """tiny-cuda-nn's HashGrid forward, transcribed from its formulas (docs/reference.md, "tiny-cuda-nn's hash grid") one point,
    one level, one corner at a time in uint32 arithmetic."""
    primes = [np.uint32(1), np.uint32(2654435761), np.uint32(805459861)]
    out = np.zeros((x.shape[0], n_levels * F), np.float32)
    offset = 0
    for l in range(n_levels):
        scale = np.float32(np.exp2(np.float32(l) * np.float32(np.log2(np.float32(pls)))) * np.float32(base) - np.float32(1))
        res = int(np.ceil(scale)) + 1
        size = min(((res ** 3 + 7) // 8) * 8, 2 ** log2T)
        for m in range(x.shape[0]):
            pos = scale * x[m].astype(np.float32) + np.float32(0.5)
            g = np.floor(pos).astype(np.int64)
            frac = pos - g
            for corner in range(8):
                w = np.float32(1)
                c = []
                for d in range(3):
                    bit = (corner >> d) & 1
                    w *= frac[d] if bit else (1 - frac[d])
                    c.append(int(g[d] + bit))
                if res ** 3 <= size:
                    idx = (c[0] + c[1] * res + c[2] * res * res) % size
                else:
                    with np.errstate(over="ignore"):
                        h = np.uint32(0)
                        for d in range(3):
                            h ^= np.uint32(c[d]) * primes[d]
                    idx = int(h) % size
                out[m, l * F:(l + 1) * F] += w * params[(offset + idx) * F:(offset + idx + 1) * F]
        offset += size
    return out


@pytest.mark.parametrize("cfg", [(4, 2, 12, 16, 2.0), (3, 2, 11, 16, 2.0), (5, 4, 10, 5, 1.5), (2, 1, 14, 16, 1.3819)])
def test_hash_grid_matches_tcnn_formulas(cfg):
    n_levels, F, log2T, base, pls = cfg
    enc = HashGridEncoding(HashGridSpec(n_levels, F, log2T, base, pls))
    with torch.no_grad():
        enc.params.normal_()
    x = torch.rand(40, 3)
    x[0] = 0.0
    x[1] = 1.0
    ref = tcnn_hash_grid_numpy(enc.params.detach().numpy(), x.numpy(), n_levels, F, log2T, base, pls)
    np.testing.assert_allclose(enc(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_hash_level_layout_is_tcnn():
    enc = HashGridEncoding(HashGridSpec(n_levels=4, log2_hashmap_size=12))
    lv = enc.levels
    assert lv.resolution.tolist() == [16, 32, 64, 128]
    assert lv.dense.tolist() == [True, False, False, False]
    odd = HashGridEncoding(HashGridSpec(n_levels=2, base_resolution=5, per_level_scale=1.5, log2_hashmap_size=12))
    # res 5 -> 125 cells rounded up to a multiple of 8
    assert odd.levels.size[0] == 128 and odd.levels.dense[0]


def test_from_tcnn_params_and_config():
    """A tcnn-layout flat params vector (network first, padded; then the grid) loads exactly."""
    field = HashGridField(arch_spec("HASH"))
    with torch.no_grad():
        field.grid.params.normal_()
    W, n_in, n_out = 64, 8, 4
    blocks = []
    for i, lin in enumerate(field.mlp.layers):
        a = 16 if i == len(field.mlp.layers) - 1 else W
        b = 16 if i == 0 else W
        padded = torch.randn(a, b)               # padding rows/cols hold junk tcnn never uses
        padded[: lin.out_features, : lin.in_features] = lin.weight.detach()
        blocks.append(padded.reshape(-1))
    params = torch.cat(blocks + [field.grid.params.detach()])
    cfg = {"encoding": {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": 2, "log2_hashmap_size": 12,
                        "base_resolution": 16, "per_level_scale": 2.0},
           "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
                       "n_neurons": W, "n_hidden_layers": 3}}
    loaded = HashGridField.from_tcnn(params, cfg, n_out)
    x = torch.rand(64, 3) * 2 - 1
    assert torch.equal(loaded(x), field(x))
    from graphs import tcnn_to_graph, to_graph
    assert torch.equal(tcnn_to_graph(params, cfg, n_out).edge_attr, to_graph(field).edge_attr)
    with pytest.raises(SpecError, match="values"):
        HashGridField.from_tcnn(params[:-1], cfg, n_out)


def test_frequency_encodings():
    x = torch.rand(5, 3) * 2 - 1
    tc = FrequencyEncoding(FrequencySpec(24, False, "tcnn"))
    assert tc(x).shape == (5, 144)
    # output 2f + p of axis d: sin(2^f pi x_d + p pi/2)
    assert torch.allclose(tc(x)[:, 2 * 3 + 1], torch.cos(8 * math.pi * x[:, 0]), atol=1e-5)
    assert torch.allclose(tc(x)[:, 48 + 0], torch.sin(math.pi * x[:, 1]), atol=1e-6)
    nerf = FrequencyEncoding(FrequencySpec(10, True, "nerf"))
    out = nerf(x)
    assert out.shape == (5, 63)
    assert torch.equal(out[:, :3], x)
    assert torch.allclose(out[:, 3:6], torch.sin(x)) and torch.allclose(out[:, 6:9], torch.cos(x), atol=1e-6)
    assert torch.allclose(out[:, 9 + 6 * 2: 12 + 6 * 2], torch.sin(8 * x), atol=1e-5)


def test_triplane_reads_the_planes_it_is_given():
    f = TriplaneField()
    with torch.no_grad():
        f.planes.zero_()
        f.planes[0, 5] = 2.0           # (x, y) plane, channel 5, everywhere
    feats = f.grid_features(torch.rand(7, 3) * 1.8 - 0.9)
    assert torch.allclose(feats[:, 5], torch.full((7,), 2.0)) and feats[:, :5].abs().max() == 0


def test_octree_interpolates_stored_vertices():
    spec = arch_spec("OCT", 1)
    f = OctreeField(spec)
    with torch.no_grad():
        for p in f.features:
            p.zero_()
        f.features[2][:, 0] = 1.0            # finest LOD, channel 0, everywhere stored
    x = torch.rand(20, 3) * 2 - 1
    assert torch.allclose(f.grid_features(x)[:, 0], torch.ones(20), atol=1e-6)
    with pytest.raises(ValueError, match="occupancy"):
        OctreeField(spec, occupancy=torch.ones(3, 3, 3, dtype=torch.bool))


@pytest.mark.parametrize("name", ["MLP", "TRI", "HASH", "OCT"])
def test_state_dict_round_trip(name):
    f = build_field(arch_spec(name, 1))
    g = load_field(f.spec, f.state_dict())
    x = torch.rand(30, 3) * 2 - 1
    assert torch.equal(f(x), g(x))
    with pytest.raises(ValueError):
        load_field(arch_spec("TRI-8C", 1) if name == "TRI" else arch_spec("MLP-32H", 1), f.state_dict())


def test_fields_are_vmappable():
    from torch.func import functional_call, stack_module_state, vmap

    fields = [build_field(arch_spec(n, 1)) for n in ("HASH", "HASH")]
    params, buffers = stack_module_state(fields)
    x = torch.rand(16, 3) * 2 - 1
    out = vmap(lambda p, b: functional_call(fields[0], (p, b), (x,)))(params, buffers)
    assert torch.allclose(out[1], fields[1](x), atol=1e-6)
