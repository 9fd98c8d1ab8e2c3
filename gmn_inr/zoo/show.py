"""A picture of a zoo: objects (rows) x ground truth and several families' radiance INRs
(columns), rendered with :func:`gmn_inr.render.render_image` from one orbit camera."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .gate import ground_truth_radiance  # noqa: F401  (the target lives with the gate; re-exported)


#: the columns of a built zoo's picture
BUILT_COLUMNS = ("MLP", "TRI", "HASH", "OCT")


def show_zoo(zoo_dir, out, n_objects: int = 4, size: int = 96, split: Optional[str] = None,
             archs=None, elevation: float = 25.0, azimuth_index: int = 1) -> Path:
    """Render ``n_objects`` objects that have radiance INRs of ``archs`` (as many of them as
    stored; default :data:`BUILT_COLUMNS`, or a store of imported INRs' own architectures) to one
    PNG at ``out``; returns its path. Imported objects have no ground truth to show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gmn_inr.render import orbit_cameras, render_image

    from .build import manifest_shape
    from .store import open_store

    store = open_store(zoo_dir)
    recs = store.records(split=split, functions=("radiance",))
    by_obj: dict[str, dict] = {}
    for r in recs:
        by_obj.setdefault(r.object_id, {})[r.arch] = r
    if not by_obj:
        raise ValueError(f"{zoo_dir} has no radiance INRs to show")
    if archs is None:
        have = sorted({r.arch for r in recs})
        archs = [a for a in BUILT_COLUMNS if a in have] or have[:6]
    # prefer objects with the most requested archs, one per class first
    ranked = sorted(by_obj, key=lambda o: (-sum(a in by_obj[o] for a in archs), o))
    chosen, seen = [], set()
    for o in ranked:
        c = store.objects[o]["class_name"]
        if c not in seen:
            chosen.append(o)
            seen.add(c)
        if len(chosen) == n_objects:
            break
    for o in ranked:
        if len(chosen) >= n_objects:
            break
        if o not in chosen:
            chosen.append(o)
    c2w = orbit_cameras(4, elevation=elevation)[azimuth_index]
    known = [o for o in chosen if store.objects[o].get("source") != "import"]       # a recipe or a mesh
    cols = (["truth"] if known else []) + list(archs)
    fig, axes = plt.subplots(len(chosen), len(cols), figsize=(1.6 * len(cols), 1.6 * len(chosen)), squeeze=False)
    for i, oid in enumerate(chosen):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            ax.axis("off")
            if col == "truth" and oid not in known:
                ax.set_title("truth: not known", fontsize=6)
                continue
            if col == "truth":
                img = render_image(ground_truth_radiance(manifest_shape(oid, store.objects[oid])), c2w, size, size)
            elif col in by_obj[oid]:
                img = render_image(by_obj[oid][col].field(), c2w, size, size)
            else:
                ax.set_title(f"{col}: dropped", fontsize=6)
                continue
            ax.imshow(img.numpy())
            if i == 0:
                ax.set_title(col, fontsize=8)
            if j == 0:
                ax.text(-0.05, 0.5, store.objects[oid]["class_name"], rotation=90, va="center", ha="right",
                        transform=ax.transAxes, fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
