"""Baselines the benchmarks put beside gmn_inr's direct embedding.

- :class:`FlatWeightsNet` (nf2vec / inr2vec style): the INR's parameters flattened into one
  vector, read by an MLP. It exists for ONE architecture only: another architecture's vector
  has another length (and meaning), so it cannot be embedded at all.
- conversion (INRet's comparison): evaluate the INR on a voxel grid (:func:`sample_grid`), then
  a small 3D CNN (:class:`VoxelNet`). Architecture-agnostic, but it pays for sampling.
- distillation (INRet): fit a supported architecture to an unsupported INR's outputs
  (:func:`distill`), then embed the copy. Pays for a fit per INR.
- sampled outputs (no learning at all): the INR's raw outputs at the graphs' probe points
  (:func:`sampled_outputs`), the same numbers as the output neurons' probe rows of
  ``graphs.to_graph``; :func:`sampled_output_features` flattens them (``asinh``) into one vector
  per INR, compared by cosine. Whatever an encoder reading those probe rows adds must beat it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gmn_inr.devices import module_device, on_device
from gmn_inr.fields import ArchSpec, build_field, cell_centres
from gmn_inr.tasks import SupervisedConfig, fit_supervised


def flat_parameters(field: nn.Module) -> torch.Tensor:
    """All parameters of ``field`` in ``parameters()`` order, ``[P]``."""
    return torch.cat([p.detach().reshape(-1) for p in field.parameters()])


class FlatWeightsNet(nn.Module):
    """``[B, P] -> [B, n_out]``: an MLP over flattened weights (one fixed ``P``)."""

    def __init__(self, n_params: int, n_out: int, hidden: int = 512):
        super().__init__()
        self.n_params = n_params
        self.net = nn.Sequential(nn.LayerNorm(n_params), nn.Linear(n_params, hidden), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, n_out))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if w.shape[-1] != self.n_params:
            raise ValueError(f"FlatWeightsNet reads {self.n_params} parameters, got {w.shape[-1]}: "
                             "a flat-weights encoder handles one architecture only")
        return self.net(w)


@torch.no_grad()
def sample_grid(field: nn.Module, res: int = 16, function: str = "radiance") -> torch.Tensor:
    """The INR's values on a ``res^3`` grid of voxel centres: ``[C, res, res, res]``.

    Radiance: ``[sigmoid rgb * occupancy-ish alpha, density]`` (C=4, density squashed by
    ``1 - exp(-sigma)``); implicit functions: the raw value (C=1), sdf/udf clamped to [-1, 1]."""
    from gmn_inr.fields.activations import radiance_from_raw

    xyz = cell_centres(res).to(module_device(field))           # [res^3, 3], x slowest
    raw = field(xyz)
    if function == "radiance":
        rgb, sigma = radiance_from_raw(raw)
        a = 1 - torch.exp(-sigma.clamp(min=0))
        vals = torch.cat([rgb * a.unsqueeze(-1), a.unsqueeze(-1)], -1)
    elif function == "occupancy":
        vals = torch.sigmoid(raw)
    else:
        vals = raw.clamp(-1, 1)
    return vals.t().reshape(-1, res, res, res)


@torch.no_grad()
def sampled_outputs(field: nn.Module) -> torch.Tensor:
    """The INR's raw outputs at the probe points (graphs/probe.py): ``[out_dim, K]``, row ``c``
    equal to the probe row of output neuron ``c`` in ``graphs.to_graph(field)``."""
    from graphs.probe import probe_points

    return field(probe_points().to(module_device(field))).t().contiguous()


def output_features(outputs: torch.Tensor) -> torch.Tensor:
    """``outputs [out_dim, K]`` (:func:`sampled_outputs`) -> ``[out_dim * K]`` through ``asinh``
    (the encoder's squashing of probe rows: sign kept, linear near 0, logarithmic for large
    densities), channel-major."""
    return torch.asinh(outputs).reshape(-1)


def sampled_output_features(field: nn.Module) -> torch.Tensor:
    """:func:`output_features` of ``field`` sampled at the probe points."""
    return output_features(sampled_outputs(field))


class VoxelNet(nn.Module):
    """``[B, C, R, R, R] -> [B, n_out]``: a small 3D CNN (the conversion baseline's encoder)."""

    def __init__(self, in_ch: int, n_out: int, width: int = 16):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv3d(in_ch, w, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
            nn.Linear(4 * w, n_out))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v)

    @torch.no_grad()
    def features(self, v: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """``[B, C, R, R, R] -> [B, 4 * width]``: the pooled features before the class layer (what
        the conversion baseline retrieves with, by cosine)."""
        self.eval()
        body = self.net[:-1]
        return torch.cat([body(v[i:i + batch_size]) for i in range(0, v.shape[0], batch_size)])


def train_supervised(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                     cfg: SupervisedConfig | None = None) -> nn.Module:
    """Cross-entropy training of a baseline (the same loop as the embedding classifiers)."""
    return fit_supervised(model, inputs, labels, cfg)


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([model(inputs[i:i + batch_size]).argmax(-1) for i in range(0, inputs.shape[0], batch_size)])


def distill(teacher: nn.Module, student_spec: ArchSpec, steps: int = 300, n_points: int = 2048,
            lr: float = 5e-3, seed: int = 0, device: "torch.device | str | None" = None) -> nn.Module:
    """Fit a fresh ``student_spec`` field to ``teacher``'s raw outputs at random points in
    [-1,1]^3 plus points near the teacher's surface/density (INRet's distillation).

    ``device`` (default: the teacher's): where the fit runs; a teacher elsewhere runs as a copy
    there. The student's initial weights and the points come from CPU generators (the same student
    on any device, to float tolerance); it is returned on the CPU."""
    dev = module_device(teacher) if device is None else torch.device(device)
    teacher = on_device(teacher, dev)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    student = build_field(student_spec).to(dev)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    for _ in range(steps):
        x = (torch.rand(n_points, 3, generator=gen) * 2 - 1).to(dev)
        with torch.no_grad():
            target = teacher(x)
        loss = F.mse_loss(student(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.cpu().eval()


def class_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean()) if labels.numel() else float("nan")
