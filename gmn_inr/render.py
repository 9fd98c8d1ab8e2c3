"""Cameras around the unit cube, rays, stratified samples and volume rendering, in plain torch.

Conventions
-----------
* Fields live in the cube ``[-1, 1]^3`` (``AABB``); a ray only samples the part of itself
  inside that cube (slab test), so no sample is wasted on empty space outside it.
* Cameras follow the OpenGL / NeRF convention: a camera looks down its local ``-z`` axis with
  ``+y`` up; ``c2w [4, 4]`` maps camera coordinates to world coordinates.
* A field maps ``xyz [..., 3] -> raw [..., 4]``; :func:`gmn_inr.fields.activations.radiance_from_raw`
  turns raw outputs into colour (sigmoid) and density (softplus).
* Volume rendering is the usual quadrature: ``alpha_i = 1 - exp(-sigma_i delta_i)``,
  ``T_i = prod_{k<i} (1 - alpha_k)``, ``w_i = T_i alpha_i``, ``C = sum w_i c_i + (1 - sum w_i) bg``.

nerfacc's packed renderer needs CUDA (docs/reference.md, "Volume rendering on CPU"), and these few lines are all that is needed,
so they are owned here. Everything is vectorised over leading batch dimensions: rays may be
``[R, 3]`` or ``[B, R, 3]`` (one set of rays per INR of a batch).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch

from gmn_inr.fields.activations import radiance_from_raw

#: the cube every field is defined on
AABB = (-1.0, 1.0)
#: default camera distance from the origin (the cube's circumscribed sphere has radius sqrt(3))
DEFAULT_RADIUS = 3.0
#: default focal length in units of the image width: a 40-degree field of view frames the cube
DEFAULT_FOCAL_PER_WIDTH = 0.5 / math.tan(math.radians(40.0) / 2)

Elevation = Union[float, Sequence[float]]


def look_at(eye: torch.Tensor, target: Optional[torch.Tensor] = None,
            up: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Camera-to-world matrices of cameras at ``eye [..., 3]`` looking at ``target`` (origin).

    Returns ``c2w [..., 4, 4]``. World ``+z`` is up; a camera straight above or below the target
    uses ``+y`` as its up vector instead (the cross product would vanish).
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=eye.dtype).expand_as(eye)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype) if up is None else torch.as_tensor(up, dtype=eye.dtype)
    back = torch.nn.functional.normalize(eye - target, dim=-1)         # camera +z points away from the target
    up = up.expand_as(back)
    degenerate = torch.linalg.cross(up, back).norm(dim=-1, keepdim=True) < 1e-6
    up = torch.where(degenerate, torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype).expand_as(back), up)
    right = torch.nn.functional.normalize(torch.linalg.cross(up, back), dim=-1)
    cam_up = torch.linalg.cross(back, right)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = cam_up
    c2w[..., :3, 2] = back
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_cameras(n: int, radius: float = DEFAULT_RADIUS, elevation: Elevation = 30.0,
                  seed: Optional[int] = None) -> torch.Tensor:
    """``n`` cameras on a sphere of ``radius`` around the origin, looking at it: ``c2w [n, 4, 4]``.

    ``elevation`` (degrees above the xy plane) is one value for every camera or a ``(lo, hi)``
    range. With ``seed=None`` the azimuths are evenly spaced and a range is spread evenly too
    (a turntable); with a seed, azimuth and elevation are drawn uniformly (reproducibly).
    """
    if n < 1:
        raise ValueError(f"orbit_cameras needs n >= 1, got {n}")
    if radius <= math.sqrt(3):
        raise ValueError(f"radius {radius} puts the camera inside the unit cube's bounding sphere (sqrt(3))")
    lo, hi = (float(elevation), float(elevation)) if isinstance(elevation, (int, float)) else map(float, elevation)
    if seed is None:
        azim = torch.arange(n, dtype=torch.float32) * (2 * math.pi / n)
        elev = torch.linspace(lo, hi, n) if n > 1 else torch.tensor([0.5 * (lo + hi)])
    else:
        g = torch.Generator().manual_seed(int(seed))
        azim = torch.rand(n, generator=g) * 2 * math.pi
        elev = lo + (hi - lo) * torch.rand(n, generator=g)
    elev = torch.deg2rad(elev)
    eye = radius * torch.stack([torch.cos(elev) * torch.cos(azim), torch.cos(elev) * torch.sin(azim),
                                torch.sin(elev)], dim=-1)
    return look_at(eye)


def _pixel_dirs(px: torch.Tensor, py: torch.Tensor, H: int, W: int, focal: float) -> torch.Tensor:
    """Camera-space directions ``[..., 3]`` through pixel centres ``(px, py)`` (float pixel coords)."""
    return torch.stack([(px + 0.5 - 0.5 * W) / focal, -(py + 0.5 - 0.5 * H) / focal,
                        -torch.ones_like(px)], dim=-1)


def camera_rays(c2w: torch.Tensor, H: int, W: int, focal: Optional[float] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of one camera, row-major.

    ``c2w [4, 4]`` -> ``(rays_o [H*W, 3], rays_d [H*W, 3])`` with unit directions.
    ``focal`` in pixels; default frames the unit cube at :data:`DEFAULT_RADIUS`.
    """
    if c2w.shape != (4, 4):
        raise ValueError(f"camera_rays expects one c2w [4, 4], got {tuple(c2w.shape)}")
    focal = DEFAULT_FOCAL_PER_WIDTH * W if focal is None else float(focal)
    py, px = torch.meshgrid(torch.arange(H, dtype=c2w.dtype), torch.arange(W, dtype=c2w.dtype), indexing="ij")
    dirs = _pixel_dirs(px.reshape(-1), py.reshape(-1), H, W, focal)            # [HW, 3]
    rays_d = torch.nn.functional.normalize(dirs @ c2w[:3, :3].T, dim=-1)
    rays_o = c2w[:3, 3].expand_as(rays_d).contiguous()
    return rays_o, rays_d


