"""Two CPU processes under torchrun (gloo) train to the same model as one process."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gmn_inr.train import TrainConfig, train
from child import child_env
from tiny_records import tiny_pairs

CONFIG = dict(preset="tiny", loss="R+C+L2", contrastive_weight=0.5, l2_weight=0.05, steps=4, batch_pairs=4,
              lr=3e-3, rays_per_inr=16, samples_per_ray=8, points_per_inr=64, log_every=1,
              device="cpu")          # gloo on CPU processes, also where a GPU is visible

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import save_file
    from gmn_inr.train import TrainConfig, train
    from tiny_records import tiny_pairs

    pairs = tiny_pairs(4, ("MLP", "HASH"), "radiance", fit_steps=20)
    res = train(TrainConfig(**json.loads({config!r})), pairs, progress=False)
    if dist.get_rank() == 0:
        save_file({{k: v.contiguous() for k, v in res.model.state_dict().items()}}, sys.argv[1],
                  metadata={{"history": json.dumps(res.history), "world": str(dist.get_world_size())}})
    dist.destroy_process_group()
""")


def test_two_processes_match_one(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.format(config=json.dumps(CONFIG)))
    out = tmp_path / "ddp.safetensors"
    env = child_env()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    single = train(TrainConfig(**CONFIG), tiny_pairs(4, ("MLP", "HASH"), "radiance", fit_steps=20), progress=False)
    from safetensors import safe_open
    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["world"] == "2"
    ddp_state = load_file(str(out))
    worst = max((ddp_state[k] - v).abs().max().item() for k, v in single.model.state_dict().items())
    assert worst < 1e-4, worst
    # the logged (all-reduced) loss terms agree step by step
    hist = json.loads(meta["history"])
    assert len(hist) == len(single.history) == CONFIG["steps"]
    for a, b in zip(hist, single.history):
        for k in ("render", "contrastive", "l2", "total"):
            assert abs(a[k] - b[k]) < 1e-4 * max(1.0, abs(b[k])), (k, a, b)
    # and the model did move: a distributed run that silently skipped updates would fail here
    init = train(TrainConfig(**CONFIG), tiny_pairs(4, ("MLP", "HASH"), "radiance", fit_steps=20),
                 stop_after=0, progress=False)
    moved = max((ddp_state[k] - v).abs().max().item() for k, v in init.model.state_dict().items())
    assert moved > 1e-3
