"""Files: atomic writes, inputs that must be regular files, and the loaders of records and
keypair files (docs/architecture.md §3.5).

Every path pocv reads must be a regular file, checked on the open descriptor (a FIFO would
block, a device never ends); every file pocv writes goes through :func:`atomic_writer` (a
temporary file in the same directory, renamed into place), so a reader sees the old file or the
new one, never part of one. :func:`output_path` decides where an output may be written.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from blake3 import blake3

from pocv.bundle import Expected, Response
from pocv.errors import InputError, LimitExceeded, StorageError, WrongRecordError
from pocv.jobs import JobSpec
from pocv.keys import Keypair, Signer, as_keypair
from pocv.limits import MAX_RECORD_BYTES, MAX_SPEC_BYTES
from pocv.records import Challenge, Commitment, Verdict

#: a keypair file is a JSON array of 64 numbers: a few hundred bytes
MAX_KEYPAIR_BYTES: Final = 4096


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_input(path: str | os.PathLike[str], *, what: str) -> BinaryIO:
    """Open ``path`` for reading; it must be a regular file (symlinks to one are followed).

    The file is opened without blocking and checked on its descriptor, so a FIFO or a device
    is refused at once instead of hanging, and a file swapped after a check cannot slip by.
    """
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise InputError(f"{what} {p!r} does not exist") from e
    except IsADirectoryError as e:
        raise InputError(f"{what} {p!r} is a directory, expected a regular file") from e
    except OSError as e:
        raise InputError(f"cannot read {what} {p!r}: {e.strerror}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{what} {p!r} is {_kind(mode)}, expected a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def output_path(path: str | os.PathLike[str], *, what: str = "output") -> Path:
    """Where an output named ``path`` is written: a new path, or an existing regular file.

    A symlink is followed and its target is replaced (atomically), never the link itself; a
    directory, FIFO, device or socket is refused with InputError, so ``-o /dev/null`` or a pipe
    is never replaced by a regular file.
    """
    p = Path(path)
    try:
        target = p.resolve(strict=False)
        st = os.stat(target)
    except FileNotFoundError:
        if not target.parent.is_dir():
            raise InputError(f"{what} {str(p)!r}: directory {str(target.parent)!r} does not exist") from None
        return target
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
        raise InputError(f"{what} {str(p)!r} cannot be written: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {str(p)!r} is {_kind(st.st_mode)}; pocv writes only regular files "
                         f"(use -o - for standard output)")
    return target


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A file to write ``path`` through: a temporary file in the same directory, renamed into
    place when the block ends without an exception (and removed when it does not), so a reader
    never sees part of a file. ``durable`` fsyncs the file and its directory."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise StorageError(f"cannot write {str(path)!r}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot write {str(path)!r}: {e.strerror}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode=mode, durable=durable) as f:
        f.write(data)


def read_file(path: str | os.PathLike[str], *, limit: int, what: str) -> bytes:
    """Read a whole input file, refusing one larger than ``limit`` before reading it."""
    with open_input(path, what=what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise LimitExceeded(f"{what} {str(path)!r} is {size} bytes; the limit is {limit}")
        try:
            return f.read(size)
        except OSError as e:
            raise InputError(f"cannot read {what} {str(path)!r}: {e.strerror}") from e


# -- records and keys --------------------------------------------------------------------------


#: the ``type`` field of each pocv JSON record, and what a job spec looks like
_RECORD_TYPES: Final = ("commitment", "challenge", "verdict", "dispute-session", "dispute-query",
                        "dispute-opening", "dispute-outcome", "equivocation")


def identify(data: bytes) -> str | None:
    """Which pocv record ``data`` is ("commitment", "challenge", "verdict", "job spec", ...),
    or None when it is not recognisably one. Reads at most the bytes given; never raises."""
    head = data[:MAX_RECORD_BYTES].lstrip()
    if not head.startswith(b"{"):
        return None
    try:
        d = json.loads(head)
    except (ValueError, RecursionError):
        return None
    if not isinstance(d, dict):
        return None
    t = d.get("type")
    if isinstance(t, str) and t in _RECORD_TYPES:
        return t
    if {"kernel", "steps", "seed"} <= set(d):
        return "job spec"
    return None


def _load_record(path: str | os.PathLike[str], what: str, limit: int) -> bytes:
    data = read_file(path, limit=limit, what=what)
    kind = identify(data)
    if kind is not None and kind != what:
        raise WrongRecordError(f"{str(path)!r} is a {kind}, expected a {what}")
    return data


def load_commitment(path: str | os.PathLike[str]) -> Commitment:
    return Commitment.from_json(_load_record(path, "commitment", MAX_RECORD_BYTES))


def load_challenge(path: str | os.PathLike[str]) -> Challenge:
    return Challenge.from_json(_load_record(path, "challenge", MAX_RECORD_BYTES))


def load_verdict(path: str | os.PathLike[str]) -> Verdict:
    return Verdict.from_json(_load_record(path, "verdict", MAX_RECORD_BYTES))


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    return JobSpec.from_json(_load_record(path, "job spec", MAX_SPEC_BYTES))


def load_response(path: str | os.PathLike[str], *, expect: Expected | None = None) -> Response:
    """Read a response bundle file, streamed (see :meth:`Response.read_from`)."""
    with open_input(path, what="response bundle") as f:
        return Response.read_from(f, os.fstat(f.fileno()).st_size, expect=expect)


def save_response(response: Response, path: str | os.PathLike[str]) -> None:
    """Stream ``response`` to ``path`` atomically (no copy of the bundle in memory)."""
    with atomic_writer(output_path(path, what="response bundle")) as f:
        response.write_to(f)


class ChallengeFile:
    """A verifier's challenge book on disk (``pocv.check.ChallengeBook``): one small file per
    commitment holding the digest of the challenge issued last, written atomically, so
    ``pocv challenge`` and a later ``pocv verify`` agree on which challenge is current."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, job_id: bytes, root: bytes) -> Path:
        return self.directory / f"{job_id.hex()}-{root.hex()}.current"

    def issue(self, challenge: Challenge) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise StorageError(f"cannot create the challenge book {str(self.directory)!r}: {e.strerror}") from e
        digest = blake3(challenge.signing_bytes()).hexdigest()
        atomic_write(self._path(challenge.job_id, challenge.root), digest.encode(), mode=0o600)

    def current(self, job_id: bytes, root: bytes) -> bytes | None:
        path = self._path(job_id, root)
        if not path.exists():
            return None
        text = read_file(path, limit=256, what="challenge book entry").decode(errors="replace").strip()
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise StorageError(f"challenge book entry {str(path)!r} is corrupt") from None


def load_keypair(path: str | os.PathLike[str]) -> Keypair:
    """Load a Solana CLI keypair file (a JSON array of the 64 bytes ``seed || public key``)."""
    data = read_file(path, limit=MAX_KEYPAIR_BYTES, what="keypair file")
    try:
        return Keypair.from_solana_json(data)
    except InputError as e:
        why = str(e).removeprefix("not a Solana keypair file: ")
        raise InputError(f"{str(path)!r} is not a Solana keypair file: {why}") from e


def save_keypair(key: Signer, path: str | os.PathLike[str]) -> None:
    """Write ``key`` as a Solana CLI keypair file, atomically, readable by the owner only."""
    atomic_write(output_path(path, what="keypair file"), as_keypair(key).to_solana_json().encode(), mode=0o600)


__all__ = ["ChallengeFile", "atomic_write", "atomic_writer", "identify", "load_challenge", "load_commitment",
           "load_keypair", "load_response", "load_spec", "load_verdict", "open_input", "output_path", "read_file",
           "save_keypair", "save_response"]