def random_rays(n_rays: int, generator: Optional[torch.Generator] = None, batch: Sequence[int] = (),
                radius: float = DEFAULT_RADIUS, elevation: Elevation = (-30.0, 60.0),
                H: int = 64, W: int = 64, focal: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rays: each ray from its own random orbit camera through a random pixel.

    Equivalent to sampling pixels from many views at once (nf2vec samples pixels of the
    training images). Returns ``(rays_o [*batch, n_rays, 3], rays_d [*batch, n_rays, 3])``.
    Deterministic given ``generator``'s state.
    """
    shape = (*batch, n_rays)
    lo, hi = (float(elevation), float(elevation)) if isinstance(elevation, (int, float)) else map(float, elevation)
    azim = torch.rand(shape, generator=generator) * 2 * math.pi
    elev = torch.deg2rad(lo + (hi - lo) * torch.rand(shape, generator=generator))
    eye = radius * torch.stack([torch.cos(elev) * torch.cos(azim), torch.cos(elev) * torch.sin(azim),
                                torch.sin(elev)], dim=-1)
    c2w = look_at(eye)                                                         # [*shape, 4, 4]
    focal = DEFAULT_FOCAL_PER_WIDTH * W if focal is None else float(focal)
    px = torch.rand(shape, generator=generator) * W - 0.5                       # continuous pixel coords
    py = torch.rand(shape, generator=generator) * H - 0.5
    dirs = _pixel_dirs(px, py, H, W, focal)
    rays_d = torch.nn.functional.normalize((c2w[..., :3, :3] @ dirs.unsqueeze(-1)).squeeze(-1), dim=-1)
    return eye.contiguous(), rays_d


def ray_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, lo: float = AABB[0], hi: float = AABB[1]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test: ``(near [...], far [...], hit [...] bool)`` of rays ``[..., 3]`` against the cube."""
    inv = 1.0 / torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t0 = (lo - rays_o) * inv
    t1 = (hi - rays_o) * inv
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit


def sample_along_rays(rays_o: torch.Tensor, rays_d: torch.Tensor, n_samples: int,
                      near: Optional[Union[float, torch.Tensor]] = None,
                      far: Optional[Union[float, torch.Tensor]] = None,
                      stratified: bool = False, generator: Optional[torch.Generator] = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample points on rays ``[..., 3]`` between ``near`` and ``far``.

    ``near``/``far`` default to the ray's entry and exit of the cube (rays that miss it get a
    zero-length interval, hence zero opacity). Bins are evenly spaced; ``stratified`` draws one
    uniform point per bin (from ``generator``), else bin midpoints.
    Returns ``(pts [..., S, 3], t [..., S], delta [..., S])`` where ``delta`` is the bin width.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if rays_o.shape != rays_d.shape or rays_o.shape[-1] != 3:
        raise ValueError(f"rays_o and rays_d must both be [..., 3], got {tuple(rays_o.shape)} and {tuple(rays_d.shape)}")
    lead = rays_o.shape[:-1]
    if near is None or far is None:
        n_box, f_box, _ = ray_aabb(rays_o, rays_d)
        near = n_box if near is None else near
        far = f_box if far is None else far
    dev = rays_o.device
    near = torch.as_tensor(near, dtype=rays_o.dtype, device=dev).expand(lead)
    far = torch.as_tensor(far, dtype=rays_o.dtype, device=dev).expand(lead)
    width = (far - near).clamp_min(0.0) / n_samples                             # [...]
    # stratified offsets come from the generator's device (CPU), so rays render alike everywhere
    u = (torch.rand(*lead, n_samples, generator=generator, dtype=rays_o.dtype).to(dev) if stratified
         else torch.full((*lead, n_samples), 0.5, dtype=rays_o.dtype, device=dev))
    t = near.unsqueeze(-1) + (torch.arange(n_samples, dtype=rays_o.dtype, device=dev) + u) * width.unsqueeze(-1)
    pts = rays_o.unsqueeze(-2) + t.unsqueeze(-1) * rays_d.unsqueeze(-2)
    delta = width.unsqueeze(-1).expand_as(t)
    return pts, t, delta


def composite(rgb: torch.Tensor, sigma: torch.Tensor, delta: torch.Tensor,
              bg: Union[float, torch.Tensor] = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha compositing along the sample axis.

    ``rgb [..., S, 3]``, ``sigma [..., S]``, ``delta [..., S]`` ->
    ``(colour [..., 3], acc [...], weights [..., S])``; ``bg`` (scalar or ``[3]``) fills the
    transparent remainder ``1 - acc``.
    """
    # transmittance via a cumulative sum of optical depth: exp(-sum_{k<i} sigma_k delta_k),
    # which is the exact product of (1 - alpha_k) and stabler than cumprod of (1 - alpha)
    tau = sigma * delta
    alpha = 1.0 - torch.exp(-tau)
    trans = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))
    weights = alpha * trans
    acc = weights.sum(dim=-1)
    colour = (weights.unsqueeze(-1) * rgb).sum(dim=-2)
    bg = torch.as_tensor(bg, dtype=colour.dtype, device=colour.device)
    colour = colour + (1.0 - acc).unsqueeze(-1) * bg
    return colour, acc, weights


def volume_render(fn: Callable[[torch.Tensor], torch.Tensor], rays_o: torch.Tensor, rays_d: torch.Tensor,
                  n_samples: int = 64, near: Optional[Union[float, torch.Tensor]] = None,
                  far: Optional[Union[float, torch.Tensor]] = None, bg: Union[float, torch.Tensor] = 1.0,
                  stratified: bool = False, generator: Optional[torch.Generator] = None,
                  chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render rays ``[..., R, 3]`` through ``fn: xyz [..., 3] -> raw [..., 4]``.

    Returns ``(rgb [..., R, 3], acc [..., R])``. ``chunk`` limits how many rays go through
    ``fn`` at once (for large images without autograd); ``None`` = all at once.
    """
    pts, _, delta = sample_along_rays(rays_o, rays_d, n_samples, near, far, stratified, generator)
    if chunk is None or rays_o.dim() != 2 or rays_o.shape[0] <= chunk:
        raw = fn(pts)
    else:
        raw = torch.cat([fn(pts[i:i + chunk]) for i in range(0, pts.shape[0], chunk)], dim=0)
    if raw.shape[-1] != 4 or raw.shape[:-1] != pts.shape[:-1]:
        raise ValueError(f"a radiance field must map xyz {tuple(pts.shape)} to raw "
                         f"{(*pts.shape[:-1], 4)}, got {tuple(raw.shape)}")
    rgb, sigma = radiance_from_raw(raw)
    colour, acc, _ = composite(rgb, sigma, delta, bg)
    return colour, acc


@torch.no_grad()
def render_image(field: Callable[[torch.Tensor], torch.Tensor], c2w: torch.Tensor, H: int = 64, W: int = 64,
                 focal: Optional[float] = None, n_samples: int = 64, bg: Union[float, torch.Tensor] = 1.0,
                 chunk: int = 4096) -> torch.Tensor:
    """Render one view of a radiance field: ``c2w [4, 4] -> image [H, W, 3]`` in [0, 1]."""
    rays_o, rays_d = camera_rays(c2w.float(), H, W, focal)
    rgb, _ = volume_render(field, rays_o, rays_d, n_samples=n_samples, bg=bg, chunk=chunk)
    return rgb.reshape(H, W, 3).clamp(0.0, 1.0)
