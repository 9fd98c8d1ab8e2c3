import json

import pytest
import torch
from safetensors.torch import save_file

from gmn_inr.embedder import Embedder
from gmn_inr.train import (CheckpointError, TrainConfig, evaluate, load_model, one_cycle_lr, read_checkpoint,
                           train)
from tiny_records import tiny_pairs


FAST = dict(preset="tiny", batch_pairs=4, rays_per_inr=32, samples_per_ray=12, points_per_inr=128, log_every=5)


@pytest.fixture(scope="module")
def radiance_pairs():
    return tiny_pairs(4, ("MLP", "TRI", "HASH"), "radiance")


def test_training_lowers_every_loss_term(radiance_pairs):
    cfg = TrainConfig(loss="R+C+L2", contrastive_weight=0.2, l2_weight=0.05, steps=200, lr=3e-3, **FAST)
    before = evaluate(train(cfg, radiance_pairs, stop_after=0, progress=False).model, radiance_pairs)
    res = train(cfg, radiance_pairs, progress=False)
    after = evaluate(res.model, radiance_pairs)
    assert set(before) == {"render", "contrastive", "l2"}
    for k in before:
        assert after[k] < 0.85 * before[k], (k, before[k], after[k])
    assert res.history[-1]["step"] == 200 and "total" in res.history[-1]


def test_unified_udf_decoder_learns_sdf_inrs():
    pairs = tiny_pairs(4, ("MLP", "HASH"), "sdf")
    cfg = TrainConfig(loss="R", unified="udf", steps=120, lr=3e-3, **FAST)
    before = evaluate(train(cfg, pairs, stop_after=0, progress=False).model, pairs)
    res = train(cfg, pairs, progress=False)
    assert list(res.model.decoders) == ["udf"]
    assert evaluate(res.model, pairs)["implicit"] < 0.8 * before["implicit"]


def test_resume_equals_uninterrupted_and_runs_are_deterministic(radiance_pairs, tmp_path):
    # bit-identical resumes are a CPU promise (CUDA's scatter adds run in no fixed order)
    cfg = TrainConfig(loss="R+C", steps=12, ckpt_every=4, lr=3e-3, device="cpu", **FAST)
    full = train(cfg, radiance_pairs, tmp_path / "full", progress=False)
    again = train(cfg, radiance_pairs, resume=False, progress=False)
    part = train(cfg, radiance_pairs, tmp_path / "part", progress=False, stop_after=6)
    assert part.step == 6 and json.loads((tmp_path / "part" / "checkpoint.json").read_text())["step"] == 6
    resumed = train(cfg, radiance_pairs, tmp_path / "part", progress=False)
    assert resumed.step == 12
    for (k, a), b, c in zip(full.model.state_dict().items(), resumed.model.state_dict().values(),
                            again.model.state_dict().values()):
        assert torch.equal(a, b), k
        assert torch.equal(a, c), k
    assert [h["total"] for h in resumed.history] == [h["total"] for h in full.history]
    # the checkpoint on disk is the final model, and its encoder embeds like the trained one
    model, meta, _ = load_model(tmp_path / "full")
    assert meta["step"] == "12"
    emb = Embedder.from_checkpoint(tmp_path / "full" / "checkpoint.safetensors")
    recs = [radiance_pairs[0][0], radiance_pairs[1][1]]
    with torch.no_grad():
        assert torch.allclose(emb.embed(recs), Embedder(full.model.encoder).embed(recs), atol=1e-6)
    # resuming with a different model shape is refused, naming the difference
    with pytest.raises(CheckpointError, match="preset"):
        train(TrainConfig(**{**FAST, "preset": "cpu"}, loss="R+C", steps=12, device="cpu"), radiance_pairs, tmp_path / "full",
              progress=False)


def test_bad_checkpoints_give_clear_errors(radiance_pairs, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Embedder.from_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04this is a pickle, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Embedder.from_checkpoint(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a gmn_inr checkpoint"):
        Embedder.from_checkpoint(foreign)
    # a real checkpoint with one tensor of the wrong shape
    res = train(TrainConfig(loss="R", steps=1, **FAST), radiance_pairs, tmp_path / "run", progress=False)
    meta, tensors = read_checkpoint(res.checkpoint)
    key = "model/encoder.readout.weight"
    tensors[key] = torch.zeros(7, 3)
    wrong = tmp_path / "wrong.safetensors"
    save_file(tensors, str(wrong), metadata=meta)
    with pytest.raises(CheckpointError, match="is corrupt"):       # the checksum no longer matches
        Embedder.from_checkpoint(wrong)
    save_file(tensors, str(wrong), metadata={k: v for k, v in meta.items() if k != "sha256"})   # as an older writer
    with pytest.raises(CheckpointError, match=r"readout.weight: checkpoint \(7, 3\)"):
        Embedder.from_checkpoint(wrong)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_model(wrong)


def test_one_cycle_matches_torch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=50, pct_start=0.3,
                                                cycle_momentum=False)
    for step in range(50):
        assert abs(opt.param_groups[0]["lr"] - one_cycle_lr(step, 50, 1e-3, 0.3)) < 1e-12, step
        opt.step()
        sched.step()


def test_config_validation():
    with pytest.raises(ValueError, match="negatives"):
        TrainConfig(loss="R+C", batch_pairs=1).validate()
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="big").validate()
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"nope": 1})


def test_pairs_from_records_pairs_one_object_across_families(radiance_pairs):
    from gmn_inr.train import pairs_from_records

    recs = list({id(r): r for p in radiance_pairs for r in p}.values())
    pairs = pairs_from_records(recs[::-1])
    assert len(pairs) == 4 * 3                                      # 4 objects x C(3 families, 2)
    assert all(a.object_id == b.object_id and a.family != b.family for a, b in pairs)
    assert [(a.object_id, a.arch, b.arch) for a, b in pairs] == \
        [(a.object_id, a.arch, b.arch) for a, b in pairs_from_records(recs)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(radiance_pairs):
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(TrainConfig(loss="R", steps=1, device="cuda", **FAST), radiance_pairs, progress=False)
