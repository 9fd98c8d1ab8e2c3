"""``gmn-inr``: one command, subcommands provided by the modules that own them.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``;
they are imported only when chosen, so ``gmn-inr --help`` stays fast (torch and
torch_geometric cost seconds to import). ``gmn-inr --plugin FILE.py|MODULE COMMAND ...``
(repeatable) first imports a file or module that registers architecture families
(:func:`gmn_inr.fields.register_family`), so every command knows them.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

#: subcommand -> (module, help)
SUBCOMMANDS = {
    "demo": ("gmn_inr.demo", "convert one INR of each family and print the parameter graphs' sizes"),
    "zoo": ("gmn_inr.io.cli", "build, inspect and show an INR zoo; import INR files into a store"),
    "train": ("gmn_inr.training.cli", "train the graph meta-network encoder"),
    "embed": ("gmn_inr.embedder", "embed every INR of a store with a trained encoder"),
    "search": ("gmn_inr.search", "build an on-disk nearest-neighbour index of a store; query it with INR files or keys"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = []
    while argv and (argv[0] == "--plugin" or argv[0].startswith("--plugin=")):
        if argv[0] == "--plugin":
            if len(argv) < 2:
                print("gmn-inr: error: --plugin needs a file or module", file=sys.stderr)
                return 2
            plugins.append(argv[1])
            argv = argv[2:]
        else:
            plugins.append(argv[0].split("=", 1)[1])
            argv = argv[1:]
    parser = argparse.ArgumentParser(prog="gmn-inr", description="Embeddings of implicit neural representations of any architecture.",
                                     epilog="--plugin FILE.py|MODULE (before COMMAND, repeatable): import a file or "
                                            "module that registers architecture families first")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    if plugins:
        from gmn_inr.fields import load_plugins

        load_plugins(plugins)
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub_parser = argparse.ArgumentParser(prog=f"gmn-inr {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except _user_errors() as exc:
        # every failure a user can cause (a missing, corrupt or foreign file, a bad value, a folder
        # that cannot be written, a zoo another process is building): one line, exit 2.
        # GMN_INR_TRACEBACK=1 shows the traceback instead (for developers).
        if os.environ.get("GMN_INR_TRACEBACK"):
            raise
        print(f"gmn-inr {name}: error: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message (newlines folded), prefixed by its type where the
    message alone would not say what went wrong."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in msg:
        msg = f"{msg}: {exc.filename}"
    if isinstance(exc, (KeyError, OSError)) and not isinstance(exc, _named_oserrors()) or not msg:
        msg = f"{type(exc).__name__}: {msg}"
    return msg


def _named_oserrors() -> tuple:
    from gmn_inr.atomic import NotWritableError

    return (NotWritableError,)


def _user_errors() -> tuple:
    """The exception types a CLI command reports as one line (imported lazily: they live in the
    modules the command already loaded)."""
    from concurrent.futures.process import BrokenProcessPool

    from gmn_inr.zoo.store import ZooError

    # ImportError: an optional dependency the command needs (its message says which extra installs it)
    errs = [ValueError, OSError, ImportError, ZooError, BrokenProcessPool]     # SpecError, CheckpointError, GraphError,
    for mod, name in (("gmn_inr.search", "SearchError"),          # FormatError are ValueErrors
                      ("graphs.registry", "UnregisteredArchitectureError")):
        m = sys.modules.get(mod)
        if m is not None:
            errs.append(getattr(m, name))
    return tuple(errs)


if __name__ == "__main__":
    raise SystemExit(main())
