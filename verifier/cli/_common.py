"""What every ``pocv`` command shares: the one exception -> exit code table, output (stdout,
``-o FILE``, a reader that went away), keypair resolution (Solana CLI conventions), progress on
stderr and logging setup.

Kept light: importing this module loads no torch, numba, solders or solana (``pocv --help``,
``pocv --version`` and ``pocv keygen`` stay fast); heavier pocv modules are imported inside the
functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TextIO

from pocv.errors import (
    ChainError,
    EvidenceError,
    InputError,
    PocvError,
    StorageError,
    TransientError,
    UnsignedResponse,
    VerificationFailed,
)

if TYPE_CHECKING:  # typing only: pocv.keys loads cryptography
    from pocv.keys import Keypair

PROG: Final = "pocv"

# -- exit codes: the one table -------------------------------------------------------------

EXIT_OK: Final = 0
EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2
EXIT_INPUT: Final = 3
EXIT_RETRY: Final = 4
EXIT_INTERNAL: Final = 70
EXIT_INTERRUPTED: Final = 130

#: (exception class, exit code), most specific first: the first class an exception is an instance
#: of decides. Anything not listed is a bug in pocv: exit 70.
EXIT_CODES: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (VerificationFailed, EXIT_FAIL),  # the evidence was checked and rejected (a FAIL verdict)
    (UnsignedResponse, EXIT_RETRY),  # a FAIL on a bundle the worker did not sign: fetch it again
    (StorageError, EXIT_INPUT),  # a local trace, ledger or output that cannot be used: fix it, retrying won't help
    (ChainError, EXIT_RETRY),  # the chain or RPC node refused, failed or timed out
    (TransientError, EXIT_RETRY),  # any other I/O or network trouble that may pass
    (EvidenceError, EXIT_INPUT),  # a record that does not parse or verify, given as input (not a response)
    (InputError, EXIT_INPUT),  # a missing file, a bad argument, the wrong kind of record
    (PocvError, EXIT_INPUT),
    (KeyboardInterrupt, EXIT_INTERRUPTED),
)

#: the table as people read it (pocv --help, docs/cli.md)
EXIT_TABLE: Final = (
    (EXIT_OK, "success; the verdict is PASS"),
    (EXIT_FAIL, "FAIL: the verdict is FAIL (VerificationFailed, a FAIL verdict settled or found)"),
    (EXIT_USAGE, "usage error: unknown command or option, missing or malformed argument"),
    (EXIT_INPUT, "bad or missing input: a file that does not exist, is not a regular file or does not "
                 "parse, the wrong kind of record, a signature that does not verify, an unusable trace "
                 "or output path (InputError, EvidenceError, StorageError); this side cannot run or judge the "
                 "job as installed: another kernel provider, a missing or altered artifact (named by its hash), "
                 "no calibration record (SetupError: ProviderMismatch, ArtifactError, NotCalibrated)"),
    (EXIT_RETRY, "chain, network or transfer error; trying again may help (ChainError, TransientError; a FAIL "
                 "on a response bundle the worker did not sign: UnsignedResponse, fetch it again)"),
    (EXIT_INTERNAL, "internal error: a bug in pocv (one line; POCV_DEBUG=1 or -vv shows the traceback)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc``: the first matching row of :data:`EXIT_CODES`, else 70."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_INTERNAL


def wrap(text: str, indent: str = "") -> str:
    """``text`` wrapped for a help screen (descriptions keep their own line breaks)."""
    import textwrap  # help screens only

    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent)


def exit_epilog() -> str:
    import textwrap  # help screens only

    rows = "\n".join(textwrap.fill(text, width=100, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
                     for code, text in EXIT_TABLE)
    return f"exit codes:\n{rows}"


# -- the parser ------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line and exit 2 (raised as SystemExit, caught by main)."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs keep their line breaks; option help is wrapped."""


