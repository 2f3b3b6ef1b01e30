"""The ``pocv`` command: one parser, every subcommand registered here, one exit-code table.

Results go to stdout (``--output json|text``; ``-o FILE`` writes them atomically to a file),
progress, notes and errors to stderr. The exit codes are in :data:`pocv.cli._common.EXIT_TABLE`
(``pocv --help`` prints them; docs/cli.md explains them). Every error pocv raises on purpose is
one line on stderr; any other exception is a bug (exit 70; ``POCV_DEBUG=1`` or ``-vv`` shows the
traceback).

This module and :mod:`pocv.cli._common` import nothing heavy: each command's parser is built
from light modules, and a command's handler imports torch, numba or solders only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Final

from pocv.cli._common import (
    EXIT_INTERNAL,
    EXIT_USAGE,
    PROG,
    HelpFormatter,
    Parser,
    debug_wanted,
    exit_code,
    exit_epilog,
    one_line,
    setup_logging,
    stdout_gone,
    verbosity,
    wrap,
)

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]

#: every subcommand, in the order of ``pocv --help``: (module under pocv.cli, function that adds its
#: parsers). Each module is light to import; its handlers import what they need when they run.
COMMANDS: Final = (
    ("pocv.cli._core", "add_core_parsers"),  # run, challenge, respond, verify, keygen, kernels, job, calibrate, demo
    ("pocv.cli._artifact", "add_artifact_parser"),
    ("pocv.cli._dispute", "add_dispute_parser"),
    ("pocv.cli._net", "add_net_parsers"),  # serve
    ("pocv.cli._market", "add_market_parser"),
    ("pocv.cli._bench", "add_bench_parser"),
)


def _version() -> str:
    try:
        from importlib.metadata import version  # only --version needs it

        return version("pocv")
    except Exception:  # not installed as a distribution (a bare source tree)
        from pocv import __version__  # a source tree without distribution metadata

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        formatter_class=HelpFormatter,
        description="pocv: proof-of-compute verification. A worker runs a job and commits to every state "
                    "with a BLAKE3 Merkle root; a verifier challenges random steps with a beacon the worker "
                    "could not predict, and recomputes them.",
        epilog=exit_epilog() + "\n\n" + wrap(
               "output: commands whose result is a pocv record (run, challenge, respond, verify, keygen, job, "
               "dispute) print JSON by default; commands that report to a person (kernels, calibrate, demo, "
               "market, bench) and artifact (its text is the bare reference, for REF=$(pocv artifact add PATH)) "
               "print text. --output json|text changes it on any command. -o FILE writes the "
               "result atomically to FILE (a regular file or a new path; a symlink is followed to its "
               "target); -o - is stdout.") + "\n\n"
               "typical flow:\n"
               "  pocv keygen -o worker.json\n"
               "  pocv job gemm-int8 --steps 200 --param n=256 -o job.json\n"
               "  pocv run job.json --trace T -k worker.json -o commitment.json\n"
               "  pocv challenge commitment.json --beacon random -k verifier.json -o challenge.json\n"
               "  pocv respond T challenge.json -k worker.json -o response.pocv\n"
               "  pocv verify commitment.json challenge.json response.pocv -k verifier.json\n\n"
               "full reference: docs/cli.md",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}",
                        help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-v info, -vv debug and tracebacks)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module, function in COMMANDS:
        getattr(importlib.import_module(module), function)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pocv`` with ``argv`` (default: sys.argv[1:]); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    setup_logging(verbosity(args))
    handler: Handler | None = getattr(args, "_handler", None)
    if handler is None:  # no command, or a command group without its subcommand
        (getattr(args, "_group_parser", None) or parser).print_help(sys.stderr)
        return EXIT_USAGE
    name = " ".join(filter(None, (PROG, args.command, getattr(args, "_subcommand", None))))
    try:
        return handler(args)
    except SystemExit as e:  # a handler's own argument check (argparse.error): usage
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except BaseException as e:
        code = exit_code(e)
        debug = debug_wanted(args)
        if debug and code == EXIT_INTERNAL:
            traceback.print_exc(file=sys.stderr)
        if isinstance(e, BrokenPipeError):  # a reader that went away, outside write_stdout
            stdout_gone()
        if isinstance(e, KeyboardInterrupt):
            sys.stderr.write(f"{name}: interrupted\n")
        elif code == EXIT_INTERNAL:
            hint = "" if debug else "; POCV_DEBUG=1 or -vv shows the traceback"
            sys.stderr.write(f"{name}: internal error: {type(e).__name__}: {one_line(str(e), 300)} "
                             f"(a bug in pocv{hint})\n")
        else:
            if debug:
                traceback.print_exc(file=sys.stderr)
            sys.stderr.write(f"{name}: error: {one_line(str(e))}\n")
        return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
