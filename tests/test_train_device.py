"""train() and devices: the caller's records, fields and graphs stay where they are and keep their
bits; the returned model is on the device the config names (or, with ``auto``, the inputs')."""
import pytest
import torch
from torch import nn

from gmn_inr.encoder import batch_graphs
from gmn_inr.train import TrainConfig, train
from tiny_records import tiny_pairs


def _snapshot(pairs):
    recs = {id(r): r for p in pairs for r in p}.values()
    out = []
    for r in recs:
        f, g = r.field(), r.graph()
        tensors = list(f.parameters()) + list(f.buffers()) + [g.x, g.edge_index, g.edge_attr]
        out.append((r, f, g, [(t, t.device, t.detach().clone()) for t in tensors]))
    return out


def _assert_unchanged(snap):
    for r, f, g, tensors in snap:
        assert r.field() is f and r.graph() is g
        now = list(f.parameters()) + list(f.buffers()) + [g.x, g.edge_index, g.edge_attr]
        assert len(now) == len(tensors)
        for t, (was, dev, bits) in zip(now, tensors):
            assert t is was and t.device == dev and torch.equal(t.detach().cpu(), bits.cpu())


def _cfg(**kw):
    return TrainConfig(**{**dict(preset="tiny", loss="R+C", steps=2, batch_pairs=2, rays_per_inr=8, samples_per_ray=4,
                                 log_every=1), **kw})


def test_train_never_moves_or_mutates_the_callers_fields_and_graphs(monkeypatch):
    pairs = tiny_pairs(2, ("MLP", "HASH"), "radiance", fit_steps=5)
    snap = _snapshot(pairs)
    theirs = {id(f) for _, f, _, _ in snap}
    moved = []
    real_to = nn.Module.to

    def to(self, *a, **k):
        # Module.to moves in place even to the device a module is on: calling it on a caller's field
        # is the move this test forbids, whatever the device
        if id(self) in theirs:
            moved.append(type(self).__name__)
        return real_to(self, *a, **k)

    monkeypatch.setattr(nn.Module, "to", to)
    res = train(_cfg(device="cpu"), pairs, progress=False)
    assert moved == []
    _assert_unchanged(snap)
    assert next(res.encoder.parameters()).device == torch.device("cpu")
    res.encoder.eval()(batch_graphs([pairs[0][0].graph()]))       # the caller's CPU graphs embed as they are


def test_an_unknown_device_is_a_clear_error():
    pairs = tiny_pairs(2, ("MLP", "HASH"), "radiance", fit_steps=1)
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        train(_cfg(device="gpu0"), pairs, progress=False)


@pytest.mark.cuda
@pytest.mark.parametrize("device,home", [("auto", "cpu"), ("cuda", "cuda")])
def test_training_on_cuda_leaves_the_caller_on_cpu(device, home):
    pairs = tiny_pairs(2, ("MLP", "HASH"), "radiance", fit_steps=5)
    snap = _snapshot(pairs)
    res = train(_cfg(device=device), pairs, progress=False)
    _assert_unchanged(snap)
    assert next(res.encoder.parameters()).device.type == home
    z = res.encoder.eval()(batch_graphs([pairs[0][0].graph()], device=home))
    assert z.device.type == home and torch.isfinite(z).all()


def test_bf16_autocast_keeps_the_losses_to_the_digits_that_matter():
    """The forward under bf16 autocast (the default on cuda; asked for here on the CPU): every loss
    term of the first steps within 2% of float32's, and not the same bits (autocast did run)."""
    pairs = tiny_pairs(3, ("MLP", "HASH"), "radiance", fit_steps=20)
    runs = {p: train(_cfg(precision=p, device="cpu", steps=3), pairs, progress=False).history for p in ("fp32", "bf16")}
    assert [h["step"] for h in runs["fp32"]] == [h["step"] for h in runs["bf16"]] == [1, 2, 3]
    differ = False
    for a, b in zip(runs["fp32"], runs["bf16"]):
        for k in ("render", "contrastive", "total"):
            assert abs(b[k] - a[k]) <= 0.02 * abs(a[k]), (a["step"], k, a[k], b[k])
            differ |= b[k] != a[k]
    assert differ


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be one of"):
        _cfg(precision="fp16").validate()
