"""Loaders of published INR files: each file is written here in its layout (keys, dtypes, padding),
loaded through ``load_inr``'s detection, and its field compared with the formula written out here."""
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gmn_inr.io.formats import FormatError, load_inr, sniff_format
from graphs import to_graph

# -- shared pieces of the formulas ------------------------------------------------------------------------


def tcnn_freq(u, n_freqs):
    """tcnn Frequency encoding of u [N, 3]: per axis, per k: sin(2^k pi u), cos(2^k pi u)."""
    arg = u.unsqueeze(-1) * (2.0 ** torch.arange(n_freqs) * math.pi)          # [N, 3, F]
    return torch.stack([torch.sin(arg), torch.cos(arg)], -1).reshape(u.shape[0], -1)


def bilinear_hwc(img, a, b):
    """img [R(h), R(w), C] at a (width) and b (height) in [-1, 1], align_corners=True, inside the box."""
    R = img.shape[0]
    x, y = (a + 1) / 2 * (R - 1), (b + 1) / 2 * (R - 1)
    x0, y0 = x.floor().long().clamp(0, R - 2), y.floor().long().clamp(0, R - 2)
    fx, fy = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)
    return (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
            + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)


def tcnn_mats(g, n_in, hidden, width, n_out, scale=1.0):
    """tcnn MLP matrices [out, in] with the input padded to 16 (padding columns 0: tcnn feeds them 1)
    and the output padded to 16 (rows holding junk tcnn never reads)."""
    pad = (n_in + 15) // 16 * 16
    mats = [torch.randn(width, pad, generator=g) * scale / math.sqrt(n_in)]
    mats[0][:, n_in:] = 0
    mats += [torch.randn(width, width, generator=g) * scale / math.sqrt(width) for _ in range(hidden - 1)]
    mats += [torch.randn((n_out + 15) // 16 * 16, width, generator=g) / math.sqrt(width)]
    return [m.half().float() for m in mats]


def run_mlp(h, mats, act, n_out):
    h = torch.cat([h, torch.ones(h.shape[0], mats[0].shape[1] - h.shape[1])], 1)
    for m in mats[:-1]:
        h = act(h @ m.t())
    return (h @ mats[-1].t())[:, :n_out]


# -- gmnerf tri-planes ---------------------------------------------------------------------------------------

def gmnerf_file(path, R=8, C=8, n_freqs=4, hidden=3, width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    triplane = torch.randn(3, R, R, C, generator=g)                 # [3, R, R, C], channels last
    mats = tcnn_mats(g, 6 * n_freqs + C, hidden, width, 4, scale=2.0)
    torch.save({"triplane": triplane, "mlp_base.params": torch.cat([m.reshape(-1) for m in mats]).half()}, path)
    return triplane, mats


def gmnerf_formula(triplane, mats, xyz, n_freqs):
    """cat(Frequency((xyz + 1) / 2), sum_p bilinear(plane_p)) -> Sine MLP, the first 4 outputs."""
    pairs = ((0, 1), (0, 2), (1, 2))
    feats = sum(bilinear_hwc(triplane[p], xyz[:, a], xyz[:, b]) for p, (a, b) in enumerate(pairs))
    return run_mlp(torch.cat([tcnn_freq((xyz + 1) / 2, n_freqs), feats], 1), mats, torch.sin, 4)


def test_gmnerf_triplane_loader(tmp_path):
    from gmn_inr.io.gmnerf import load_gmnerf_triplane
    triplane, mats = gmnerf_file(tmp_path / "nerf_weights.pth")
    assert sniff_format(tmp_path / "nerf_weights.pth") == "gmnerf"
    field = load_gmnerf_triplane(tmp_path / "nerf_weights.pth", n_freqs=4, hidden_layers=3, hidden_dim=16)
    g = field.spec.grid
    assert (g.resolution, g.channels, g.align_corners, g.aggregate, g.encoding_first) == (8, 8, True, "sum", True)
    xyz = torch.rand(300, 3) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(field(xyz), gmnerf_formula(triplane, mats, xyz, 4), atol=1e-4, rtol=1e-4)
    # input 2 x 6 + 3 = 15 padded to 16: the padding weight column is zero, so it loads
    triplane, mats = gmnerf_file(tmp_path / "pad.pth", R=5, C=3, n_freqs=2, hidden=2, width=16, seed=1)
    field = load_gmnerf_triplane(tmp_path / "pad.pth", n_freqs=2, hidden_layers=2, hidden_dim=16)
    with torch.no_grad():
        assert torch.allclose(field(xyz), gmnerf_formula(triplane, mats, xyz, 2), atol=1e-4, rtol=1e-4)
    # the released layout (32^2 x 16 planes, 48 frequencies, 3 x 64) by counts, through load_inr
    gmnerf_file(tmp_path / "paper.pth", R=32, C=16, n_freqs=48, hidden=3, width=64, seed=2)
    graph = to_graph(load_inr(tmp_path / "paper.pth"))
    n_in = 288 + 16
    assert graph.num_edges == 3 * 32 * 32 * 16 + n_in * 64 + 2 * 64 * 64 + 64 * 4
    assert graph.num_nodes == 3 * 32 * 32 + 16 + 288 + 3 * 64 + 4
    # foreign or inconsistent files are refused by name
    torch.save({"triplane": torch.zeros(3, 8, 8, 8), "mlp_base.params": torch.zeros(10)}, tmp_path / "short.pth")
    with pytest.raises(FormatError, match=r"short\.pth.*10 values"):
        load_inr(tmp_path / "short.pth")
    torch.save({"triplane": torch.zeros(3, 8, 4, 8), "mlp_base.params": torch.zeros(10)}, tmp_path / "shape.pth")
    with pytest.raises(FormatError, match=r"shape\.pth.*\[3, R, R, C\]"):
        load_inr(tmp_path / "shape.pth")
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(FormatError, match=r"other\.pth is not a gmnerf tri-plane"):
        load_gmnerf_triplane(tmp_path / "other.pth")
    with pytest.raises(FormatError, match=r"other\.pth.*in no format"):
        load_inr(tmp_path / "other.pth")


# -- instant-ngp snapshots ------------------------------------------------------------------------------------

PRIMES = (1, 2654435761, 805459861)


def hash_grid(u, table, n_levels, F_, log2t, base, scale):
    """tiny-cuda-nn's hash grid at u [N, 3] in [0, 1], written out: level scale
    2^(l log2 s) base - 1, position u scale + 0.5, resolution ceil(scale) + 1, table
    min(next multiple of 8 of res^3, 2^log2t) entries, dense index or the prime XOR hash."""
    out, off = [], 0
    for lvl in range(n_levels):
        sc = np.float32(np.exp2(np.float32(lvl) * np.log2(np.float32(scale))) * np.float32(base) - 1)
        res = int(math.ceil(sc)) + 1
        size = min((res ** 3 + 7) // 8 * 8, 2 ** log2t)
        pos = u * float(sc) + 0.5
        g0 = pos.floor().long()
        fr = pos - g0
        acc = torch.zeros(u.shape[0], F_)
        for c in range(8):
            d = torch.tensor([(c >> k) & 1 for k in range(3)])
            gi = g0 + d
            w = torch.where(d.bool(), fr, 1 - fr).prod(1)
            if res ** 3 <= size:
                idx = gi[:, 0] + gi[:, 1] * res + gi[:, 2] * res * res
            else:
                h = (gi[:, 0] * PRIMES[0]) ^ (gi[:, 1] * PRIMES[1]) ^ (gi[:, 2] * PRIMES[2])
                idx = h & 0xFFFFFFFF
            idx = idx % size
            acc += w.unsqueeze(1) * table[off: off + size * F_].view(size, F_)[idx]
        out.append(acc)
        off += size * F_
    return torch.cat(out, 1), off


def ingp_snapshot(path, seed=0, params_type="__half", compress=None, aabb_scale=2):
    import msgpack
    g = torch.Generator().manual_seed(seed)
    L, F_, log2t, base = 3, 2, 10, 4
    scale = (2048.0 * aabb_scale / base) ** (1 / (L - 1))
    _, n_grid = hash_grid(torch.zeros(1, 3), torch.zeros(10 ** 7), L, F_, log2t, base, scale)
    dens = tcnn_mats(g, L * F_, 1, 16, 16, scale=3.0)
    dens[0][:, L * F_:] = torch.randn(16, 16 - L * F_, generator=g)   # a grid pads with 0: junk there is never read
    rgb = [torch.randn(16, 32, generator=g), torch.randn(16, 16, generator=g), torch.randn(16, 16, generator=g)]
    table = torch.randn(n_grid, generator=g)
    flat = torch.cat([m.reshape(-1) for m in dens] + [m.reshape(-1) for m in rgb] + [table])
    np_t = "<f2" if params_type == "__half" else "<f4"
    blob = flat.numpy().astype(np_t).tobytes()
    cfg = {"loss": {"otype": "Huber"},
           "encoding": {"otype": "HashGrid", "n_levels": L, "n_features_per_level": F_, "log2_hashmap_size": log2t,
                        "base_resolution": base},
           "network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
                       "n_neurons": 16, "n_hidden_layers": 1},
           "dir_encoding": {"otype": "Composite", "nested": [{"n_dims_to_encode": 3, "otype": "SphericalHarmonics",
                                                               "degree": 4}, {"otype": "Identity"}]},
           "rgb_network": {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "None",
                           "n_neurons": 16, "n_hidden_layers": 2},
           "snapshot": {"version": 1, "mode": "nerf", "n_params": flat.numel(), "params_type": params_type,
                        "params_binary": blob, "density_grid_size": 128, "density_grid_binary": b"\0" * 8,
                        "aabb": {"min": [-0.5, -0.5, -0.5], "max": [1.5, 1.5, 1.5]},
                        "nerf": {"aabb_scale": aabb_scale}}}
    data = msgpack.packb(cfg, use_bin_type=True)
    if compress == "gzip":
        co = zlib.compressobj(6, zlib.DEFLATED, 31)
        data = co.compress(data) + co.flush()
    elif compress == "zlib":
        data = zlib.compress(data, 0)
    path.write_bytes(data)
    np_dtype = np.float16 if params_type == "__half" else np.float32
    back = lambda t: torch.from_numpy(t.numpy().astype(np_dtype).astype(np.float32))   # noqa: E731
    return [back(m) for m in dens], back(table), dict(L=L, F_=F_, log2t=log2t, base=base, scale=scale)


def test_ingp_snapshot_loader(tmp_path):
    pytest.importorskip("msgpack")
    from gmn_inr.io.ingp import load_ingp
    xyz = torch.rand(200, 3) * 2 - 1
    for i, (suffix, ptype, comp) in enumerate([(".msgpack", "__half", None), (".ingp", "float", "gzip"),
                                               (".ingp", "__half", "zlib")]):
        path = tmp_path / f"snap{i}{suffix}"
        dens, table, hp = ingp_snapshot(path, seed=i, params_type=ptype, compress=comp)
        assert sniff_format(path) == "ingp"
        field = load_inr(path)
        assert field.spec.out_dim == 16 and field.spec.grid.base_resolution == 4
        assert field.spec.grid.per_level_scale == pytest.approx(hp["scale"], rel=1e-6)
        feats, _ = hash_grid((xyz + 1) / 2, table, hp["L"], hp["F_"], hp["log2t"], hp["base"], hp["scale"])
        want = run_mlp(feats, [dens[0][:, :6]] + dens[1:], torch.relu, 16)
        with torch.no_grad():
            assert torch.allclose(field(xyz), want, atol=1e-4, rtol=1e-4)
    density = load_ingp(path, outputs="density")
    with torch.no_grad():
        assert density.spec.out_dim == 1 and torch.allclose(density(xyz), field(xyz)[:, :1], atol=1e-5)
    assert to_graph(field).num_nodes > 0
    # foreign and corrupt files: named errors
    import msgpack
    (tmp_path / "other.msgpack").write_bytes(msgpack.packb({"a": 1}))
    with pytest.raises(FormatError, match=r"other\.msgpack is not an instant-ngp snapshot"):
        load_inr(tmp_path / "other.msgpack")
    (tmp_path / "junk.ingp").write_bytes(b"\x78\x9c not really zlib")
    with pytest.raises(FormatError, match=r"junk\.ingp"):
        load_inr(tmp_path / "junk.ingp")
    good = msgpack.unpackb(zlib.decompress(path.read_bytes()))     # the last (zlib) snapshot
    good["snapshot"]["params_binary"] = good["snapshot"]["params_binary"][:-20]
    good["snapshot"]["n_params"] -= 10
    (tmp_path / "cut.msgpack").write_bytes(msgpack.packb(good, use_bin_type=True))
    with pytest.raises(FormatError, match=r"cut\.msgpack.*do not split"):
        load_inr(tmp_path / "cut.msgpack")
    good["snapshot"]["mode"] = "sdf"
    (tmp_path / "sdf.msgpack").write_bytes(msgpack.packb(good, use_bin_type=True))
    with pytest.raises(FormatError, match="only NeRF"):
        load_inr(tmp_path / "sdf.msgpack")


# -- DeepSDF checkpoints ---------------------------------------------------------------------------------------

def deepsdf_checkpoint(path, latent=4, width=16, n_hidden=4, latent_in=(2,), weight_norm=True, seed=0):
    """DeepSDF's layout: {'epoch', 'model_state_dict'} with DataParallel's 'module.' prefix; weight
    norm as weight_g [out, 1] / weight_v [out, in] (no norm on the last layer), or LayerNorm bn{k}."""
    g = torch.Generator().manual_seed(seed)
    d = [latent + 3] + [width] * n_hidden + [1]
    sd, layers = {}, []
    for k in range(len(d) - 1):
        out = d[k + 1] - d[0] if k + 1 in latent_in else d[k + 1]
        v = torch.randn(out, d[k], generator=g) / math.sqrt(d[k])
        b = torch.randn(out, generator=g) * 0.1
        last = k == len(d) - 2
        if weight_norm and not last:
            gain = torch.rand(out, 1, generator=g) + 0.5
            sd[f"module.lin{k}.weight_g"], sd[f"module.lin{k}.weight_v"] = gain, v
            w = gain * v / v.norm(dim=1, keepdim=True)
        else:
            sd[f"module.lin{k}.weight"] = w = v
        sd[f"module.lin{k}.bias"] = b
        ln = None
        if not weight_norm and not last:
            ln = (torch.rand(out, generator=g) + 0.5, torch.randn(out, generator=g) * 0.1)
            sd[f"module.bn{k}.weight"], sd[f"module.bn{k}.bias"] = ln
        layers.append((w, b, ln))
    torch.save({"epoch": 2000, "model_state_dict": sd}, path)
    return layers


def deepsdf_formula(layers, inp, latent_in=(2,)):
    x = inp
    for k, (w, b, ln) in enumerate(layers):
        if k in latent_in:
            x = torch.cat([x, inp], -1)
        x = x @ w.t() + b
        if k < len(layers) - 1:
            if ln is not None:
                x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
                x = x * ln[0] + ln[1]
            x = torch.relu(x)
    return torch.tanh(x)


def test_deepsdf_checkpoint_loader(tmp_path):
    from gmn_inr.io.deepsdf import load_deepsdf
    from gmn_inr.io.reference import DeepSDFDecoder, DeepSDFShape
    inp = torch.randn(100, 7)
    for wn in (True, False):
        path = tmp_path / f"{wn}.pth"
        layers = deepsdf_checkpoint(path, weight_norm=wn)
        assert sniff_format(path) == "deepsdf"
        dec = load_inr(path)
        assert isinstance(dec, DeepSDFDecoder) and dec.latent_in == (2,) and dec.latent_size == 4
        with torch.no_grad():
            assert torch.allclose(dec(inp), deepsdf_formula(layers, inp), atol=1e-5)
    # a shape: the decoder with row 1 of a LatentCodes file ({'latent_codes': {'weight': [N, L]}})
    codes = torch.randn(3, 4)
    torch.save({"epoch": 2000, "latent_codes": {"weight": codes}}, tmp_path / "codes.pth")
    shape = load_deepsdf(tmp_path / "True.pth", latent=tmp_path / "codes.pth", index=1)
    assert isinstance(shape, DeepSDFShape)
    xyz = torch.rand(50, 3) * 2 - 1
    layers = deepsdf_checkpoint(tmp_path / "again.pth", weight_norm=True)
    with torch.no_grad():
        want = deepsdf_formula(layers, torch.cat([codes[1].expand(50, 4), xyz], 1))
        assert torch.allclose(shape(xyz), want, atol=1e-5)
    g = to_graph(shape)
    assert g.num_nodes > 0
    # refused: xyz_in_all, a pickled module (never unpickled), a wrong-size latent
    sd = torch.load(tmp_path / "True.pth", weights_only=True)["model_state_dict"]
    sd["module.lin1.weight_v"] = torch.zeros(16, 19)
    torch.save({"epoch": 1, "model_state_dict": sd}, tmp_path / "xyzall.pth")
    with pytest.raises(FormatError, match=r"xyzall\.pth.*xyz_in_all"):
        load_inr(tmp_path / "xyzall.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pth")
    with pytest.raises(FormatError, match=r"pickled\.pth.*weights_only"):
        load_deepsdf(tmp_path / "pickled.pth")
    with pytest.raises(FormatError, match="5 values"):
        load_deepsdf(tmp_path / "True.pth", latent=torch.zeros(5))


# -- NGLOD -------------------------------------------------------------------------------------------------

def nglod_state(base_lod=1, n_lods=3, C=4, H=8, joint=False, pos_invariant=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(n_lods):
        s = 2 ** (base_lod + i)
        sd[f"features.{i}.fm"] = torch.randn(1, C, s + 1, s + 1, s + 1, generator=g) * 0.5
    n_in = C if pos_invariant else C + 3
    for j in range(1 if joint else n_lods):
        sd[f"louts.{j}.0.weight"] = torch.randn(H, n_in, generator=g) / math.sqrt(n_in)
        sd[f"louts.{j}.0.bias"] = torch.randn(H, generator=g) * 0.1
        sd[f"louts.{j}.2.weight"] = torch.randn(1, H, generator=g) / math.sqrt(H)
        sd[f"louts.{j}.2.bias"] = torch.randn(1, generator=g) * 0.1
    return sd


def nglod_formula(sd, x, lod, joint=False, pos_invariant=False):
    """NGLOD's sdf at LOD index ``lod``: grid_sample(align_corners=True, border) per LOD, summed
    up to ``lod``, cat(xyz, features) -> Linear, ReLU, Linear of that LOD's decoder."""
    f = 0
    for i in range(lod + 1):
        f = f + F.grid_sample(sd[f"features.{i}.fm"], x.reshape(1, -1, 1, 1, 3), align_corners=True,
                              padding_mode="border")[0, :, :, 0, 0].t()
    h = f if pos_invariant else torch.cat([x, f], -1)
    j = 0 if joint else lod
    h = torch.relu(h @ sd[f"louts.{j}.0.weight"].t() + sd[f"louts.{j}.0.bias"])
    return h @ sd[f"louts.{j}.2.weight"].t() + sd[f"louts.{j}.2.bias"]


@pytest.mark.parametrize("joint,pos_invariant", [(False, False), (True, False), (False, True)])
def test_nglod_loader(tmp_path, joint, pos_invariant):
    from gmn_inr.io.nglod import load_nglod
    sd = nglod_state(joint=joint, pos_invariant=pos_invariant)
    torch.save(sd, tmp_path / "model.pth")
    assert sniff_format(tmp_path / "model.pth") == "nglod"
    x = torch.rand(300, 3) * 2.4 - 1.2                                  # outside the box too: border padding
    field = load_inr(tmp_path / "model.pth")
    assert field.spec.grid.base_lod == 1 and field.spec.grid.n_lods == 3 and field.spec.out_dim == 1
    with torch.no_grad():
        assert torch.allclose(field(x), nglod_formula(sd, x, 2, joint, pos_invariant), atol=1e-5)
        coarse = load_nglod(tmp_path / "model.pth", lod=1)
        assert torch.allclose(coarse(x), nglod_formula(sd, x, 1, joint, pos_invariant), atol=1e-5)
    g = to_graph(field)
    assert g.num_edges == 4 * (3 ** 3 + 5 ** 3 + 9 ** 3) + sum(p.numel() for p in field.mlp.parameters())


def test_nglod_refusals(tmp_path):
    sd = nglod_state()
    sd["features.1.fm"] = torch.zeros(1, 4, 4, 4, 4)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(FormatError, match=r"bad\.pth.*features\.1\.fm"):
        load_inr(tmp_path / "bad.pth")
    sd = nglod_state()
    sd["louts.2.0.weight"] = torch.zeros(8, 30)                          # a positional encoding of xyz
    torch.save(sd, tmp_path / "pe.pth")
    with pytest.raises(FormatError, match=r"pe\.pth.*positional encoding"):
        load_inr(tmp_path / "pe.pth")


def test_zoo_import_reads_the_new_formats_and_names_what_it_cannot_store(tmp_path):
    from gmn_inr.io.importer import import_folder
    src = tmp_path / "src"
    (src / "chair").mkdir(parents=True)
    (src / "lamp").mkdir()
    gmnerf_file(src / "chair" / "a.pth", R=32, C=16, n_freqs=48, hidden=3, width=64)
    torch.save(nglod_state(), src / "lamp" / "b.pth")
    deepsdf_checkpoint(src / "lamp" / "c.pth")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,class,function\nchair/a.pth,chair,radiance\nlamp/b.pth,lamp,sdf\nlamp/c.pth,lamp,sdf\n")
    with pytest.raises(FormatError, match=r"c\.pth loads as a DeepSDFDecoder"):
        import_folder(src, tmp_path / "zoo", labels=labels)
    out = import_folder(src, tmp_path / "zoo2", labels=labels, skip_unreadable=True)
    assert out["imported"] == 2 and len(out["unreadable"]) == 1 and "DeepSDFDecoder" in out["unreadable"][0]
    from gmn_inr.zoo.store import ZooStore
    store = ZooStore(tmp_path / "zoo2")
    assert sorted(r.spec.name for r in store) == ["gmnerf-TRI", "nglod"]
    x = torch.rand(20, 3) * 2 - 1
    with torch.no_grad():
        for r in store:                      # the stored field is the loaded one
            src_file = src / ("chair/a.pth" if r.spec.name == "gmnerf-TRI" else "lamp/b.pth")
            assert torch.equal(r.field().eval()(x), load_inr(src_file)(x))


# -- Cardace et al.'s tri-planes ----------------------------------------------------------------------------

def cardace_file(path, R=6, C=4, width=16, n_hidden_linear=2, seed=0):
    """Their layout: HDF5 'triplane' [3, C, R, R] float32 and 'params' (weight, bias per layer, flat)."""
    h5py = pytest.importorskip("h5py")
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(3, C, R, R, generator=g)
    dims = [C + 63] + [width] * (n_hidden_linear + 1) + [1]
    layers = [(torch.randn(o, i, generator=g) / i, torch.randn(o, generator=g) * 0.1) for i, o in zip(dims[:-1], dims[1:])]
    with h5py.File(path, "w") as f:
        f.create_dataset("pcd", data=np.zeros((8, 3), np.float32))
        f.create_dataset("params", data=torch.cat([t.reshape(-1) for l in layers for t in l]).numpy())
        f.create_dataset("triplane", data=planes.numpy())
        f.create_dataset("class_id", data=np.array(3))
    return planes, layers


def cardace_formula(planes, layers, xyz):
    """sum_p grid_sample(plane_p, align_corners=False) ++ [xyz, sin(2^k xyz), cos(2^k xyz)]_k -> sin(30 .) MLP."""
    pairs = ((0, 1), (0, 2), (1, 2))
    f = sum(F.grid_sample(planes[p:p + 1], xyz[None, None, :, list(ab)], align_corners=False)[0, :, 0].t()
            for p, ab in enumerate(pairs))
    pe = [xyz] + [fn(xyz * 2.0 ** k) for k in range(10) for fn in (torch.sin, torch.cos)]
    h = torch.cat([f] + pe, -1)
    for w, b in layers[:-1]:
        h = torch.sin(30 * (h @ w.t() + b))
    return h @ layers[-1][0].t() + layers[-1][1]


def test_cardace_triplane_loader(tmp_path):
    pytest.importorskip("h5py")
    from gmn_inr.io.cardace import load_cardace_triplane
    planes, layers = cardace_file(tmp_path / "0.h5")
    assert sniff_format(tmp_path / "0.h5") == "cardace"
    field = load_cardace_triplane(tmp_path / "0.h5", hidden_dim=16)
    assert field.spec.mlp.hidden_layers == 3 and field.spec.grid == type(field.spec.grid)(resolution=6, channels=4)
    xyz = torch.rand(300, 3) * 2.2 - 1.1
    with torch.no_grad():
        assert torch.allclose(field(xyz), cardace_formula(planes, layers, xyz), atol=1e-4)
    cardace_file(tmp_path / "paper.h5", R=32, C=16, width=64, n_hidden_linear=3)
    field = load_inr(tmp_path / "paper.h5")                       # the config's 64-wide SIREN by default
    assert field.spec.mlp.hidden_layers == 4 and to_graph(field).num_edges == 3 * 32 * 32 * 16 + sum(
        p.numel() for p in field.mlp.parameters())
    with pytest.raises(FormatError, match=r"0\.h5: 'params' has .* values"):
        load_cardace_triplane(tmp_path / "0.h5", hidden_dim=32)
    import h5py
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(FormatError, match=r"other\.h5 is not a Cardace.*'triplane'"):
        load_inr(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_bytes(b"nope")
    with pytest.raises(FormatError, match=r"junk\.h5 is not a readable HDF5"):
        load_inr(tmp_path / "junk.h5")


def test_optional_readers_missing_give_an_install_hint(tmp_path, monkeypatch):
    import sys
    (tmp_path / "s.msgpack").write_bytes(b"\x80")
    (tmp_path / "t.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "msgpack", None)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"msgpack.*gmn_inr\[formats\]"):
        load_inr(tmp_path / "s.msgpack")
    with pytest.raises(ImportError, match=r"h5py.*gmn_inr\[formats\]"):
        load_inr(tmp_path / "t.h5")


def test_from_tcnn_sine_is_sin_x():
    """tiny-cuda-nn's Sine activation is sin(x) (no SIREN w0): a tcnn Sine hash network loads as that."""
    from gmn_inr.fields import HashGridField
    g = torch.Generator().manual_seed(0)
    enc = {"otype": "HashGrid", "n_levels": 2, "n_features_per_level": 2, "log2_hashmap_size": 8,
           "base_resolution": 4, "per_level_scale": 2.0}
    net = {"otype": "CutlassMLP", "activation": "Sine", "output_activation": "None", "n_neurons": 16,
           "n_hidden_layers": 2}
    mats = tcnn_mats(g, 4, 2, 16, 3, scale=3.0)
    from gmn_inr.fields.hashgrid import hash_levels
    from gmn_inr.fields import HashGridSpec
    n_grid = hash_levels(HashGridSpec.from_tcnn(enc)).n_entries * 2
    table = torch.randn(n_grid, generator=g)
    flat = torch.cat([m.reshape(-1) for m in mats] + [table])
    field = HashGridField.from_tcnn(flat, {"encoding": enc, "network": net}, 3)
    assert field.spec.mlp.w0 == 1.0
    x = torch.rand(100, 3) * 2 - 1
    feats, _ = hash_grid((x + 1) / 2, table, 2, 2, 8, 4, 2.0)
    want = run_mlp(feats, [mats[0][:, :4]] + mats[1:], torch.sin, 3)
    with torch.no_grad():
        assert torch.allclose(field(x), want, atol=1e-5)
