"""Meshes a user brings (``gmn-inr zoo build --meshes DIR``) as shapes: ``MeshShape``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gmn_inr.fields.base import cell_centres

from .primitives import EXTENT, Shape, _length
from .recipes import _colour


# ---------------------------------------------------------------------------------------
# meshes a user brings
# ---------------------------------------------------------------------------------------
MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")


class MeshShape(Shape):
    """A mesh, normalised to ``[-EXTENT, EXTENT]^3``, never assumed watertight.

    * unsigned distance: nearest of ``n_samples`` points sampled on the triangles
      (a k-d tree; error about half the sample spacing, ~3e-3 for 200k samples),
    * sign: generalised winding number (Jacobson et al.) of the triangles, exact for
      closed meshes and graceful on open ones, computed on a ``sign_res^3`` grid and
      interpolated; within a grid cell of the surface the sign comes from the nearest
      samples' face normals instead (a vote of 8), where the coarse grid cannot resolve it,
    * colour: the nearest face's colour if the mesh has colours, else one colour per mesh.

    ``sign="exact"`` (the default) takes the sign from the triangles' fast winding number at each
    point (point-cloud-utils' ``signed_distance_to_mesh``: about 0.2 s for a 5k-triangle part at
    32^3, against 8-17 s for the winding-number grid) and the distance as the smaller of that
    call's triangle distance and the nearest surface sample's: measured on overlapping closed parts
    (a pin through a body), the call's distance is sometimes too large, never too small. The
    colour is the closest face's, or the nearest sample's where that is closer.
    ``sign="grid"`` is the k-d tree and winding-number grid above (no extra package).
    """

    def __init__(self, mesh, class_name: str = "mesh", label: int = 0, object_id: str = "",
                 n_samples: int = 200_000, sign_res: int = 32, seed: int = 0, sign: str = "exact"):
        import trimesh
        from scipy.spatial import cKDTree

        if isinstance(mesh, (str, Path)):
            mesh = load_mesh(mesh)
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise ValueError(f"not a triangle mesh with faces: {object_id or mesh!r}")
        self.class_name, self.label, self.object_id = class_name, label, object_id
        v = np.asarray(mesh.vertices, dtype=np.float64)
        lo, hi = v.min(0), v.max(0)
        if not np.all(np.isfinite(v)) or (hi - lo).max() <= 0:
            raise ValueError(f"degenerate mesh {object_id!r}")
        v = (v - (lo + hi) / 2) * (EXTENT / ((hi - lo).max() / 2))
        f = np.asarray(mesh.faces, dtype=np.int64)
        self.tris = torch.as_tensor(v[f], dtype=torch.float32)            # [F, 3, 3]
        rng = np.random.default_rng(seed)
        pts, fid = _sample_triangles(v[f], n_samples, rng)
        self.samples = torch.as_tensor(pts, dtype=torch.float32)
        fn = np.cross(v[f][:, 1] - v[f][:, 0], v[f][:, 2] - v[f][:, 0])
        fn /= np.linalg.norm(fn, axis=1, keepdims=True).clip(1e-12)
        self.sample_normals = fn[fid]
        try:
            vis = mesh.visual      # texture visuals convert; colour visuals (PLY, OFF colours) have no to_color
            vis = vis.to_color() if hasattr(vis, "to_color") else vis
            fc = np.asarray(vis.face_colors, dtype=np.float64)[:, :3] / 255.0
            if len(fc) != len(f) or np.ptp(fc, axis=0).max() < 1e-3:
                raise ValueError
        except Exception:   # no usable colours: a per-mesh colour
            fc = np.tile(_colour(rng), (len(f), 1))
        self.face_colors = torch.as_tensor(fc, dtype=torch.float32)
        self.sample_colors = self.face_colors[torch.as_tensor(fid)]
        if sign not in ("exact", "grid"):
            raise ValueError(f"sign must be 'exact' or 'grid', got {sign!r}")
        self.sign = sign
        if sign == "exact":
            try:
                import point_cloud_utils  # noqa: F401
            except ImportError:
                raise ImportError("exact mesh distances need point-cloud-utils: pip install 'gmn_inr[meshes]' "
                                  "(or MeshShape(sign='grid'))") from None
            self.vertices, self.faces = v.copy(), f.copy()
        self.tree = cKDTree(pts)
        if sign == "exact":
            return
        self.sign_res = sign_res
        with torch.no_grad():
            wn = winding_number(cell_centres(sign_res), self.tris)
        self.wn_grid = wn.reshape(1, 1, sign_res, sign_res, sign_res)   # [x, y, z]

    def _nearest(self, p: torch.Tensor, k: int = 1):
        # workers=-1: the k-d tree query is the cost of a mesh's ground truth; use every core
        d, i = self.tree.query(p.detach().reshape(-1, 3).cpu().numpy().astype(np.float64), k=k, workers=-1)
        return d, i

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        """``p [..., 3] -> [...]`` (not differentiable: a k-d tree lookup)."""
        return self.sdf_and_color(p)[0]

    def sdf_and_color(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``p [..., 3] -> ([...], [..., 3])`` from one k-d tree query."""
        lead = p.shape[:-1]
        flat = p.detach().reshape(-1, 3).float()
        if self.sign == "exact":
            import point_cloud_utils as pcu

            s, fi, _ = pcu.signed_distance_to_mesh(flat.numpy().astype(np.float64), self.vertices, self.faces)
            d, i = self._nearest(flat)
            use_face = np.abs(s) <= d
            dist = np.where(use_face, np.abs(s), d)
            colour = torch.where(torch.as_tensor(use_face)[:, None],
                                 self.face_colors[torch.as_tensor(fi.astype(np.int64))],
                                 self.sample_colors[torch.as_tensor(i)]).reshape(*lead, 3)
            return torch.as_tensor(np.where(s < 0, -dist, dist), dtype=torch.float32).reshape(lead).to(p.dtype), colour
        d, idx = self._nearest(flat, k=8)
        dist = torch.as_tensor(d[:, 0], dtype=torch.float32)
        # winding number, trilinear from the grid; grid_sample wants (z, y, x) order in its last dim
        g = flat.flip(-1).reshape(1, -1, 1, 1, 3)
        wn = torch.nn.functional.grid_sample(self.wn_grid, g, align_corners=False, padding_mode="border")
        inside = wn.reshape(-1) > 0.5
        # near the surface: vote of the nearest samples' normals
        off = flat.numpy()[:, None, :] - self.samples.numpy()[idx]                      # [M, 8, 3]
        vote = (np.einsum("mkc,mkc->mk", off, self.sample_normals[idx]) < 0).mean(1) > 0.5
        cell = 2.0 / self.sign_res
        near = dist < 1.5 * cell
        inside = torch.where(near, torch.as_tensor(vote), inside)
        colour = self.sample_colors[torch.as_tensor(idx[:, 0])].reshape(*lead, 3)
        return torch.where(inside, -dist, dist).reshape(lead).to(p.dtype), colour

    def color(self, p: torch.Tensor) -> torch.Tensor:
        """``p [..., 3] -> [..., 3]``: colour of the nearest face (exact) or surface sample (grid)."""
        if self.sign == "exact":
            return self.sdf_and_color(p)[1]
        _, i = self._nearest(p)
        return self.sample_colors[torch.as_tensor(i)].reshape(*p.shape[:-1], 3)

    def sample_surface(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        idx = torch.randint(len(self.samples), (n,), generator=generator)
        return self.samples[idx]


def _sample_triangles(tris: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted uniform points on triangles ``[F, 3, 3]``: ``([n, 3], face ids [n])``."""
    area = np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    fid = rng.choice(len(tris), size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tris[fid]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0]), fid


def winding_number(p: torch.Tensor, tris: torch.Tensor, chunk: int = 2 ** 22) -> torch.Tensor:
    """Generalised winding number of triangles ``[F, 3, 3]`` at ``p [M, 3]`` -> ``[M]``:
    sum of signed solid angles / 4 pi (Van Oosterom & Strackee), chunked over points so the
    ``[m, F]`` temporaries stay under ``chunk`` entries."""
    out = []
    step = max(1, chunk // max(1, len(tris)))
    for s in range(0, len(p), step):
        a = tris[None, :, 0] - p[s:s + step, None]         # [m, F, 3]
        b = tris[None, :, 1] - p[s:s + step, None]
        c = tris[None, :, 2] - p[s:s + step, None]
        la, lb, lc = _length(a), _length(b), _length(c)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append((2 * torch.atan2(det, den)).sum(-1) / (4 * math.pi))
    return torch.cat(out)


def load_mesh(path):
    """Load one mesh file with trimesh (scenes are concatenated); clear error if it is not one."""
    import trimesh

    try:
        m = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types
        raise ValueError(f"cannot read mesh {path}: {exc}") from exc
    if not isinstance(m, trimesh.Trimesh) or len(m.faces) == 0:
        raise ValueError(f"{path} holds no triangles")
    return m


def mesh_objects(directory, n_samples: int = 200_000) -> list[MeshShape]:
    """Every mesh under ``directory``. Meshes in sub-folders take the folder name as class
    (``DIR/chair/a.obj``); meshes directly in ``DIR`` get class ``"mesh"``. Object ids are
    ``mesh-<class>-<stem>``; labels follow the sorted class names."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"mesh directory {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no meshes ({', '.join(MESH_SUFFIXES)}) under {root}")
    cls_of = {f: (f.parent.name if f.parent != root else "mesh") for f in files}
    classes = sorted(set(cls_of.values()))
    out = []
    for i, f in enumerate(files):
        c = cls_of[f]
        out.append(MeshShape(f, class_name=c, label=classes.index(c), object_id=f"mesh-{c}-{f.stem}",
                             n_samples=n_samples, seed=i))
    return out
