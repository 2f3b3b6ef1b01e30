"""The content-addressed artifact store (docs/kernels.md §3).

Model weights, data sets, tokenizers and calibration records are referenced from a job spec by
their BLAKE3 content hash, ``blake3:<64 hex>``, and resolved in a local store on each side:

* a **file**'s hash is BLAKE3 of its bytes (what ``b3sum FILE`` prints);
* a **directory**'s hash is ``BLAKE3-derive_key("pocv 2026-11 artifact directory v1", manifest)``
  where the manifest lists every regular file below it, sorted by its relative POSIX path, one
  line each: ``<64 hex of the file's hash>  <relative path>\\n`` (``b3sum``'s format). Symbolic
  links, special files and names with a newline are refused; empty directories do not count.

The store is a folder: ``<root>/blake3/<64 hex>`` is the file or directory. Which folder: the
``--artifacts DIR`` option, else the environment variable ``POCV_ARTIFACTS``, else
``$XDG_CACHE_HOME/pocv/artifacts`` (``~/.cache/pocv/artifacts``). Every use checks the hash
first: a missing or altered artifact is refused with :class:`~pocv.errors.ArtifactError`, which
names the hash (the CLI's exit 3). Artifacts never enter states.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from blake3 import blake3

from pocv.errors import ArtifactError, InputError
from pocv.kernels.params import ARTIFACT_RE

ENV_VAR: Final = "POCV_ARTIFACTS"
DIR_CONTEXT: Final = "pocv 2026-11 artifact directory v1"
PREFIX: Final = "blake3:"
_CHUNK: Final = 1 << 20


def default_root() -> Path:
    """``$POCV_ARTIFACTS``, else ``$XDG_CACHE_HOME/pocv/artifacts``, else ``~/.cache/pocv/artifacts``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pocv" / "artifacts"


def _file_digest(path: Path) -> bytes:
    h = blake3()
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InputError(f"{str(path)!r} is not a regular file")
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return bytes(h.digest())


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file below ``root``; refuses links and specials."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                raise InputError(f"artifact directory {str(root)!r} holds a symbolic link {str(base / d)!r}; "
                                 f"copy the target in instead")
        for name in filenames:
            p = base / name
            mode = os.lstat(p).st_mode
            if not stat.S_ISREG(mode):
                raise InputError(f"artifact directory {str(root)!r} holds {str(p)!r}, which is not a regular file")
            rel = p.relative_to(root).as_posix()
            if "\n" in rel or "\r" in rel:
                raise InputError(f"artifact directory {str(root)!r} holds a file name with a line break: {rel!r}")
            yield rel, p


def manifest(root: Path) -> bytes:
    """The directory manifest whose derived hash is the directory's (module docstring)."""
    lines = sorted((rel.encode(), _file_digest(p)) for rel, p in _walk(root))
    return b"".join(d.hex().encode() + b"  " + rel + b"\n" for rel, d in lines)


def hash_path(path: str | os.PathLike[str]) -> str:
    """The reference ``blake3:<64 hex>`` of a file or directory."""
    p = Path(path)
    if p.is_symlink():
        p = p.resolve()
    if p.is_dir():
        return PREFIX + blake3(manifest(p), derive_key_context=DIR_CONTEXT).hexdigest()
    if p.is_file():
        return PREFIX + _file_digest(p).hex()
    raise InputError(f"cannot hash {str(path)!r}: no such file or directory")


def hash_bytes(data: bytes) -> str:
    """The reference of a file artifact whose content is ``data``."""
    return PREFIX + blake3(data).hexdigest()


def _hex(ref: str) -> str:
    if not isinstance(ref, str) or not ARTIFACT_RE.fullmatch(ref):
        raise InputError(f"not an artifact reference: {ref!r:.80}; expected blake3:<64 hex digits>")
    return ref[len(PREFIX):]


