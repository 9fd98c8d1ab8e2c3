"""``gmn-inr zoo build | info | show`` (``import`` is added by :mod:`gmn_inr.io.cli`).

* ``build --preset {tiny,cpu,paper} --out DIR [--meshes DIR] [--workers N] [--wait]``: build or
  resume a zoo (progress bar per INR with an ETA, then a summary: objects, INRs per family /
  variant, gate pass rates, time, bytes, INRs fitted per second per family, files refitted because
  they were missing or corrupt). One build per folder: a second one says which process holds it
  and exits 2, or waits for it with ``--wait``.
* ``info DIR [--fix]``: counts per family, variant, class, function and split; verifies checksums
  (exit status 1 and the names of the bad files if any is corrupt or missing); ``--fix`` refits
  them (a built zoo: the build resumed with its stored config) and says what it refitted.
* ``show DIR --out PNG``: a few objects (rows) rendered from several families' radiance
  INRs (columns), next to the ground truth, so a person can see that the fits look right.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser, extra: str = ""):
    """Add ``build``, ``info`` and ``show``; returns the sub-parsers so a higher layer adds more."""
    sub = parser.add_subparsers(dest="zoo_command", metavar="{build,info,show%s}" % extra)
    sub.required = True
    b = sub.add_parser("build", help="build (or resume) an INR zoo")
    b.add_argument("--preset", choices=("tiny", "cpu", "paper"), default="tiny")
    b.add_argument("--out", required=True, help="zoo directory (created; an existing zoo is resumed)")
    b.add_argument("--meshes", default=None, help="fit INRs of these meshes (DIR/<class>/*.obj|off|ply|stl) "
                                                  "instead of the procedural shapes")
    b.add_argument("--kicad", nargs="?", const="/usr/share/kicad/3dmodels", default=None, metavar="DIR",
                   help="the real-shape zoo: KiCad's labelled 3D part models (apt-get install -y kicad-packages3d), "
                        "converted into OUT_meshes/<class>/*.ply, radiance and sdf INRs of every architecture")
    b.add_argument("--init", choices=("per-inr", "shared"), default="per-inr",
                   help="per-inr: each INR starts from its own seed; shared: every INR of one architecture starts "
                        "from one initialisation (the inr2vec / nf2vec convention)")
    b.add_argument("--unseen", default=None, help="with --kicad: comma-separated unseen variants to fit (default: all)")
    b.add_argument("--workers", type=int, default=1, help="processes fitting chunks in parallel")
    b.add_argument("--per-class", type=int, default=None, help="override the preset's objects per class (with "
                                                                  "--kicad: models kept per class, evenly spaced)")
    b.add_argument("--steps", type=int, default=None, help="override the preset's fitting steps")
    b.add_argument("--functions", default=None, help="comma-separated implicit functions to fit now (default: all "
                                                     "the preset has; a later build fills in the rest)")
    b.add_argument("--device", default="cpu", help="where INRs are fitted and gated: cpu | cuda[:i] (the INRs do "
                                                   "not depend on it beyond float rounding)")
    b.add_argument("--batch", type=int, default=None, help="objects fitted together (default: the preset's on the "
                                                           "CPU, 256 on a GPU)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--wait", action="store_true", help="if another process is building this zoo, wait for it "
                                                       "(default: say which process and exit 2)")
    i = sub.add_parser("info", help="counts and checksum verification of a zoo")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true", help="print the counts as JSON")
    i.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    i.add_argument("--fix", action="store_true", help="refit missing or corrupt INR files (resumes the build "
                                                      "with the zoo's stored config) and say which")
    i.add_argument("--wait", action="store_true", help="with --fix: wait for a build in progress")
    s = sub.add_parser("show", help="render a grid of objects x families to a PNG")
    s.add_argument("dir")
    s.add_argument("--out", required=True)
    s.add_argument("--objects", type=int, default=4)
    s.add_argument("--size", type=int, default=96, help="pixels per image")
    s.add_argument("--split", default=None)
    return sub


def run(args) -> int:
    if args.zoo_command == "build":
        return _build(args)
    if args.zoo_command == "info":
        return _info(args)
    if args.zoo_command == "show":
        from gmn_inr.atomic import ensure_writable_dir

        from .show import show_zoo
        from pathlib import Path

        ensure_writable_dir(Path(args.out).resolve().parent)
        path = show_zoo(args.dir, args.out, n_objects=args.objects, size=args.size, split=args.split)
        print(f"wrote {path}")
        return 0
    raise SystemExit(f"unknown zoo command {args.zoo_command!r}")


def _build(args) -> int:
    from gmn_inr.cpu import set_up_cpu

    from .build import build_zoo, preset_config

    set_up_cpu()       # 2 threads and an allocator that keeps big buffers (gmn_inr.cpu)
    over = {}
    if args.per_class is not None:
        over["per_class"] = args.per_class
    if args.steps is not None:
        over["fit"] = {"steps": args.steps}
    over["init"] = args.init
    meshes = args.meshes
    if args.kicad:
        from pathlib import Path

        from .kicad import prepare_kicad, real_zoo_config

        meshes = prepare_kicad(args.kicad, Path(args.out).resolve().with_name(Path(args.out).name + "_meshes"),
                               per_class=over.pop("per_class", None))
        cfg = real_zoo_config(args.preset, unseen=args.unseen.split(",") if args.unseen else None, **over)
    else:
        cfg = preset_config(args.preset, **over)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    s = build_zoo(args.out, args.preset, meshes=meshes, workers=args.workers,
                  progress=not args.no_progress, config=cfg, wait=args.wait,
                  functions=args.functions.split(",") if args.functions else None, device=args.device,
                  batch=args.batch)
    print(format_summary(s))
    return 0


def format_summary(s: dict) -> str:
    lines = [f"zoo build: {s['objects']} objects in {s['classes']} classes; {s['inrs_total']} INRs stored "
             f"({s['bytes_total'] / 1e6:.1f} MB), {s['dropped_total']} dropped by the quality gate",
             f"this run: fitted {s['fitted_this_run']}, stored {s['stored_this_run']}, adopted "
             f"{s['adopted_orphans']} orphan files, {s['time_s']:.1f} s"]
    if s.get("refitted"):
        lines.append(f"refitted {len(s['refitted'])} missing or corrupt INR files: " + ", ".join(s["refitted"]))
    if s["per_family"]:
        lines.append(f"{'family':10s} {'fitted':>7s} {'INR/s':>7s} {'pass 1st':>9s} {'pass':>6s}")
        for fam, v in s["per_family"].items():
            lines.append(f"{fam:10s} {v['fitted']:7d} {v['inrs_per_s'] or 0:7.2f} "
                         f"{v['pass_rate_first_try'] or 0:9.1%} {v['pass_rate'] or 0:6.1%}")
    lines.append("stored per variant/function: " + ", ".join(f"{k} {v}" for k, v in s["stored_per_arch_function"].items()))
    return "\n".join(lines)


def _info(args) -> int:
    from .store import open_store

    store = open_store(args.dir)               # ZooError: one line, exit 2 (gmn_inr.cli)
    bad = [] if args.no_verify else store.verify()
    if args.fix and bad:
        return _fix(args, store, bad)
    counts = store.counts()
    m = store.manifest
    dropped = m.get("dropped", {})
    if args.json:
        print(json.dumps({"counts": counts, "dropped": len(dropped), "corrupt": [str(p) for p in bad]}, indent=1))
    else:
        print(f"zoo {store.root}: {len(store)} INRs of {len(store.objects)} objects, {len(store.classes)} classes, "
              f"{len(dropped)} dropped by the quality gate")
        names = {"family": "per family", "arch": "per variant", "class_name": "per class",
                 "function": "per function", "split": "INRs per split", "objects_per_split": "objects per split"}
        for k, title in names.items():
            print(f"  {title}: " + ", ".join(f"{a} {b}" for a, b in counts[k].items()))
        fam_fit = {}
        for e in list(m.get("inrs", {}).values()) + list(dropped.values()):
            f = fam_fit.setdefault(e.get("family", "?"), [0, 0])
            f[0] += 1
            gate = e.get("gate") if isinstance(e.get("gate"), dict) else {}
            f[1] += bool(gate.get("passed", True))
        print("  gate pass rate per family: " + ", ".join(f"{k} {v[1] / v[0]:.1%} of {v[0]}"
                                                        for k, v in sorted(fam_fit.items())))
        if not args.no_verify:
            print(f"  checksums: {'all ' + str(len(store)) + ' ok' if not bad else str(len(bad)) + ' BAD'}")
    for p in bad:
        print(f"corrupt or missing: {p}", file=sys.stderr)
    return 1 if bad else 0


def _fix(args, store, bad) -> int:
    """``zoo info --fix``: a built zoo is resumed with its stored config (the build re-verifies every
    file and refits the missing or corrupt ones: the same bytes, INRs being seeded by their keys); a
    store of imported INRs cannot refit, so their entries are removed and named."""
    from .build import build_zoo, config_from_json
    from .writer import ZooWriter, zoo_lock

    conf = store.manifest.get("config")
    if isinstance(conf, dict) and "fit" in conf:
        try:
            cfg = config_from_json(conf)
            if conf.get("meshes") and cfg.name.endswith("+meshes"):    # build_zoo adds the suffix again
                import dataclasses

                cfg = dataclasses.replace(cfg, name=cfg.name[:-len("+meshes")])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{store.root / 'manifest.json'}: its config cannot be rebuilt ({exc}); "
                             f"rebuild the zoo with `gmn-inr zoo build`") from None
        s = build_zoo(store.root, config=cfg, meshes=conf.get("meshes"), progress=False, wait=args.wait, log=print)
        print(f"refitted {len(s['refitted'])} missing or corrupt INR files of {store.root}: "
              + ", ".join(s["refitted"]))
        left = open_store_verify(store.root)
        for p in left:
            print(f"still corrupt or missing: {p}", file=sys.stderr)
        return 1 if left else 0
    with zoo_lock(store.root, wait=args.wait):
        w = ZooWriter(store.root)
        gone = w.check_files()
        w.compact()
    print(f"removed {len(gone)} missing or corrupt entries of {store.root} (imported INRs cannot be refitted; "
          f"import them again): " + ", ".join(gone))
    return 0


def open_store_verify(root) -> list:
    from .store import open_store

    return open_store(root).verify()
