"""``gmn-inr zoo``: the zoo's own commands (:mod:`gmn_inr.zoo.cli`) and ``import``, which brings
a folder of INR files into a store and so needs this package's readers."""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from gmn_inr.atomic import ensure_writable_dir
from gmn_inr.zoo import cli as zoo_cli
from gmn_inr.zoo.store import ZooError
from gmn_inr.zoo.writer import zoo_lock

from .common import FormatError
from .importer import import_folder
from .sources import add_reader_arguments, reader_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = zoo_cli.add_arguments(parser, extra=",import")
    m = sub.add_parser("import", help="bring a folder of INR files (labels from sub-folders or a CSV) into a store")
    m.add_argument("src", help="folder of INR files: SRC/<class>/<file> (or any layout with --labels)")
    m.add_argument("--out", required=True, help="store directory (created; an earlier import is extended)")
    m.add_argument("--labels", default=None, help="CSV with columns path, class [, object, split, function]")
    m.add_argument("--function", default="radiance", help="what the INRs output: radiance | sdf | udf | occupancy")
    m.add_argument("--skip-unreadable", action="store_true", help="list (with the reason) and skip files no reader reads")
    add_reader_arguments(m)


def run(args) -> int:
    if args.zoo_command == "import":
        return _import(args)
    return zoo_cli.run(args)


@contextmanager
def _locked(out):
    """The store folder, created and locked only once every file has been read."""
    ensure_writable_dir(out)
    with zoo_lock(out):
        yield


def _import(args) -> int:
    try:
        s = import_folder(args.src, args.out, labels=args.labels, function=args.function,
                          skip_unreadable=args.skip_unreadable, options=reader_from_args(args), lock=_locked(args.out))
    except (FormatError, ZooError, OSError) as exc:
        print(f"gmn-inr zoo import: error: {exc}", file=sys.stderr)
        return 2
    for line in s["unreadable"]:
        print(f"skipped (unreadable): {line}", file=sys.stderr)
    print(f"imported {s['imported']} INRs ({s['skipped']} already there, {len(s['unreadable'])} unreadable) of "
          f"{s['objects']} objects in {s['classes']} classes into {args.out}")
    return 0
