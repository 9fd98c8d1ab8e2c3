"""``gmn-inr search build`` split across processes under torchrun: each rank embeds its shards, rank 0
assembles the index, and it equals the index one process builds; a killed build resumes."""
import os
import subprocess
import sys

import torch

from gmn_inr.cli import main
from gmn_inr.search import SearchIndex
from test_search_import import _folder


def _search_build(store, run, index, nproc=None, env_extra=None):
    cli = ["-m", "gmn_inr.cli", "search", "build", str(store), "--checkpoint", str(run), "--index", str(index),
           "--shard-size", "2", "--no-progress", "--kind", "exact", "--device", "cpu"]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] + cli
    else:
        cmd = [sys.executable] + cli
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_torchrun_search_build_equals_one_process(tmp_path, capsys):
    src, store, run = tmp_path / "inrs", tmp_path / "store", tmp_path / "run"
    _folder(src)
    assert main(["zoo", "import", str(src), "--out", str(store), "--skip-unreadable"]) == 0
    assert main(["train", str(store), "--preset", "tiny", "--steps", "2", "--out", str(run), "--no-progress",
                 "--archs", "MLP,HASH"]) == 0
    one = _search_build(store, run, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _search_build(store, run, tmp_path / "two", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    shards = sorted(p.name for p in (tmp_path / "two" / "shards").glob("shard_*.safetensors"))
    assert shards == [f"shard_{i:06d}.safetensors" for i in range(4)]            # 8 INRs, 2 per shard
    a, b = SearchIndex(tmp_path / "one"), SearchIndex(tmp_path / "two")
    assert a.keys == b.keys and len(a) == 8
    assert torch.equal(a.z, b.z)                   # same records, same batches per shard: same bits
    # a build that lost a shard (a killed rank) resumes: only the missing shard is embedded again
    victim = tmp_path / "two" / "shards" / "shard_000001.safetensors"
    kept = (tmp_path / "two" / "shards" / "shard_000002.safetensors").stat().st_mtime_ns
    victim.unlink()
    again = _search_build(store, run, tmp_path / "two", nproc=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert victim.exists()
    assert (tmp_path / "two" / "shards" / "shard_000002.safetensors").stat().st_mtime_ns == kept
    assert torch.equal(SearchIndex(tmp_path / "two").z, a.z)
