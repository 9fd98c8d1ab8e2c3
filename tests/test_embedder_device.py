"""The embedder sized to its device: block form and batch size chosen per device, the two block
forms giving the same embeddings, the caller's encoder left where it is."""
import pytest
import torch

from gmn_inr.embedder import Embedder, block_form_for, device_batch_size
from gmn_inr.encoder import GMNEncoder
from tiny_records import tiny_records


@pytest.fixture(scope="module")
def records():
    recs = tiny_records(2, ("MLP", "TRI", "HASH", "OCT"), "radiance", fit_steps=3)
    return [r for rs in recs.values() for r in rs]


def test_the_plain_and_efficient_forms_give_the_same_embeddings(records):
    enc = GMNEncoder.from_preset("tiny")
    eff = Embedder(enc, block_form="efficient", batch_size=3).embed(records)
    plain_emb = Embedder(enc, block_form="plain", batch_size=3)
    assert plain_emb.encoder is not enc and not plain_emb.encoder.config.efficient and enc.config.efficient
    plain = plain_emb.embed(records)
    assert eff.shape == (8, enc.embed_dim)
    torch.testing.assert_close(plain, eff, rtol=1e-4, atol=1e-5)


def test_defaults_follow_the_device():
    assert block_form_for("cpu") == "efficient" and block_form_for("cuda") == "plain"
    assert block_form_for("cuda", "efficient") == "efficient"
    assert device_batch_size("cpu") == 16 and device_batch_size("cuda") > device_batch_size("cpu")
    emb = Embedder(GMNEncoder.from_preset("tiny"))
    assert emb.block_form == "efficient" and emb.batch_size == 16
    with pytest.raises(ValueError, match="unknown block form 'fused'"):
        Embedder(GMNEncoder.from_preset("tiny"), block_form="fused")


@pytest.mark.cuda
def test_embedding_on_cuda_leaves_the_encoder_on_cpu_and_agrees(records):
    enc = GMNEncoder.from_preset("tiny")
    cpu = Embedder(enc).embed(records)
    for form in ("plain", "efficient"):
        gpu = Embedder(enc, device="cuda", block_form=form).embed(records)
        assert next(enc.parameters()).device.type == "cpu"
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
