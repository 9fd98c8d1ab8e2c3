"""A zoo of real meshes: classic models from CGAL's data (bunny, dragon, elephant, armadillo...).

    apt-get install -y libcgal-demo          # once (Debian/Ubuntu); ships data.tar.gz with ~140 .off meshes
    python benchmarks/cgal_meshes.py --out zoo_cache/cgal [--meshes zoo_cache/cgal_meshes] [--workers 2]

Extracts :data:`CLASSIC_MESHES` from the package's ``data.tar.gz`` into ``MESHES/cgal/<name>.off``
(one class: the meshes have none), then builds a zoo of them (``gmn_inr.zoo.build_zoo(..., meshes=)``)
with the cpu preset's fitting, holding what ``benchmarks/implicit_functions.py --mesh-zoo`` reads:
HASH sdf / udf / occupancy INRs and radiance INRs of every training family. Every object is a
test object (the encoder it is read with is trained on the procedural zoo only). Ground truth:
``MeshShape``'s exact mode (fast winding number sign, point-cloud-utils). Nothing is
installed or downloaded here: a missing package is a clear error naming the apt command.
"""
from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

#: where Debian's libcgal-demo puts CGAL's data (``dpkg -L libcgal-demo``)
CGAL_DATA = Path("/usr/share/doc/libcgal-dev/data.tar.gz")
#: real scanned or modelled objects among data/meshes (test patches, cubes and single triangles left out)
CLASSIC_MESHES = ("armadillo", "bear", "bull", "bunny00", "cactus", "camel", "cow", "dino", "diplodocus",
                  "elephant", "elk", "femur", "hand", "head", "helmet", "homer", "lion", "lion-head", "man",
                  "mannequin-devil", "mushroom", "nefertiti", "pig", "triceratops", "ChineseDragon-10kv", "anchor",
                  "blade", "bones", "fandisk", "joint", "knot1", "pinion", "rotor", "spool", "turbine",
                  "mech-holes-shark", "couplingdown", "dragknob", "eight", "handle", "blobby")


def extract_meshes(out: Path, names=CLASSIC_MESHES, archive: Path = CGAL_DATA) -> list[Path]:
    """Extract ``data/meshes/<name>.off`` of ``names`` from CGAL's data archive into
    ``out/cgal/``; returns the paths (existing files are kept)."""
    if not archive.exists():
        raise SystemExit(f"{archive} not found: install CGAL's data with `apt-get install -y libcgal-demo` "
                         "(Debian/Ubuntu), or pass --archive")
    dest = out / "cgal"
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {f"data/meshes/{n}.off": dest / f"{n}.off" for n in names}
    with tarfile.open(archive, "r:gz") as tar:
        found = {m.name: m for m in tar.getmembers() if m.name in wanted and m.isfile()}
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise SystemExit(f"{archive} lacks {', '.join(missing)}")
        for name, member in found.items():
            if not wanted[name].exists():
                wanted[name].write_bytes(tar.extractfile(member).read())
    return sorted(wanted.values())


def mesh_zoo_config(preset: str = "cpu"):
    """The zoo preset's fitting with only what implicit_functions.py reads, every object a test object."""
    from gmn_inr.fields import registry
    from gmn_inr.zoo.build import IMPLICIT, preset_config

    archs = {"radiance": registry.architectures(training=True), **{f: ("HASH",) for f in IMPLICIT}}
    return preset_config(preset, archs=archs, splits=(0.0, 0.0, 1.0), unseen_splits=())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="zoo_cache/cgal", help="the zoo directory (an existing one is resumed)")
    ap.add_argument("--meshes", default=None, help="where the .off files go (default: OUT_meshes)")
    ap.add_argument("--preset", default="cpu", choices=("tiny", "cpu"))
    ap.add_argument("--archive", default=str(CGAL_DATA))
    ap.add_argument("--limit", type=int, default=None, help="only the first N meshes (smoke tests)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    from gmn_inr.bench import log
    from gmn_inr.zoo.build import build_zoo

    out = Path(args.out)
    meshes = Path(args.meshes) if args.meshes else out.with_name(out.name + "_meshes")
    names = CLASSIC_MESHES[:args.limit] if args.limit else CLASSIC_MESHES
    files = extract_meshes(meshes, names, Path(args.archive))
    log(f"{len(files)} meshes in {meshes / 'cgal'}; building the zoo {out}")
    build_zoo(out, config=mesh_zoo_config(args.preset), meshes=str(meshes), workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
