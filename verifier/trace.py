"""The prover's trace directory (docs/protocol.md §14).

Layout (format 1)::

    TRACE/
      trace.json          {"format": 1, "spec": {...}, "checkpoint_every": c}
      leaves.bin          32-byte state digests of s_0, s_1, ... appended in order
      checkpoints/        canonical bytes of s_j for j = 0, c, 2c, ... ("{j:012d}.state")
      commitment.json     the signed commitment, once the run is complete

Crash safety: every file other than ``leaves.bin`` is written to a temporary file and renamed
into place, so a reader sees the old file or the new one, never part of one. ``leaves.bin`` is
only appended; before checkpoint j is written the leaves up to j are written out. On resume
the store keeps the highest checkpoint whose digest matches its leaf and truncates
``leaves.bin`` after it (a torn append or a stale tail is dropped), so a prover killed at any
point resumes from a consistent state and reaches the same root.

Durability: during a run nothing is fsynced (a killed process loses nothing the page cache
holds, and after a power loss the digest check above discards whatever did not reach the
disk). ``sync()`` fsyncs the leaves before the commitment is signed, and the commitment itself
is fsynced, so a signed root always has its leaves on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Final

from pocv.encoding import digest_encoded
from pocv.errors import EvidenceError, InputError, StorageError
from pocv.jobs import JobSpec
from pocv.limits import DIGEST_SIZE, MAX_STATE_BYTES
from pocv.store import atomic_write

TRACE_FORMAT: Final = 1
DEFAULT_CHECKPOINT_EVERY: Final = 16
MAX_CHECKPOINT_EVERY: Final = 1 << 20
_CKPT_RE: Final = re.compile(r"(\d{12})\.state")


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary files of writes a killed prover never finished (only this store writes here)."""
    for d in (root, root / "checkpoints"):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(d / name)