#: the default of --output by kind of command (docs/cli.md, "Output")
RECORD: Final = "json"  # the result is a pocv record or a protocol step another program reads
REPORT: Final = "text"  # the result is a report for a person


def add_output_option(p: argparse.ArgumentParser, default: str) -> None:
    kind = "it produces records" if default == RECORD else "it reports to a person"
    p.add_argument("--output", choices=("json", "text"), default=default,
                   help=f"json for programs, text for people (default {default}: {kind})")


def add_verbosity(p: argparse.ArgumentParser, *, short_q: bool = True) -> None:
    """-v/--verbose (repeatable) and -q/--quiet on a subcommand (also accepted before it)."""
    p.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=argparse.SUPPRESS,
                   help="more log output on stderr (-v info, -vv debug and tracebacks)")
    flags = ("-q", "--quiet") if short_q else ("--quiet",)
    p.add_argument(*flags, dest="sub_quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress and only errors on stderr")


def verbosity(args: argparse.Namespace) -> int:
    """-1 quiet, 0 default, 1 -v, 2 -vv or more."""
    if getattr(args, "quiet", False) or getattr(args, "sub_quiet", False):
        return -1
    return int(getattr(args, "verbose", 0) or 0) + int(getattr(args, "sub_verbose", 0) or 0)


def debug_wanted(args: argparse.Namespace | None) -> bool:
    return bool(os.environ.get("POCV_DEBUG")) or (args is not None and verbosity(args) >= 2)


# -- logging -------------------------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (tests capture it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


_handler: logging.Handler | None = None


