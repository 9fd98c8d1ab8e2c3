"""Reference MLP INRs as their authors write them (not as ``nn.Sequential``), built here from the
published architectures (facts in ``docs/formats.md``). ``graphs.to_graph`` converts each by tracing.

* :class:`DeepSDFDecoder` -- Park et al.: ``latent ++ xyz`` -> 8 x 512 ReLU layers with weight norm,
  the input concatenated again before layer 4, dropout, ``tanh`` on the output; state-dict keys
  ``lin{k}.weight_g / weight_v / bias`` as DeepSDF saves them (see :func:`gmn_inr.io.load_deepsdf`).
* :class:`DeepSDFShape` -- one shape of an auto-decoder: the decoder plus its latent code, a field of xyz.
* :class:`NeRFMLP` -- Mildenhall et al.: 8 x 256 ReLU layers on encoded xyz, xyz re-fed after layer 5
  (index 4), a density head, a feature layer concatenated with the encoded view direction, a
  128-wide colour branch; ``forward(x) -> cat(rgb, sigma)`` raw.
* :class:`Siren` -- Sitzmann et al.: ``sin(w0 * (W x + b))`` layers with their initialisation, a
  linear output layer.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from gmn_inr.fields.encoding import FrequencyEncoding
from gmn_inr.fields.spec import FrequencySpec


class DeepSDFDecoder(nn.Module):
    """``input [..., latent_size + 3]`` (latent first, xyz last) -> sdf ``[..., 1]`` in (-1, 1).

    Layer ``k`` is ``lin{k}``; before every layer in ``latent_in`` the network input is concatenated
    after the running features (so the layer before it outputs ``dims[k] - (latent_size + 3)``);
    hidden layers: ReLU then dropout (identity in eval mode); the last layer has no weight norm;
    ``tanh`` at the end. ``weight_norm=False`` puts a LayerNorm after each layer in ``norm_layers``
    instead, as DeepSDF does.
    """

    def __init__(self, latent_size: int = 256, dims: Sequence[int] = (512,) * 8, latent_in: Sequence[int] = (4,),
                 norm_layers: Sequence[int] = tuple(range(8)), weight_norm: bool = True, dropout_prob: float = 0.2):
        super().__init__()
        self.latent_size = int(latent_size)
        d = [self.latent_size + 3] + list(dims) + [1]
        self.num_layers = len(d)
        self.latent_in = tuple(latent_in)
        self.norm_layers = tuple(norm_layers)
        self.weight_norm = weight_norm
        self.dropout_prob = dropout_prob
        for k in range(self.num_layers - 1):
            out = d[k + 1] - d[0] if k + 1 in self.latent_in else d[k + 1]
            lin = nn.Linear(d[k], out)
            if weight_norm and k in self.norm_layers:
                lin = nn.utils.parametrizations.weight_norm(lin)
            setattr(self, f"lin{k}", lin)
            if not weight_norm and k in self.norm_layers and k < self.num_layers - 2:
                setattr(self, f"bn{k}", nn.LayerNorm(out))
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout_prob)
        self.th = nn.Tanh()

    @property
    def gmn_xyz_columns(self) -> tuple[int, int, int]:
        return (self.latent_size, self.latent_size + 1, self.latent_size + 2)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = inp
        for k in range(self.num_layers - 1):
            if k in self.latent_in:
                x = torch.cat([x, inp], -1)
            x = getattr(self, f"lin{k}")(x)
            if k < self.num_layers - 2:
                if not self.weight_norm and k in self.norm_layers:
                    x = getattr(self, f"bn{k}")(x)
                x = self.dropout(self.relu(x))
        return self.th(x)


class DeepSDFShape(nn.Module):
    """One shape of a DeepSDF auto-decoder: ``xyz [..., 3] -> sdf [..., 1]`` with its latent ``code``."""

    gmn_input_dims = (3,)

    def __init__(self, decoder: DeepSDFDecoder, code: torch.Tensor):
        super().__init__()
        if code.reshape(-1).numel() != decoder.latent_size:
            raise ValueError(f"latent code has {code.numel()} values, the decoder takes {decoder.latent_size}")
        self.decoder = decoder
        self.latent = nn.Parameter(code.detach().reshape(-1).clone())

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        code = self.latent.expand(xyz.shape[:-1] + self.latent.shape)
        return self.decoder(torch.cat([code, xyz], -1))


class NeRFMLP(nn.Module):
    """The original NeRF MLP: ``x [..., input_ch + input_ch_views]`` (encoded xyz, then encoded view
    direction) -> raw ``[..., 4]`` = ``(r, g, b, sigma)`` before their activations.

    ``pts_linears[0]`` takes the encoded xyz; after ``pts_linears[i]`` for ``i`` in ``skips`` the
    encoded xyz is concatenated *before* the features; ``alpha_linear`` reads the trunk,
    ``feature_linear`` too, its output concatenated with the encoded view goes through
    ``views_linears`` (ReLU, ``W // 2`` wide) and ``rgb_linear``. ``multires`` / ``multires_views``
    (the encodings' frequency counts: inputs ``3 + 6 multires`` and ``3 + 6 multires_views``) only
    tell the probe features what the inputs are at a point.
    """

    def __init__(self, D: int = 8, W: int = 256, multires: int = 10, multires_views: int = 4,
                 skips: Sequence[int] = (4,), use_viewdirs: bool = True):
        super().__init__()
        self.pos_enc = FrequencyEncoding(FrequencySpec(n_freqs=multires, include_input=True, style="nerf"))
        self.view_enc = FrequencyEncoding(FrequencySpec(n_freqs=multires_views, include_input=True, style="nerf"))
        self.input_ch, self.input_ch_views = self.pos_enc.out_dim, self.view_enc.out_dim
        self.skips = tuple(skips)
        self.use_viewdirs = use_viewdirs
        self.pts_linears = nn.ModuleList([nn.Linear(self.input_ch, W)] + [
            nn.Linear(W + self.input_ch, W) if i in self.skips else nn.Linear(W, W) for i in range(D - 1)])
        if use_viewdirs:
            self.views_linears = nn.ModuleList([nn.Linear(self.input_ch_views + W, W // 2)])
            self.feature_linear = nn.Linear(W, W)
            self.alpha_linear = nn.Linear(W, 1)
            self.rgb_linear = nn.Linear(W // 2, 3)
        else:
            self.output_linear = nn.Linear(W, 4)

    @property
    def gmn_input_dims(self) -> tuple[int]:
        return (self.input_ch + self.input_ch_views,)

    def gmn_probe_inputs(self, pts: torch.Tensor) -> list[torch.Tensor]:
        """The network's input at probe points ``pts`` seen along +z (a fixed view direction)."""
        view = torch.tensor([0.0, 0.0, 1.0]).expand_as(pts)
        return [torch.cat([self.pos_enc(pts), self.view_enc(view)], -1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_pts, input_views = torch.split(x, [self.input_ch, self.input_ch_views], dim=-1)
        h = input_pts
        for i, lin in enumerate(self.pts_linears):
            h = torch.relu(lin(h))
            if i in self.skips:
                h = torch.cat([input_pts, h], -1)
        if not self.use_viewdirs:
            return self.output_linear(h)
        alpha = self.alpha_linear(h)
        h = torch.cat([self.feature_linear(h), input_views], -1)
        for lin in self.views_linears:
            h = torch.relu(lin(h))
        return torch.cat([self.rgb_linear(h), alpha], -1)


class SineLayer(nn.Module):
    """``sin(w0 * linear(x))`` with SIREN's initialisation (first layer ``U(-1/n, 1/n)``, later
    ``U(-sqrt(6/n)/w0, sqrt(6/n)/w0)``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, is_first: bool = False,
                 omega_0: float = 30.0):
        super().__init__()
        self.omega_0 = float(omega_0)
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        bound = 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / self.omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


class Siren(nn.Module):
    """SIREN: ``hidden_layers + 1`` sine layers, then a linear output layer (``outermost_linear``,
    initialised like a hidden layer) or a last sine layer. Keys ``net.{i}.linear.*``, last ``net.{n}.*``."""

    def __init__(self, in_features: int = 3, hidden_features: int = 256, hidden_layers: int = 3,
                 out_features: int = 1, outermost_linear: bool = True, first_omega_0: float = 30.0,
                 hidden_omega_0: float = 30.0):
        super().__init__()
        layers: list[nn.Module] = [SineLayer(in_features, hidden_features, is_first=True, omega_0=first_omega_0)]
        layers += [SineLayer(hidden_features, hidden_features, omega_0=hidden_omega_0) for _ in range(hidden_layers)]
        if outermost_linear:
            last = nn.Linear(hidden_features, out_features)
            bound = math.sqrt(6.0 / hidden_features) / hidden_omega_0
            with torch.no_grad():
                last.weight.uniform_(-bound, bound)
            layers.append(last)
        else:
            layers.append(SineLayer(hidden_features, out_features, omega_0=hidden_omega_0))
        self.net = nn.Sequential(*layers)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.net(coords)