class TraceStore:
    """Leaf hashes and checkpoints of one job on disk. Not safe for two writers at once."""

    def __init__(self, root: str | os.PathLike[str], spec: JobSpec, *, checkpoint_every: int) -> None:
        self.root = Path(root)
        self.spec = spec
        self.checkpoint_every = checkpoint_every
        self._leaf_file: BinaryIO | None = None
        self._pending = bytearray()

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        spec: JobSpec | None = None,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    ) -> TraceStore:
        """Open an existing trace, or create one for ``spec``.

        An existing trace for another spec is refused rather than overwritten.
        """
        root = Path(root)
        meta_path = root / "trace.json"
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                existing = JobSpec.from_dict(meta["spec"])
                every = meta["checkpoint_every"]
                if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MAX_CHECKPOINT_EVERY:
                    raise ValueError(f"checkpoint_every {str(every)[:20]} is not in 1..{MAX_CHECKPOINT_EVERY}")
                if meta.get("format") != TRACE_FORMAT:
                    raise ValueError(f"format {str(meta.get('format'))[:20]}, expected {TRACE_FORMAT}")
            except (OSError, ValueError, KeyError, TypeError, RecursionError, EvidenceError) as e:
                raise StorageError(f"trace {str(root)!r} has an unreadable trace.json: {e}") from e
            _remove_stale_temporaries(root)
            if spec is not None and spec.job_id != existing.job_id:
                raise InputError(
                    f"trace {str(root)!r} holds job {existing.job_id.hex()[:16]}..., not "
                    f"{spec.job_id.hex()[:16]}...; use another --trace directory")
            return cls(root, existing, checkpoint_every=every)
        if spec is None:
            raise InputError(f"{str(root)!r} is not a pocv trace directory (no trace.json)")
        if not 1 <= checkpoint_every <= MAX_CHECKPOINT_EVERY:
            raise InputError(f"checkpoint interval must be in 1..{MAX_CHECKPOINT_EVERY}, got {checkpoint_every}")
        try:
            if root.exists() and (not root.is_dir() or any(root.iterdir())):
                raise InputError(f"{str(root)!r} exists and is not an empty directory or a pocv trace")
            (root / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot use {str(root)!r} as a trace directory: {e.strerror}") from e
        store = cls(root, spec, checkpoint_every=checkpoint_every)
        meta_out: dict[str, Any] = {"format": TRACE_FORMAT, "spec": spec.to_dict(),
                                    "checkpoint_every": checkpoint_every}
        atomic_write(meta_path, json.dumps(meta_out, indent=2, sort_keys=True).encode())
        return store

    # -- leaves ----------------------------------------------------------------------------

    @property
    def leaves_path(self) -> Path:
        return self.root / "leaves.bin"

    def read_leaves(self) -> bytes:
        """All complete leaf digests on disk (a torn last record is ignored)."""
        try:
            data = self.leaves_path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as e:
            raise StorageError(f"cannot read {str(self.leaves_path)!r}: {e.strerror}") from e
        return data[: len(data) - len(data) % DIGEST_SIZE]

    def append_leaf(self, digest: bytes) -> None:
        self._pending += digest

    def flush(self) -> None:
        """Append pending leaves to ``leaves.bin`` (to the OS; see :meth:`sync`)."""
        if not self._pending:
            return
        try:
            if self._leaf_file is None:
                self._leaf_file = self.leaves_path.open("ab")
            self._leaf_file.write(self._pending)
            self._leaf_file.flush()
        except OSError as e:
            raise StorageError(f"cannot append to {str(self.leaves_path)!r}: {e.strerror}") from e
        self._pending.clear()

    def sync(self) -> None:
        """Flush and fsync the leaves: called once, before the commitment is signed."""
        self.flush()
        try:
            if self._leaf_file is not None:
                os.fsync(self._leaf_file.fileno())
        except OSError as e:
            raise StorageError(f"cannot sync {str(self.leaves_path)!r}: {e.strerror}") from e

    def close(self) -> None:
        self.flush()
        if self._leaf_file is not None:
            self._leaf_file.close()
            self._leaf_file = None

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_path(self, index: int) -> Path:
        return self.root / "checkpoints" / f"{index:012d}.state"

    def write_checkpoint(self, index: int, encoded_state: bytes) -> None:
        self.flush()  # leaves up to index are written before the checkpoint that needs them
        atomic_write(self.checkpoint_path(index), encoded_state, durable=False)

    def read_checkpoint(self, index: int) -> bytes:
        p = self.checkpoint_path(index)
        try:
            with p.open("rb") as f:
                if os.fstat(f.fileno()).st_size > MAX_STATE_BYTES:
                    raise StorageError(f"checkpoint {str(p)!r} is larger than any state")
                return f.read()
        except OSError as e:
            raise StorageError(f"cannot read checkpoint {str(p)!r}: {e.strerror}") from e

    def checkpoints(self) -> list[int]:
        try:
            names = os.listdir(self.root / "checkpoints")
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _CKPT_RE.fullmatch(n)))

    def nearest_checkpoint(self, index: int) -> int:
        """The checkpoint the prover recomputes ``s_index`` from (at most c-1 steps away)."""
        return index - index % self.checkpoint_every

    def resume_point(self) -> tuple[int, bytes] | None:
        """(j, encoded s_j) of the last consistent checkpoint, after truncating leaves past it.

        None when nothing usable is on disk (the run starts from s_0).
        """
        leaves = self.read_leaves()
        count = len(leaves) // DIGEST_SIZE
        for j in reversed(self.checkpoints()):
            if j >= count:
                continue
            data = self.read_checkpoint(j)
            if digest_encoded(data) != leaves[j * DIGEST_SIZE : (j + 1) * DIGEST_SIZE]:
                continue  # corrupt or stale checkpoint: fall back to an earlier one
            self._truncate_leaves(j + 1)
            return j, data
        self._truncate_leaves(0)
        return None

    def _truncate_leaves(self, count: int) -> None:
        self.close()
        try:
            if self.leaves_path.exists():
                with self.leaves_path.open("r+b") as f:
                    f.truncate(count * DIGEST_SIZE)
                    os.fsync(f.fileno())
        except OSError as e:
            raise StorageError(f"cannot truncate {str(self.leaves_path)!r}: {e.strerror}") from e

    # -- commitment ------------------------------------------------------------------------

    @property
    def commitment_path(self) -> Path:
        return self.root / "commitment.json"