class ArtifactStore:
    """A local content-addressed store (:class:`pocv.kernels.params.ArtifactSource`)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        #: refs whose file or directory was hashed in this process: (ref, path) -> (size, mtime_ns, ino)
        self._checked: dict[str, tuple[int, int, int]] = {}

    @classmethod
    def default(cls) -> ArtifactStore:
        """The store ``$POCV_ARTIFACTS`` or the user's cache directory names."""
        return cls(default_root())

    def location(self, ref: str) -> Path:
        return self.root / "blake3" / _hex(ref)

    def refs(self) -> list[str]:
        """The references of everything the store holds, sorted (by name: not hash-checked here;
        :meth:`path` checks)."""
        try:
            names = os.listdir(self.root / "blake3")
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(PREFIX + n for n in names if ARTIFACT_RE.fullmatch(PREFIX + n))

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and bool(ARTIFACT_RE.fullmatch(ref)) and self.location(ref).exists()

    def add(self, path: str | os.PathLike[str]) -> str:
        """Copy the file or directory at ``path`` into the store; return its reference. Adding
        what is already there is a no-op (after checking the stored copy)."""
        src = Path(path)
        ref = hash_path(src)
        dest = self.location(ref)
        if dest.exists():
            try:
                self.path(ref)
                return ref
            except ArtifactError:  # an altered copy: replace it
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".add-", dir=dest.parent))
        try:
            staged = tmp / "a"
            if src.is_dir():
                shutil.copytree(src, staged, symlinks=True)
            else:
                shutil.copyfile(src, staged)
            if hash_path(staged) != ref:  # the source changed while it was copied
                raise InputError(f"{str(src)!r} changed while it was added; add it again")
            os.replace(staged, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ref

    def add_bytes(self, data: bytes) -> str:
        """Store ``data`` as a file artifact; return its reference."""
        ref = hash_bytes(data)
        dest = self.location(ref)
        if dest.is_file() and hash_path(dest) == ref:
            return ref
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".add-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def _missing(self, ref: str) -> ArtifactError:
        return ArtifactError(f"artifact {ref} is not in the artifact store {str(self.root)!r}: add it there "
                             f"(pocv artifact add PATH --artifacts {str(self.root)!r}) or point --artifacts / "
                             f"{ENV_VAR} at a store that holds it")

    def path(self, ref: str) -> Path:
        """The checked path of artifact ``ref`` (its hash recomputed unless this process checked
        the same unchanged file or directory before)."""
        loc = self.location(ref)
        try:
            st = os.lstat(loc)
        except FileNotFoundError:
            raise self._missing(ref) from None
        if stat.S_ISLNK(st.st_mode):
            raise ArtifactError(f"artifact {ref} in {str(self.root)!r} is a symbolic link; the store holds copies")
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if stat.S_ISREG(st.st_mode) and self._checked.get(ref) == key:
            return loc
        got = hash_path(loc)
        if got != ref:
            raise ArtifactError(f"artifact {ref} in {str(self.root)!r} is altered: its content hashes to {got}")
        if stat.S_ISREG(st.st_mode):
            self._checked[ref] = key
        return loc

    def read_bytes(self, ref: str) -> bytes:
        """The bytes of file artifact ``ref``, hashed after reading (what is returned was checked)."""
        loc = self.location(ref)
        try:
            with open(loc, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ArtifactError(f"artifact {ref} is a directory; this use needs a file artifact")
                data = f.read()
        except FileNotFoundError:
            raise self._missing(ref) from None
        except IsADirectoryError:
            raise ArtifactError(f"artifact {ref} is a directory; this use needs a file artifact") from None
        got = hash_bytes(data)
        if got != ref:
            raise ArtifactError(f"artifact {ref} in {str(self.root)!r} is altered: its content hashes to {got}")
        return data


__all__ = ["DIR_CONTEXT", "ENV_VAR", "ArtifactStore", "default_root", "hash_bytes", "hash_path", "manifest"]
