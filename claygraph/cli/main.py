"""`claygraph COMMAND ...`: one entry point; each command lives in its own module with `main(argv) -> int`.

Command modules are imported only when their command runs, so `claygraph inspect` never pays
for what `claygraph bench` imports (and a module that is not written yet breaks nothing else).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from claygraph.errors import ClaygraphError

# command -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("claygraph.cli.inspect", "lower a model file and show its dims, parameters, data and graph"),
    "calibrate": ("claygraph.cli.calibrate", "measure this machine and save the profile ClusterSpec.local reads"),
    "bench": ("claygraph.cli.bench", "run the benchmarks against the peers"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claygraph", description="Split a NumPyro model across devices.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _version() -> str:
    from claygraph import __version__

    return __version__


def error_line(err: BaseException) -> str:
    """An error as one line: the message's lines joined (no traceback)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _parser()
        parser.parse_args(argv)  # prints help/version/usage errors and exits
        parser.print_help(sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        print(f"claygraph {name}: not available in this version", file=sys.stderr)
        return 2
    try:
        code = module.main(rest)
    except ClaygraphError as e:
        print(f"claygraph {name}: error: {error_line(e)}", file=sys.stderr)
        return 2
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