def setup_logging(level: int) -> logging.Logger:
    """The ``pocv`` logger (library code logs under ``pocv.*``) on stderr at ``level`` (-1..2)."""
    global _handler
    logger = logging.getLogger(PROG)
    if _handler is None:
        _handler = _StderrHandler()
        _handler.setFormatter(logging.Formatter("pocv: %(levelname)s: %(name)s: %(message)s"))
        logger.addHandler(_handler)
        logger.propagate = False
    logger.setLevel({-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(level, logging.DEBUG))
    return logger


# -- output ----------------------------------------------------------------------------------------


def stdout_gone() -> None:
    """The reader of stdout went away: send the rest of our output to /dev/null, as Python's docs
    recommend (a flush at exit would otherwise raise again and change the exit code)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class StdoutClosed(Exception):
    """Internal: writing to stdout failed because its reader is gone."""


def write_stdout(text: str) -> None:
    """``text`` (and a newline) on stdout. A reader that went away is not an error: the exit code
    the command decided stands."""
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()


def is_stdout(path: str | None) -> bool:
    return path is None or path == "-"


def output_target(path: str | None, what: str) -> Path | None:
    """Where ``-o`` writes: None for stdout (no -o, or -o -), else the checked path
    (``pocv.store.output_path``: a new path or a regular file; a symlink is followed)."""
    if is_stdout(path):
        return None
    from pocv.store import output_path  # the output rules, with the record loaders

    return output_path(path, what=what)  # type: ignore[arg-type]


def emit_record(text: str, target: Path | None) -> None:
    """A record to ``target`` atomically, or to stdout when ``target`` is None."""
    if target is None:
        write_stdout(text)
        return
    from pocv.store import atomic_write  # only when a file is written

    atomic_write(target, (text.rstrip("\n") + "\n").encode())


@contextlib.contextmanager
def binary_output(target: Path | None) -> Iterator[BinaryIO]:
    """A binary file to write a result through: stdout's buffer (``-o -``) or an atomic writer."""
    if target is None:
        out = sys.stdout.buffer
        try:
            sys.stdout.flush()
            yield out
            out.flush()
        except BrokenPipeError:
            stdout_gone()
        return
    from pocv.store import atomic_writer  # only when a file is written

    with atomic_writer(target) as f:
        yield f


#: the longest message line pocv prints: a hostile value (a 60 KB spec field) never becomes a 60 KB line
MAX_MESSAGE_CHARS: Final = 500


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line (newlines and control characters shown escaped), cut to ``limit``."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return flat if len(flat) <= limit else flat[: limit - 25] + f"... ({len(flat) - limit + 25} more characters)"


def note(text: str) -> None:
    """A line for people on stderr (not logging: shown unless stderr is gone)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text if text.endswith("\n") else text + "\n")


# -- keys: Solana CLI conventions ------------------------------------------------------------------

SOLANA_CONFIG: Final = Path(".config") / "solana" / "cli" / "config.yml"
SOLANA_DEFAULT_KEYPAIR: Final = Path(".config") / "solana" / "id.json"
_MAX_CONFIG_BYTES: Final = 64 * 1024


def parse_solana_config(text: str) -> dict[str, str]:
    """The top-level ``key: value`` pairs of a Solana CLI config.yml (a flat YAML file that
    solana writes itself). Quoted values are unquoted, comments and nested lines are skipped."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        if not raw or raw[0] in " \t#-" or ":" not in raw:
            continue
        key, _, value = raw.partition(":")
        value = value.strip()
        if value[:1] in ("'", '"'):
            q = value[0]
            end = value.find(q, 1)
            value = value[1:end] if end > 0 else value[1:]
        else:
            value = value.split(" #", 1)[0].strip()
        if value in ("~", "null"):
            value = ""
        out[key.strip()] = value
    return out


def solana_config() -> dict[str, str]:
    """``~/.config/solana/cli/config.yml`` as key/value pairs ({} when absent or unreadable)."""
    path = Path.home() / SOLANA_CONFIG
    try:
        if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
            return {}
        return parse_solana_config(path.read_text(errors="replace"))
    except OSError:
        return {}


def default_keypair_path() -> Path:
    """The Solana CLI's default keypair: config.yml's keypair_path, else ~/.config/solana/id.json."""
    configured = solana_config().get("keypair_path")
    if configured:
        return Path(os.path.expanduser(configured))
    return Path.home() / SOLANA_DEFAULT_KEYPAIR


def keypair_help(role: str) -> str:
    return (f"{role} keypair file, a Solana CLI keypair (default: keypair_path in "
            f"~/.config/solana/cli/config.yml, else ~/.config/solana/id.json)")


def resolve_keypair(path: str | None, role: str) -> Keypair:
    """The keypair ``-k`` names, or the Solana CLI's default one; InputError when there is none."""
    from pocv.store import load_keypair  # cryptography loads with the key

    if path is None:
        default = default_keypair_path()
        if not default.exists():
            raise InputError(f"no {role} key: pass -k/--keypair FILE (a Solana CLI keypair; pocv keygen -o FILE "
                             f"makes one); the default {str(default)!r} does not exist")
        return load_keypair(default)
    p = Path(os.path.expanduser(path))
    if not p.exists() and not p.is_symlink():
        raise InputError(f"cannot read {role} keypair file {path!r}: it does not exist (pocv keygen -o FILE "
                         f"makes one)")
    return load_keypair(p)


# -- artifacts: the local content-addressed store (pocv.artifacts) -------------------------------------

#: the environment variable that names the artifact store: pocv.artifacts.ENV_VAR (not imported here:
#: pocv.artifacts loads the kernel registry; tests/test_cli.py checks that the two agree)
ARTIFACTS_ENV: Final = "POCV_ARTIFACTS"
#: where the store is when neither --artifacts nor the variable says (pocv.artifacts.default_root)
ARTIFACTS_DEFAULT: Final = "$XDG_CACHE_HOME/pocv/artifacts, i.e. ~/.cache/pocv/artifacts"


def add_artifacts_option(p: argparse.ArgumentParser, role: str | None = None, *, what: str | None = None) -> None:
    """``--artifacts DIR``: the local artifact store in which ``role`` resolves a job's artifacts
    (``role`` None: ``what`` the store is for, else the store a pocv artifact command works on)."""
    default = f"default: ${ARTIFACTS_ENV}, else {ARTIFACTS_DEFAULT}"
    if role is None:
        text = f"the artifact store{' ' + what if what else ''} ({default})"
    else:
        text = (f"artifact store in which {role} resolves the artifacts the job references (data sets, weights, "
                f"calibration records), each hash-checked before use; a missing or altered one is refused with "
                f"exit 3 naming its hash ({default})")
    p.add_argument("--artifacts", metavar="DIR", default=None, help=text)


def artifact_store(args: argparse.Namespace) -> Any:
    """The :class:`pocv.artifacts.ArtifactStore` that ``--artifacts`` names, else the default one
    (``$POCV_ARTIFACTS``, else under the user's cache directory)."""
    from pocv.artifacts import ArtifactStore  # the store loads blake3 and the kernel registry

    where = getattr(args, "artifacts", None)
    if where is None:
        return ArtifactStore.default()
    if not where.strip():
        raise InputError("--artifacts needs a directory, got an empty string")
    root = Path(os.path.expanduser(where))
    if root.exists() and not root.is_dir():
        raise InputError(f"--artifacts {where!r} is not a directory")
    return ArtifactStore(root)


# -- Solana RPC URLs ----------------------------------------------------------------------------------

#: -u/--url monikers, as the Solana CLI takes them (-ul, -ud, -ut, -um)
URL_MONIKERS: Final = {
    "l": "http://127.0.0.1:8899", "localhost": "http://127.0.0.1:8899",
    "d": "https://api.devnet.solana.com", "devnet": "https://api.devnet.solana.com",
    "t": "https://api.testnet.solana.com", "testnet": "https://api.testnet.solana.com",
    "m": "https://api.mainnet-beta.solana.com", "mainnet-beta": "https://api.mainnet-beta.solana.com",
}


def resolve_url(text: str) -> str:
    """A JSON-RPC URL from ``-u``: a moniker (l, d, t, m or their long names) or http(s)://..."""
    t = text.strip()
    if t in URL_MONIKERS:
        return URL_MONIKERS[t]
    if t.startswith(("http://", "https://")):
        return t
    raise InputError(f"-u/--url must be http(s)://... or one of l/localhost, d/devnet, t/testnet, "
                     f"m/mainnet-beta, got {text[:80]!r}")


def parse_hash(text: str, what: str) -> bytes:
    """32 bytes given on the command line as 64 hex digits or base58."""
    from pocv._fields import parse_hash as _parse_hash  # blake3 and base58 load with it

    return _parse_hash(text, what)


# -- progress -------------------------------------------------------------------------------------------


class ProgressLine:
    """A progress line on stderr: rewritten in place on a terminal, at most a line per 10% otherwise.
    Silent when ``quiet``."""

    def __init__(self, label: str, *, unit: str = "step", quiet: bool = False, stream: TextIO | None = None) -> None:
        self.label = label
        self.unit = unit
        self._stream = stream
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self._last_decile = -1

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total <= 0:
            return
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        dt = time.perf_counter() - self.t0
        rate = done / dt if dt > 0 else 0.0
        speed = f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"  # a slow calibration trial is not "0 trials/s"
        msg = f"{self.label}: {self.unit} {done}/{total} ({100 * done / total:.0f}%, {speed} {self.unit}s/s)"
        try:
            if tty:
                self.stream.write("\r" + msg + ("\n" if done >= total else ""))
            else:
                decile = 10 * done // total
                if decile == self._last_decile:
                    return
                self._last_decile = decile
                self.stream.write(msg + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.quiet = True  # stderr is gone: stop reporting, keep working


def progress_for(args: argparse.Namespace, label: str, unit: str = "step") -> Callable[[int, int], None]:
    return ProgressLine(label, unit=unit, quiet=verbosity(args) < 0)
