"""The prover's trace directory (docs/protocol.md §14).

Layout (format 2)::

    TRACE/
      trace.json          {"format": 2, "spec": {...}, "checkpoint_every": c, "provider": ...}
      leaves.bin          32-byte state digests of s_0, s_1, ... appended in order
      checkpoints.pack    the kept states, one fixed-size slot each (below)
      checkpoints/        a kept state larger than its slot, in a file of its own ("{j:012d}.state")
      commitment.json     the signed commitment, once the run is complete

The pack is one file for every kept state, created (and preallocated where the file system
allows) at the first checkpoint: a 4 KiB header (magic, pack version, the interval c, the slot
size, the number of slots), then slot k at ``4096 + k * slot_bytes`` holding s_(k c): its
canonical bytes, zeros, and in the slot's last 24 bytes a trailer (magic, j, length). The slot
size is the first checkpoint's size plus the trailer, in whole 4 KiB blocks; a state that does not
fit (a kernel whose states grow) is written to a file of its own instead, as format 1 wrote every
state. A slot is written with one call, its trailer last, so a killed prover leaves a slot
either listed and whole or without a trailer; a slot is valid only if its trailer names j.
Format 1 traces (a file per kept state, no pack) are resumed and answered as they are (new
checkpoints of such a trace go to files); a trace of a newer format is refused.

Crash safety: the leaves are the source of truth. ``leaves.bin`` is only appended; before
checkpoint j is written the leaves up to j are written out. Every other file is written to a
temporary file and renamed into place, except the pack's slots, which are overwritten in place.
On resume the store keeps the highest checkpoint whose digest matches its leaf, truncates
``leaves.bin`` after it (a torn append or a stale tail is dropped) and drops every checkpoint
after it (the pack is truncated after its slot), so a prover killed at any point resumes from a
consistent state and reaches the same root, and no slot of an earlier run outlives a resume.

Which states are kept is a :class:`CheckpointPolicy` (``auto`` by default: the fewest checkpoints
such that answering a default challenge recomputes at most 5% of the job, within an 8 GiB disk
budget; or ``all``, ``every:C``, ``budget:SIZE``); the resolved interval c is what trace.json
records. ``auto`` and budgets are best effort: a state whose write would make the step wait for
the disk (the writers' queue full) is not kept, so some multiples of c may be missing; an
answer recomputes from the nearest earlier kept one (:meth:`TraceStore.nearest_checkpoint`).
``all`` and ``every:C`` keep every one, waiting for the disk if they must.

The prover commits through a :class:`Committer`: one background thread hashes s_i, appends its
leaf and writes its checkpoint while s_(i+1) computes (or, for small states, the prover's own
thread, whichever the committer measures faster), in order, so every invariant
above holds at every instant of a run. A small state goes into its slot through the page cache
with one ``pwritev`` from the tensors' memory (no copy in Python, the GIL released for all of
it); a large one (from :data:`DIRECT_MIN_BYTES`) with ``O_DIRECT`` from an aligned buffer, so it
costs no page-cache allocation.

Durability: during a run nothing is fsynced (a killed process loses nothing the page cache
holds, and after a power loss the digest check above discards whatever did not reach the
disk). ``sync()`` fsyncs the leaves before the commitment is signed, and the commitment itself
is fsynced, so a signed root always has its leaves on disk.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import json
import mmap
import os
import queue
import re
import secrets
import statistics
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

import numpy as np
import torch

from pocv import _commitproc
from pocv._commitproc import Ack, CommitProcess
from pocv.challenge import sample_size
from pocv.encoding import Frozen, State, Tensor, cached_size, digest_and_pieces, digest_encoded, freeze, state_digest
from pocv.errors import EvidenceError, InputError, StorageError
from pocv.jobs import JobSpec
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE, DIGEST_SIZE, MAX_STATE_BYTES
from pocv.merkle import IncrementalTree
from pocv.store import atomic_write, atomic_writer

_R = TypeVar("_R")

TRACE_FORMAT: Final = 2
#: the trace formats this version resumes and answers: 1 (every kept state in a file of its own)
#: and 2 (a checkpoint pack)
READ_FORMATS: Final = (1, 2)
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
    """Leaf hashes and checkpoints of one job on disk. Not safe for two writers at once (a
    :class:`Committer`'s writer threads write different checkpoints at once: that is safe)."""

    def __init__(self, root: str | os.PathLike[str], spec: JobSpec, *, checkpoint_every: int,
                 provider: str | None = None, format: int = TRACE_FORMAT) -> None:
        self.root = Path(root)
        self.spec = spec
        self.checkpoint_every = checkpoint_every
        #: the provider of the kernel that computed this trace ("pocv", "dist==version"); None in
        #: a trace written before it was recorded
        self.provider = provider
        #: the trace format (1: a file per kept state; 2: the checkpoint pack)
        self.format = format
        self._leaf_file: BinaryIO | None = None
        self._pending = bytearray()
        self._writer = _StateWriter()
        self._pack: _Pack | None = None
        self._pack_lock = threading.Lock()
        self._kept: list[int] | None = None  # kept checkpoints at multiples of c (nearest_checkpoint)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        spec: JobSpec | None = None,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        provider: str | None = None,
    ) -> TraceStore:
        """Open an existing trace, or create one for ``spec`` computed by the kernel of
        ``provider`` (recorded in trace.json; the prover refuses to resume a trace with a kernel
        of another provider).

        An existing trace for another spec is refused rather than overwritten, and so is a trace
        of a format this version does not read (StorageError naming both).
        """
        root = Path(root)
        meta_path = root / "trace.json"
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                if not isinstance(meta, dict):
                    raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
                fmt = meta.get("format")
                if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > TRACE_FORMAT:
                    raise StorageError(
                        f"trace {str(root)!r} is format {fmt}, written by a newer pocv; this one reads formats "
                        f"{', '.join(map(str, READ_FORMATS))}: answer it with the pocv that wrote it, or run the job "
                        "again in a new trace directory")
                if fmt not in READ_FORMATS or isinstance(fmt, bool):
                    raise ValueError(f"format {str(fmt)[:20]}, expected one of {', '.join(map(str, READ_FORMATS))}")
                existing = JobSpec.from_dict(meta["spec"])
                every = meta["checkpoint_every"]
                if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MAX_CHECKPOINT_EVERY:
                    raise ValueError(f"checkpoint_every {str(every)[:20]} is not in 1..{MAX_CHECKPOINT_EVERY}")
                recorded = meta.get("provider")
                if recorded is not None and not isinstance(recorded, str):
                    raise ValueError(f"provider {str(recorded)[:40]} is not a string")
            except (OSError, ValueError, KeyError, TypeError, RecursionError, EvidenceError) as e:
                raise StorageError(f"trace {str(root)!r} has an unreadable trace.json: {e}") from e
            _remove_stale_temporaries(root)
            if spec is not None and spec.job_id != existing.job_id:
                raise InputError(
                    f"trace {str(root)!r} holds job {existing.job_id.hex()[:16]}..., not "
                    f"{spec.job_id.hex()[:16]}...; use another --trace directory")
            return cls(root, existing, checkpoint_every=every, provider=recorded, format=fmt)
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
        store = cls(root, spec, checkpoint_every=checkpoint_every, provider=provider, format=TRACE_FORMAT)
        meta_out: dict[str, Any] = {"format": TRACE_FORMAT, "spec": spec.to_dict(),
                                    "checkpoint_every": checkpoint_every}
        if provider is not None:
            meta_out["provider"] = provider
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
        """Flush the leaves and close the files this store holds open (it reopens them when used
        again)."""
        self.flush()
        if self._leaf_file is not None:
            self._leaf_file.close()
            self._leaf_file = None
        with self._pack_lock:
            if self._pack is not None:
                self._pack.close()
                self._pack = None

    # -- checkpoints -----------------------------------------------------------------------

    @property
    def pack_path(self) -> Path:
        return self.root / PACK_NAME

    def checkpoint_path(self, index: int) -> Path:
        """The file of checkpoint ``index`` when it is not in the pack (format 1, or a state larger
        than its slot)."""
        return self.root / "checkpoints" / f"{index:012d}.state"

    def _loaded_pack(self) -> _Pack | None:
        """The pack on disk, opened once (None: no pack, or a format 1 trace); StorageError if
        its header is unreadable."""
        if self.format < 2:
            return None
        with self._pack_lock:
            if self._pack is None:
                self._pack = _Pack.load(self.pack_path)
            return self._pack

    def _pack_for(self, index: int, size: int) -> _Pack | None:
        """The pack checkpoint ``index`` of ``size`` bytes goes into, created at the first
        checkpoint (slots of that state's size, one per state the job keeps); None where it does
        not fit (a file of its own) or in a format 1 trace."""
        if self.format < 2:
            return None
        with self._pack_lock:
            if self._pack is None:
                self._pack = _Pack.load(self.pack_path)
            if self._pack is None:
                every = self.checkpoint_every
                self._pack = _Pack.create(self.pack_path, every=every, slot_bytes=_slot_bytes(size),
                                          slots=self.spec.steps // every + 1)
            pack = self._pack
        return pack if pack.fits(index, size) else None

    def write_checkpoint(self, index: int, encoded_state: bytes | Sequence[bytes | memoryview], *,
                         writer: _StateWriter | None = None, flush: bool = True, size: int | None = None) -> None:
        """Write checkpoint ``index`` (its canonical bytes, or pieces that concatenate to them)
        into its slot of the pack (a file of its own where it does not fit), after the leaves up
        to ``index``; not fsynced (see the module docstring).

        ``flush`` false: the caller has flushed those leaves already (a writer thread of the
        :class:`Committer`, which must not touch the leaves); ``writer``: that thread's own;
        ``size``: the bytes of the pieces, where the caller knows them."""
        if flush:
            self.flush()  # leaves up to index are written before the checkpoint that needs them
        pieces = [encoded_state] if isinstance(encoded_state, bytes | bytearray | memoryview) else encoded_state
        total = sum(map(_nbytes, pieces)) if size is None else size
        try:
            pack = self._pack_for(index, total)
            if pack is not None:
                pack.write(index, pieces, total, writer or self._writer)
                return
            if self.format >= 2 and self._pack is not None:
                self._pack.clear(index)  # a stale slot of this index must not shadow its file
            (writer or self._writer).write(self.checkpoint_path(index), pieces)
        except OSError as e:
            raise StorageError(f"cannot write checkpoint {index} in {str(self.root)!r}: {e.strerror or e}") from e

    def writes_through_page_cache(self, size: int) -> bool:
        """Whether a checkpoint of ``size`` bytes is written through the page cache (a copy into
        memory the kernel already holds: cheap enough for the committer's own thread) rather
        than with ``O_DIRECT`` (the caller waits for the disk: a writer thread's job)."""
        return self.format >= 2 and size < DIRECT_MIN_BYTES

    def read_checkpoint(self, index: int) -> bytes:
        data = self._read_kept(index)
        if data is None:
            raise StorageError(f"checkpoint {index} is not in trace {str(self.root)!r}: no valid slot in {PACK_NAME} "
                               f"and no file {str(self.checkpoint_path(index).relative_to(self.root))!r}")
        return data

    def _read_kept(self, index: int) -> bytes | None:
        """Checkpoint ``index`` from its slot, else from its file; None where neither holds it."""
        pack = self._loaded_pack()
        if pack is not None:
            try:
                data = pack.read(index)
            except OSError as e:
                raise StorageError(f"cannot read checkpoint {index} from {str(pack.path)!r}: {e.strerror}") from e
            if data is not None:
                return data
        p = self.checkpoint_path(index)
        try:
            with p.open("rb") as f:
                if os.fstat(f.fileno()).st_size > MAX_STATE_BYTES:
                    raise StorageError(f"checkpoint {str(p)!r} is larger than any state")
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read checkpoint {str(p)!r}: {e.strerror}") from e

    def _checkpoint_files(self) -> list[int]:
        try:
            names = os.listdir(self.root / "checkpoints")
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _CKPT_RE.fullmatch(n)))

    def checkpoints(self) -> list[int]:
        """The indices of the kept states on disk: valid slots of the pack and files."""
        pack = self._loaded_pack()
        try:
            slots = pack.present() if pack is not None else []
        except OSError as e:
            raise StorageError(f"cannot read {str(self.pack_path)!r}: {e.strerror}") from e
        return sorted(set(slots).union(self._checkpoint_files()))

    def nearest_checkpoint(self, index: int) -> int:
        """The checkpoint the prover recomputes ``s_index`` from: the highest kept state at a
        multiple of c at or below ``index`` (c-1 steps away at most when every c-th state was
        kept; further where a best-effort run did not keep some, :class:`Committer`
        ``skip_behind``). The kept set is read once per store; StorageError if none is at or
        below ``index``."""
        base = index - index % self.checkpoint_every
        if self._kept is None:
            self._kept = [j for j in self.checkpoints() if j % self.checkpoint_every == 0]
        kept = self._kept
        k = bisect.bisect_right(kept, base) - 1
        if k < 0:
            raise StorageError(f"trace {str(self.root)!r} keeps no checkpoint at or before state {index}")
        return kept[k]

    def resume_point(self) -> tuple[int, bytes] | None:
        """(j, encoded s_j) of the last consistent checkpoint, after truncating the leaves and
        dropping the checkpoints past it.

        None when nothing usable is on disk (the run starts from s_0).
        """
        leaves = self.read_leaves()
        count = len(leaves) // DIGEST_SIZE
        try:
            self._loaded_pack()
        except StorageError:  # a pack whose header is unreadable holds nothing usable: start it again
            self._discard_pack()
        for j in reversed(self.checkpoints()):
            if j >= count:
                continue
            data = self._read_kept(j)
            if data is None or digest_encoded(data) != leaves[j * DIGEST_SIZE : (j + 1) * DIGEST_SIZE]:
                continue  # torn, corrupt or stale checkpoint: fall back to an earlier one
            self._truncate_leaves(j + 1)
            self._drop_checkpoints_after(j)
            return j, data
        self._truncate_leaves(0)
        self._drop_checkpoints_after(-1)
        return None

    def _truncate_leaves(self, count: int) -> None:
        self.flush()
        if self._leaf_file is not None:
            self._leaf_file.close()
            self._leaf_file = None
        try:
            if self.leaves_path.exists():
                with self.leaves_path.open("r+b") as f:
                    f.truncate(count * DIGEST_SIZE)
                    os.fsync(f.fileno())
        except OSError as e:
            raise StorageError(f"cannot truncate {str(self.leaves_path)!r}: {e.strerror}") from e

    def _drop_checkpoints_after(self, index: int) -> None:
        """Drop every checkpoint after ``index`` (the resume point): the pack is cut after the
        slot of ``index``, files after it are removed, so nothing of an earlier run is left to be
        read back for a state the resumed run has not rewritten."""
        try:
            pack = self._loaded_pack()
            if pack is not None:
                pack.truncate_after(index)
            for j in self._checkpoint_files():
                if j > index:
                    os.unlink(self.checkpoint_path(j))
        except OSError as e:
            raise StorageError(f"cannot drop the checkpoints after {index} in {str(self.root)!r}: {e.strerror}") from e

    def _discard_pack(self) -> None:
        with self._pack_lock:
            if self._pack is not None:
                self._pack.close()
                self._pack = None
            try:
                self.pack_path.unlink(missing_ok=True)
            except OSError as e:
                raise StorageError(f"cannot remove the unreadable {str(self.pack_path)!r}: {e.strerror}") from e

    # -- commitment ------------------------------------------------------------------------

    @property
    def commitment_path(self) -> Path:
        return self.root / "commitment.json"


# -- checkpoint policy -----------------------------------------------------------------------

#: What the ``auto`` policy aims for: answering a challenge at the default sample size
#: (k = 66: p = 0.999 against f = 0.1) recomputes at most this share of the job's steps.
RESPOND_SHARE: Final = 0.05
#: The most disk the ``auto`` policy spends on checkpoints unless told otherwise.
DEFAULT_DISK_BUDGET: Final = 8 << 30
_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS: Final = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "ki": 1 << 10, "kib": 1 << 10, "m": 10**6, "mb": 10**6,
                 "mi": 1 << 20, "mib": 1 << 20, "g": 10**9, "gb": 10**9, "gi": 1 << 30, "gib": 1 << 30,
                 "t": 10**12, "tb": 10**12, "ti": 1 << 40, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``"8GiB"``, ``"500MB"``, ``"1.5G"`` or ``"4096"`` (InputError otherwise)."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None or (m.group(2) or "").lower() not in _UNITS:
        raise InputError(f"expected a size such as 8GiB, 500MB or 4096, got {text!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def recompute_steps(every: int) -> float:
    """Expected steps recomputed to open ``s_(i-1)`` and ``s_i`` for one challenged step ``i``
    (uniform over the job) when every ``every``-th state is kept: (c-1)(c+2)/(2c)."""
    return (every - 1) * (every + 2) / (2 * every)


@dataclass(frozen=True)
class CheckpointPolicy:
    """Which states the prover keeps on disk (protocol.md §14).

    * ``every`` set: keep every ``every``-th state (``"all"`` is every 1);
    * ``budget`` set, ``auto`` false: keep as many states as fit in ``budget`` bytes, evenly
      spaced (the fastest answers the disk allows);
    * ``auto`` (the default): the fewest states such that answering a challenge of the default
      sample size recomputes at most :data:`RESPOND_SHARE` of the job's steps, within
      ``budget`` (default :data:`DEFAULT_DISK_BUDGET`); when the budget cannot hold that many,
      as many as fit.

    ``parse`` reads ``"auto"``, ``"auto:BUDGET"``, ``"all"``, ``"every:C"`` or ``"C"``, and
    ``"budget:SIZE"`` (``SIZE`` as in :func:`parse_size`).
    """

    every: int | None = None
    budget: int | None = None
    auto: bool = False

    def __post_init__(self) -> None:
        if self.every is not None and (isinstance(self.every, bool) or not 1 <= self.every <= MAX_CHECKPOINT_EVERY):
            raise InputError(f"checkpoint interval must be in 1..{MAX_CHECKPOINT_EVERY}, got {self.every!r}")
        if self.budget is not None and self.budget < 1:
            raise InputError(f"checkpoint disk budget must be positive, got {self.budget!r}")
        if self.every is not None and (self.budget is not None or self.auto):
            raise InputError("a checkpoint policy is an interval, a budget or auto, not several")

    @classmethod
    def parse(cls, policy: str | int | CheckpointPolicy) -> CheckpointPolicy:
        if isinstance(policy, CheckpointPolicy):
            return policy
        if isinstance(policy, int) and not isinstance(policy, bool):
            return cls(every=policy)
        if not isinstance(policy, str):
            raise InputError(f"expected a checkpoint policy, got {policy!r}")
        text = policy.strip().lower()
        kind, _, arg = text.partition(":")
        if text == "all":
            return cls(every=1)
        if text.isdigit():
            return cls(every=int(text))
        if kind == "every" and arg.isdigit():
            return cls(every=int(arg))
        if kind == "budget" and arg:
            return cls(budget=parse_size(arg))
        if kind == "auto":
            return cls(auto=True, budget=parse_size(arg) if arg else None)
        raise InputError(f"checkpoint policy must be auto, auto:SIZE, all, every:C, C or budget:SIZE; got {policy!r}")

    def interval(self, steps: int, state_bytes: int, k: int | None = None) -> int:
        """The interval c for a job of ``steps`` steps whose encoded states are ``state_bytes``."""
        if self.every is not None:
            return self.every
        budget = self.budget if self.budget is not None else DEFAULT_DISK_BUDGET
        fit = max(budget // max(state_bytes, 1), 1)  # states the budget holds (s_0 is always kept)
        # smallest c with steps // c + 1 <= fit
        c_budget = 1 if fit >= steps + 1 else (steps // fit + 1 if fit >= 2 else steps + 1)
        if not self.auto:
            return max(1, min(c_budget, MAX_CHECKPOINT_EVERY))
        k = min(k if k is not None else sample_size(DEFAULT_CONFIDENCE, DEFAULT_CHEAT_FRACTION), steps)
        c_respond = 1
        top = min(steps, MAX_CHECKPOINT_EVERY)
        while c_respond < top and k * recompute_steps(c_respond + 1) <= RESPOND_SHARE * steps:
            c_respond += 1
        return max(1, min(max(c_respond, c_budget), MAX_CHECKPOINT_EVERY))

    @property
    def best_effort(self) -> bool:
        """Whether the interval is a target the prover may thin out (``auto`` and budgets: a
        state whose write would make the step wait for the disk is not kept) rather than a
        promise (``all``, ``every:C``: every c-th state kept, the step waiting for the disk
        if it must)."""
        return self.every is None

    def describe(self) -> str:
        if self.every is not None:
            return "all" if self.every == 1 else f"every:{self.every}"
        if self.auto:
            return "auto" if self.budget is None else f"auto:{self.budget}"
        return f"budget:{self.budget}"


#: The policy a :class:`~pocv.prover.Prover` uses unless told otherwise.
DEFAULT_CHECKPOINT_POLICY: Final = CheckpointPolicy(auto=True)


# -- writing states --------------------------------------------------------------------------

_ALIGN: Final = 4096
#: states up to this size go through an aligned copy and O_DIRECT; larger ones (which would double
#: the writer's memory) through the page cache
_MAX_DIRECT: Final = 1 << 30
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)

#: the checkpoint pack of a format 2 trace (module docstring)
PACK_NAME: Final = "checkpoints.pack"
#: the layout version of the pack, in its header
PACK_VERSION: Final = 1
_PACK_MAGIC: Final = b"POCVPACK"
_PACK_HEAD: Final = struct.Struct("<8sIQQQ")  # magic, pack version, interval c, slot bytes, slots
_SLOT_MAGIC: Final = b"POCVSLOT"
_TRAILER: Final = struct.Struct("<8sQQ")  # magic, state index j, bytes of its canonical encoding
#: checkpoints from this size go into their slot with O_DIRECT (the caller waits for the device,
#: but no page-cache page is allocated: 0.4 ms of CPU for 4 MiB against 3.5-6.7 ms buffered on the
#: reference host); smaller ones through the page cache, with one ``pwritev`` from the tensors'
#: memory (0.1 ms for 0.3 MB, the GIL released for all of it; heat2d's 1 MiB states every step:
#: run / bare 1.10-1.22 through the page cache against 1.33-1.40 with O_DIRECT, load 2-3)
DIRECT_MIN_BYTES: Final = 2 << 20
#: the most slots a pack header may declare (a sanity bound on a header read back)
_MAX_SLOTS: Final = 1 << 40
#: buffers one pwritev call takes at most (Linux and macOS IOV_MAX)
_IOV_MAX: Final = 1024
#: zeros between a state and its trailer written in the same call (a larger gap: a second call)
_MAX_PAD: Final = 1 << 16
_ZEROS: Final = bytes(_MAX_PAD)
_ZERO_VIEW: Final = memoryview(_ZEROS)
#: pieces from this size are copied into an aligned buffer by numpy, without the GIL
_GIL_FREE_COPY: Final = 1 << 16
#: preallocate a new pack in full (posix_fallocate): the file system finds the room for every
#: kept state at the first checkpoint, and a disk too small for the job fails then, not hours in
_PREALLOCATE = True


def _slot_bytes(size: int) -> int:
    """The slot of a pack whose first checkpoint is ``size`` bytes: it and the trailer, in whole
    4 KiB blocks (O_DIRECT writes whole, aligned blocks)."""
    return -(-(size + _TRAILER.size) // _ALIGN) * _ALIGN


def _nbytes(p: bytes | bytearray | memoryview) -> int:
    return p.nbytes if isinstance(p, memoryview) else len(p)


def _pwrite_all(fd: int, bufs: list[bytes | bytearray | memoryview], offset: int, total: int) -> None:
    """Write the concatenation of ``bufs`` (``total`` bytes) at ``offset``: one ``pwritev`` (no
    copy in Python) for up to :data:`_IOV_MAX` buffers, in order: a byte is written only after
    every byte before it (a short write resumes where it stopped)."""
    if len(bufs) <= _IOV_MAX and hasattr(os, "pwritev"):
        n = os.pwritev(fd, bufs, offset)
        if n == total:
            return
    else:
        n = 0
    views = [memoryview(b).cast("B") for b in bufs if _nbytes(b)]
    if not hasattr(os, "pwritev"):  # pragma: no cover - every platform pocv supports has it
        views = [memoryview(b"".join(views))]
    offset += n
    i = 0
    while True:  # skip what the first call wrote, then write the rest
        while n and i < len(views):
            size = views[i].nbytes
            if n >= size:
                n -= size
                i += 1
            else:
                views[i] = views[i][n:]
                n = 0
        if i == len(views):
            return
        batch = views[i : i + _IOV_MAX]
        n = os.pwritev(fd, batch, offset) if len(batch) > 1 else os.pwrite(fd, batch[0], offset)
        if n <= 0:
            raise OSError(errno.EIO, f"a write of {sum(v.nbytes for v in batch)} bytes wrote {n}")
        offset += n


def _preallocate(fd: int, offset: int, length: int, path: Path) -> None:
    """Reserve ``length`` bytes at ``offset`` (where the file system supports it; elsewhere the
    file grows as slots are written). StorageError when the disk has no room for them."""
    if not _PREALLOCATE or length <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(
                f"no room for the checkpoints of this job in {str(path.parent)!r}: they need {offset + length} bytes "
                f"({e.strerror}); free some space, or keep fewer states (--checkpoint budget:SIZE)") from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ENODEV):
            raise


class _Pack:
    """``checkpoints.pack``: a header block, then one slot of ``slot_bytes`` per kept state:
    checkpoint ``j = k * every`` in slot ``k`` at ``4096 + k * slot_bytes``, its canonical bytes,
    zeros, and a trailer (magic, j, length) in the slot's last bytes, written last. Slots are
    written and read with positional calls on one descriptor: several threads may write
    different slots at once."""

    def __init__(self, path: Path, *, every: int, slot_bytes: int, slots: int) -> None:
        self.path = path
        self.every = every
        self.slot_bytes = slot_bytes
        self.slots = slots
        try:
            self._file = open(path, "r+b", buffering=0)  # noqa: SIM115 - held for the store's life
        except OSError as e:  # a trace on a read-only mount or of another user: answering only reads
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115
        self._direct: int | None = None
        self._direct_ok = bool(_O_DIRECT) and os.environ.get("POCV_NO_DIRECT_IO") != "1"
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, *, every: int, slot_bytes: int, slots: int) -> _Pack:
        """A new, empty pack (its header written to a temporary file and renamed into place, so a
        pack on disk always has a whole header), preallocated for every slot."""
        head = _PACK_HEAD.pack(_PACK_MAGIC, PACK_VERSION, every, slot_bytes, slots).ljust(_ALIGN, b"\0")
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "xb") as f:
                f.write(head)
                f.flush()
                _preallocate(f.fileno(), _ALIGN, slots * slot_bytes, path)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return cls(path, every=every, slot_bytes=slot_bytes, slots=slots)

    @classmethod
    def load(cls, path: Path) -> _Pack | None:
        """The pack at ``path``; None if there is none; StorageError if its header is not one."""
        try:
            with open(path, "rb") as f:
                head = f.read(_PACK_HEAD.size)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read {str(path)!r}: {e.strerror}") from e
        if len(head) < _PACK_HEAD.size:
            raise StorageError(f"{str(path)!r} is not a checkpoint pack: {len(head)} bytes, expected a "
                               f"{_PACK_HEAD.size}-byte header at least")
        magic, version, every, slot_bytes, slots = _PACK_HEAD.unpack(head)
        if magic != _PACK_MAGIC or version != PACK_VERSION:
            raise StorageError(f"{str(path)!r} is not a checkpoint pack of version {PACK_VERSION}: header "
                               f"{magic[:8]!r} version {version}")
        if not (1 <= every <= MAX_CHECKPOINT_EVERY and slot_bytes % _ALIGN == 0
                and _TRAILER.size < slot_bytes <= _slot_bytes(MAX_STATE_BYTES) and 1 <= slots <= _MAX_SLOTS):
            raise StorageError(f"{str(path)!r} has an impossible header: interval {every}, slots of {slot_bytes} "
                               f"bytes, {slots} slots")
        try:
            return cls(path, every=every, slot_bytes=slot_bytes, slots=slots)
        except OSError as e:
            raise StorageError(f"cannot open {str(path)!r}: {e.strerror}") from e

    def close(self) -> None:
        self._file.close()
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None

    def __del__(self) -> None:  # a store dropped without close(): its descriptors
        with contextlib.suppress(Exception):
            self.close()

    def slot(self, index: int) -> int | None:
        """The slot of checkpoint ``index``, if the pack has one for it."""
        if index < 0 or index % self.every:
            return None
        k = index // self.every
        return k if k < self.slots else None

    def _offset(self, k: int) -> int:
        return _ALIGN + k * self.slot_bytes

    def fits(self, index: int, size: int) -> bool:
        return self.slot(index) is not None and size <= self.slot_bytes - _TRAILER.size

    def write(self, index: int, pieces: Sequence[bytes | memoryview], size: int, writer: _StateWriter) -> None:
        """Write checkpoint ``index`` (``size`` bytes) into its slot: the state, zeros, the trailer,
        in one call; O_DIRECT from ``writer``'s aligned buffer from :data:`DIRECT_MIN_BYTES` on."""
        k = self.slot(index)
        if k is None or size > self.slot_bytes - _TRAILER.size:
            raise StorageError(f"checkpoint {index} of {size} bytes has no slot in {str(self.path)!r}")
        offset = self._offset(k)
        trailer = _TRAILER.pack(_SLOT_MAGIC, index, size)
        if DIRECT_MIN_BYTES <= size <= _MAX_DIRECT and self._direct_ok:
            fd = self._direct_fd()
            if fd is not None:
                try:
                    writer.write_direct_at(fd, offset, pieces, size, self.slot_bytes, trailer)
                    return
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self._direct_ok = False  # this file system refuses O_DIRECT: the page cache from now on
        pad = self.slot_bytes - _TRAILER.size - size
        if pad <= _MAX_PAD:
            _pwrite_all(self._file.fileno(), [*pieces, _ZERO_VIEW[:pad], trailer], offset, self.slot_bytes)
        else:  # a state much smaller than its slot: the gap is left as it is (zeros, or an older state)
            _pwrite_all(self._file.fileno(), list(pieces), offset, size)
            _pwrite_all(self._file.fileno(), [trailer], offset + self.slot_bytes - _TRAILER.size, _TRAILER.size)

    def _direct_fd(self) -> int | None:
        with self._lock:
            if self._direct is None and self._direct_ok:
                try:
                    self._direct = os.open(self.path, os.O_WRONLY | _O_DIRECT)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self._direct_ok = False
            return self._direct

    def _trailer(self, k: int) -> tuple[int, int] | None:
        """(j, length) from slot ``k``'s trailer, if it is one for that slot."""
        end = self._offset(k + 1)
        raw = os.pread(self._file.fileno(), _TRAILER.size, end - _TRAILER.size)
        if len(raw) != _TRAILER.size:
            return None
        magic, index, size = _TRAILER.unpack(raw)
        if magic != _SLOT_MAGIC or index != k * self.every or size > self.slot_bytes - _TRAILER.size:
            return None
        return index, size

    def read(self, index: int) -> bytes | None:
        """The bytes slot ``index`` holds, or None where it holds no whole state of that index."""
        k = self.slot(index)
        if k is None:
            return None
        found = self._trailer(k)
        if found is None:
            return None
        offset, size = self._offset(k), found[1]
        fd = self._file.fileno()
        data = os.pread(fd, size, offset)  # one call reads it whole (a regular file), into bytes: no copy
        if len(data) == size:
            return data
        out = bytearray(size)  # a short read: the rest, piece by piece
        view = memoryview(out)
        view[: len(data)] = data
        done = len(data)
        while done < size:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                return None  # the pack ends inside this slot
            done += n
        return bytes(out)

    def present(self) -> list[int]:
        """The indices of the slots with a trailer naming them (whole slots within the file)."""
        size = os.fstat(self._file.fileno()).st_size
        last = min(self.slots, max(0, (size - _ALIGN) // self.slot_bytes))
        return [found[0] for k in range(last) if (found := self._trailer(k)) is not None]

    def clear(self, index: int) -> None:
        """Invalidate slot ``index``'s trailer (its state goes to a file of its own instead)."""
        k = self.slot(index)
        if k is not None and os.fstat(self._file.fileno()).st_size >= self._offset(k + 1):
            _pwrite_all(self._file.fileno(), [bytes(_TRAILER.size)], self._offset(k + 1) - _TRAILER.size, _TRAILER.size)

    def truncate_after(self, index: int) -> None:
        """Cut the pack after the slot of the last checkpoint at or below ``index`` (-1: every
        slot), and reserve the room of the cut slots again."""
        keep = min(self.slots, index // self.every + 1) if index >= 0 else 0
        fd = self._file.fileno()
        os.ftruncate(fd, self._offset(keep))
        _preallocate(fd, self._offset(keep), (self.slots - keep) * self.slot_bytes, self.path)


class _StateWriter:
    """Writes checkpoints, bypassing the page cache where the file system allows: a file of its
    own (:meth:`write`) or a slot of the pack (:meth:`write_direct_at`), from one aligned buffer
    it reuses (one writer per thread).

    Measured on the reference host (ext4 in a container): creating a 4 MiB file through the page
    cache costs 7-9 ms of CPU (new page-cache pages), with O_DIRECT 1.5 ms (a copy into an aligned
    buffer and the syscall) — and the CPU is what a background writer takes from the next step.
    Falls back to ordinary writes where O_DIRECT is refused (tmpfs, some network file systems).
    """

    def __init__(self) -> None:
        self._buf: mmap.mmap | None = None
        self._direct = bool(_O_DIRECT) and os.environ.get("POCV_NO_DIRECT_IO") != "1"

    def _aligned(self, size: int) -> mmap.mmap:
        if self._buf is None or len(self._buf) < size:
            if self._buf is not None:
                self._buf.close()
            self._buf = mmap.mmap(-1, size)
        return self._buf

    def _fill(self, buf: mmap.mmap, view: memoryview, pieces: Sequence[bytes | memoryview]) -> int:
        """Copy ``pieces`` to the start of the aligned buffer; a large piece through numpy, which
        copies without the GIL (a memoryview assignment holds it: 0.5-1 ms for 4 MiB taken from
        the step's Python)."""
        pos = 0
        dst: np.ndarray[Any, Any] | None = None
        for p in pieces:
            n = _nbytes(p)
            if n >= _GIL_FREE_COPY:
                if dst is None:
                    dst = np.frombuffer(buf, dtype=np.uint8)
                np.copyto(dst[pos : pos + n], np.frombuffer(p, dtype=np.uint8))
            else:
                view[pos : pos + n] = p if isinstance(p, bytes) else memoryview(p).cast("B")
            pos += n
        return pos

    def write_direct_at(self, fd: int, offset: int, pieces: Sequence[bytes | memoryview], size: int,
                        slot_bytes: int, trailer: bytes) -> None:
        """One O_DIRECT write of a whole slot at ``offset`` on ``fd``: the state, zeros, the
        trailer in its last bytes."""
        buf = self._aligned(slot_bytes)
        view = memoryview(buf)
        try:
            self._fill(buf, view, pieces)
            end = slot_bytes - len(trailer)
            gap = end - size
            view[size:end] = _ZEROS[:gap] if gap <= _MAX_PAD else bytes(gap)
            view[end:slot_bytes] = trailer
            done = 0
            while done < slot_bytes:
                n = os.pwrite(fd, view[done:slot_bytes], offset + done)
                if n <= 0 or n % _ALIGN:
                    raise OSError(errno.EIO, f"an O_DIRECT write of {slot_bytes - done} bytes wrote {n}")
                done += n
        finally:
            view.release()

    def write(self, path: Path, pieces: Sequence[bytes | memoryview]) -> None:
        """Write the concatenation of ``pieces`` to ``path`` atomically (temporary file, rename)."""
        total = sum(_nbytes(p) for p in pieces)
        if self._direct and _ALIGN <= total <= _MAX_DIRECT:
            try:
                self._write_direct(path, pieces, total)
                return
            except OSError:
                self._direct = False  # this file system refuses O_DIRECT: ordinary writes from now on
        with atomic_writer(path, durable=False) as f:
            f.writelines(pieces)

    def _write_direct(self, path: Path, pieces: Sequence[bytes | memoryview], total: int) -> None:
        """The whole 4 KiB blocks with O_DIRECT from the aligned buffer, then the last partial
        block through the page cache (O_DIRECT cleared on the descriptor): no padding to cut
        off afterwards (an ftruncate of a just-written O_DIRECT file costs about 1 ms)."""
        aligned = total // _ALIGN * _ALIGN
        buf = self._aligned(-(-total // _ALIGN) * _ALIGN)
        view = memoryview(buf)
        self._fill(buf, view, pieces)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT, 0o644)
            try:
                done = 0
                while done < aligned:
                    n = os.write(fd, view[done:aligned])
                    if n <= 0 or n % _ALIGN:
                        raise OSError(f"O_DIRECT write of {aligned - done} bytes wrote {n}")
                    done += n
                if done < total:
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                    while done < total:
                        n = os.write(fd, view[done:total])
                        if n <= 0:
                            raise OSError(f"write of {total - done} bytes wrote {n}")
                        done += n
            finally:
                os.close(fd)
            os.chmod(tmp, 0o644)  # as the buffered path's files, whatever the umask
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            view.release()


# -- committing in the background ------------------------------------------------------------


class _Snapshot:
    """A state handed to the committer: CPU tensors as they are, or GPU tensors being copied to
    pinned host memory on a side stream (``wait`` returns once the copy has landed)."""

    __slots__ = ("event", "state")

    def __init__(self, state: State | Frozen, event: Any = None) -> None:
        self.state = state
        self.event = event

    def wait(self) -> State | Frozen:
        if self.event is not None:
            self.event.synchronize()
        return self.state


_copy_streams: dict[Any, Any] = {}


def snapshot(state: State, *, copy: bool) -> _Snapshot:
    """Freeze ``state`` for the committer while the next step computes.

    GPU tensors are copied device-to-host into pinned memory on a side stream that waits for the
    step that produced them, so the copy overlaps the next step (the tensor's memory is kept from
    reuse until the copy is done, ``record_stream``). CPU tensors are shared when the step
    function does not modify its input (``copy`` false; the built-in kernels return new tensors),
    and copied otherwise: a state of CPU tensors into its canonical bytes at once
    (:func:`~pocv.encoding.freeze`: one join, no tensor made, and what the committer hashes and
    writes as it is).
    """
    gpu = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_cuda]
    if not gpu:
        if not copy:
            return _Snapshot(state)
        return _Snapshot(freeze(state))
    out: dict[str, Tensor] = {k: (v.clone() if isinstance(v, torch.Tensor) else v.copy()) if copy else v
                              for k, v in state.items() if k not in gpu}
    device = state[gpu[0]].device
    stream = _copy_streams.get(device)
    if stream is None:
        stream = _copy_streams[device] = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for k in gpu:
            t = state[k]
            assert isinstance(t, torch.Tensor)
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            t.record_stream(stream)
            out[k] = host
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(stream)
    return _Snapshot(out, event)


#: checkpoint writes in flight at once behind the committer (threads waiting on the disk: an
#: O_DIRECT write returns when the device has the data, 5-25 ms for 1-4 MiB on a virtual disk)
CHECKPOINT_WRITERS: Final = 2
#: bytes of states whose checkpoint writes may wait at once (at least one state's): bounds the
#: memory the pipeline holds while the disk is slower than the steps for a while
MAX_PENDING_WRITE_BYTES: Final = 256 << 20
#: states waiting for a checkpoint write at most, whatever their size
MAX_PENDING_WRITES: Final = 8
#: an adaptive committer (``background=None``) measures its modes in windows of this many states:
#: the first window hashed on the caller's thread (each commit timed) ...
ADAPT_STATES: Final = 8
#: ... and if committing one state there took less than this (the median), it stays there: handing
#: a state over costs the caller at least 20-50 us in thread switches, a 64 KiB state's hash about
#: as much. Otherwise the next window runs on the committer's thread, and the mode whose states
#: followed one another faster (the median time from one ``submit`` to the next: the step and
#: what the commit took from it, GIL switches and a core shared with other work included) is kept
#: (measured for a training step's 0.3 MB state on a 2-core VM with other work on it: the thread
#: took 1.1 ms of the caller's CPU per state, hashing and writing in line 0.7 ms)
BACKGROUND_MIN_COMMIT_S: Final = 150e-6
#: windows the better mode is kept before the other is measured again (one window); doubled each
#: time the other loses, up to :data:`ADAPT_MAX_HOLD` (a machine whose load changes is followed)
ADAPT_HOLD: Final = 4
ADAPT_MAX_HOLD: Final = 64
#: the committer's thread is kept only when its window's median beats the caller's by this share;
#: ties go to the caller's thread (no hand-over, no GIL traffic). Two windows of 8 states in the
#: same mode differ by several percent on a VM whose speed drifts within seconds: without a
#: margin a digits training run (0.3 MB states, 8 ms steps, 2 cores) spent 30% of its states on the
#: thread after drift-made wins, 20% slower a step there
ADAPT_MARGIN: Final = 0.05


def thread_wins(medians: dict[bool, float]) -> bool:
    """Whether an adaptive committer keeps its thread, given the median time between submits in
    each mode (True: on the thread): only when the thread is faster by :data:`ADAPT_MARGIN`."""
    return medians[True] < (1.0 - ADAPT_MARGIN) * medians[False]


#: the thread that hashes a state (the committer's, or the caller's for an adaptive committer in
#: line) also writes its checkpoint when it goes through the page cache (a copy by the kernel,
#: 0.1 ms for 0.3 MB): less than handing it to a writer thread costs in thread switches (and, for
#: a step that may modify its input, a copy first): a training step's 0.3 MB state, in line, on a
#: 2-core VM with other work on it: 0.7 ms of the caller's CPU per state against 1.2 ms handed over
INLINE_CHEAP_WRITES = True

#: an adaptive committer whose states are not cheap to commit in line hands them to a forked commit
#: process where the platform has one (:mod:`pocv._commitproc`) rather than to its thread: the
#: caller copies each state into a shared ring, or for a pure step lets the child read it from its
#: memory (digits training, 0.3 MB states of 17 tensors, 1 torch thread on 2 cores: 0.17-0.21 ms
#: between steps by reference, 0.31-0.33 ms copying, 0.69 ms in line)
USE_COMMIT_PROCESS = True
#: leaves the parent of a commit process holds before it appends them to ``leaves.bin``
_LEAF_FLUSH_EVERY: Final = 128


class Committer:
    """Hashes states, appends their leaves and writes checkpoints off the caller's thread, in
    order, while the caller computes the next step (issue 16 point 1).

    ``submit(i, state)`` hands over ``s_i`` (frozen by :func:`snapshot`) and returns at once
    unless ``depth`` states are already waiting. One thread (the committer) hashes each state,
    appends its leaf and, for a checkpoint, flushes the leaves up to it to the OS, then writes a
    checkpoint that goes through the page cache itself (a state under :data:`DIRECT_MIN_BYTES`
    into its slot of the pack: a copy by the kernel) and hands any other to one of
    :data:`CHECKPOINT_WRITERS` writer threads (at most :data:`MAX_PENDING_WRITES` states or
    :data:`MAX_PENDING_WRITE_BYTES` waiting; the committer waits beyond that), so the disk's
    latency never stalls the hashing. Checkpoints may land out of order, each only after its
    leaf and each with its slot's trailer last (or atomically, a file of its own): a trace on
    disk is always a prefix of the job's leaves plus checkpoints that match them, and a resumed
    run reaches the same root. The committer is the only writer of ``store``'s leaves and of
    ``tree`` until :meth:`close`, which returns once every leaf and checkpoint is written.

    An error on any of these threads (a full disk, an unencodable state) stops the committing at
    that state and is raised by the next ``submit`` (or the one waiting) and by :meth:`close`.
    In line, an adaptive committer also writes a checkpoint that goes through the page cache
    itself (no copy, no hand-over: :data:`INLINE_CHEAP_WRITES`).
    With ``background`` false the hashing happens in ``submit`` on the caller's thread (for small
    states: a thread handing each state over costs the caller more, in GIL switches, than
    hashing it), and checkpoint writes still go to the writer threads when ``async_writes``;
    with both false everything happens in ``submit``. With ``background`` None (adaptive) the
    first :data:`ADAPT_STATES` states are committed in ``submit`` and timed; if the median took
    :data:`BACKGROUND_MIN_COMMIT_S` or more, every later state goes to a commit process where
    the platform can fork (:data:`USE_COMMIT_PROCESS`, :mod:`pocv._commitproc`: the caller copies
    the state into a shared ring, or for a pure step (no ``copy``) sends only where its tensors'
    data lies and the child reads it from the caller's memory; the child hashes the state and
    writes its checkpoint; the caller
    appends the digests it sends back, in order; a state the ring cannot take is committed in
    line after those before it). Elsewhere the next window goes to the committer thread, and
    from then on the mode whose states came faster (median time between submits) is kept, the
    other measured again now and then (:data:`ADAPT_HOLD`). A switch to the thread starts it
    after the states before are committed; a switch back waits until it has committed every
    state handed over: the order holds. The order and the files are the same in every mode.

    ``skip_behind`` (best effort, the prover's ``auto`` and budget policies): when the writers
    are behind (the limits above reached), a checkpoint is not kept instead of waiting, so the
    step never waits on the disk and the kept states adapt to what it sustains; the leaf is
    appended all the same (the root does not change) and the indices are listed in ``skipped``.
    ``s_0`` is always kept, and an answer recomputes a state from the nearest earlier kept one
    (:meth:`TraceStore.nearest_checkpoint`).
    """

    def __init__(self, store: TraceStore, tree: IncrementalTree, *, depth: int = 2, background: bool | None = True,
                 copy: bool = False, writers: int = CHECKPOINT_WRITERS, async_writes: bool | None = None,
                 skip_behind: bool = False) -> None:
        if depth < 1:
            raise InputError(f"committer queue depth must be positive, got {depth}")
        if writers < 1:
            raise InputError(f"checkpoint writers must be positive, got {writers}")
        self.store = store
        self.tree = tree
        self.copy = copy
        self.committed = -1  # index of the last state committed
        #: best effort: a checkpoint whose write would wait for the disk is not kept (its leaf is)
        self.skip_behind = skip_behind
        #: the checkpoints not kept so (skip_behind)
        self.skipped: list[int] = []
        self._error: BaseException | None = None
        self._stop = False
        self._queue: queue.Queue[tuple[int, _Snapshot] | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()  # one aligned write buffer per writer thread
        self._pending = threading.Condition()
        self._pending_bytes = 0
        self._pending_count = 0
        self._timings: list[float] | None = [] if background is None else None  # adaptive: inline commits timed
        self._adaptive = background is None
        #: an adaptive committer: in line, page-cache checkpoints are written by the caller too
        self._adaptive_inline = background is None
        self._cheap_writes: bool | None = None  # the last checkpoint went through the page cache
        self._last_submit: float | None = None  # adaptive: when the last submit began
        self._cycles: list[float] = []  # ... the times between submits in this window
        self._medians: dict[bool, float] = {}  # ... on the thread? -> its last window's median
        self._probing = False  # ... this window measures the mode not kept
        self._hold = 0  # ... windows left before the other mode is measured again
        self._hold_next = ADAPT_HOLD
        #: adaptive: (state index, on the thread?) at each switch of mode
        self.switches: list[tuple[int, bool]] = []
        #: adaptive: states from this index on go to a commit process (None: not chosen)
        self.process_from: int | None = None
        self._proc: CommitProcess | None = None
        self._proc_writer: _StateWriter | None = None  # the child's
        self._unflushed = 0  # leaves from the commit process not yet appended to leaves.bin
        if (background is not False) if async_writes is None else async_writes:
            self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="pocv-write")
        if background:
            self._start_thread()

    @property
    def background(self) -> bool:
        """Whether states are hashed on the committer thread now."""
        return self._thread is not None

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._work, name="pocv-commit", daemon=True)
        self._thread.start()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, index: int, state: State) -> None:
        """Commit ``s_index`` (the leaf, and the checkpoint when ``index`` is a multiple of c)."""
        self._raise_if_failed()
        if self._adaptive:
            self._adapt(index)
        if self.process_from is not None and self._to_process(index, state):
            return
        if self._thread is None:  # hashed here, before the next step runs; a checkpoint written
            # later by a writer thread is copied first if the next step may modify its input
            later = (self._pool is not None and index % self.store.checkpoint_every == 0
                     and not (self._adaptive_inline and INLINE_CHEAP_WRITES and self._cheap_writes))
            t0 = time.perf_counter()
            self._commit(index, snapshot(state, copy=self.copy and later))
            if self._timings is not None:
                self._timings.append(time.perf_counter() - t0)
            return
        snap = snapshot(state, copy=self.copy)
        while True:
            try:
                self._queue.put((index, snap), timeout=0.05)
                return
            except queue.Full:
                self._raise_if_failed()
                if not self._thread.is_alive():  # pragma: no cover - the thread records every error
                    raise StorageError("the commit thread stopped") from None

    def _adapt(self, index: int) -> None:
        """An adaptive committer's bookkeeping at the start of ``submit(index)``: the time since
        the last submit joins this window; at the end of a window, the mode for the next one."""
        now = time.perf_counter()
        if self._last_submit is not None:
            self._cycles.append(now - self._last_submit)
        self._last_submit = now
        if len(self._cycles) < ADAPT_STATES:
            return
        on_thread = self._thread is not None
        self._medians[on_thread] = statistics.median(self._cycles)
        self._cycles.clear()
        if len(self._medians) == 1:  # the first window, in line: cheap commits stay there
            assert self._timings is not None
            cheap = statistics.median(self._timings) < BACKGROUND_MIN_COMMIT_S
            self._timings = None
            if cheap:
                self._adaptive = False
                return
            if USE_COMMIT_PROCESS and _commitproc.available():  # kept for the rest of the run
                self._adaptive = False
                self.process_from = index
                return
            self._probing = True
            self._switch(index, not on_thread)
        elif self._probing:  # the mode not kept was measured: keep the faster
            self._probing = False
            best = thread_wins(self._medians)
            if best == on_thread:  # the mode just measured was faster: kept
                self._hold = self._hold_next = ADAPT_HOLD
            else:  # slower: back to the kept one, and measured again after twice as long
                self._hold_next = min(2 * self._hold_next, ADAPT_MAX_HOLD)
                self._hold = self._hold_next
                self._switch(index, best)
        elif self._hold > 0:
            self._hold -= 1
        else:
            self._probing = True
            self._switch(index, not on_thread)

    def _switch(self, index: int, to_thread: bool) -> None:
        """Commit ``s_index`` onwards on the committer thread, or on the caller's once the thread
        has committed every state handed to it (the order holds)."""
        if to_thread:
            self._start_thread()
        else:
            assert self._thread is not None
            self._put_sentinel()
            self._thread.join()
            self._thread = None
            self._raise_if_failed()
        self.switches.append((index, to_thread))
        self._last_submit = None  # the switch itself is not a state's time

    @property
    def process(self) -> bool:
        """Whether states are handed to a commit process now."""
        return self._proc is not None

    def _to_process(self, index: int, state: State) -> bool:
        """Hand ``s_index`` to the commit process (started at the first): False where it cannot
        go there (a state of another schema, not of CPU tensors in place, larger than a slot),
        once every state handed over before it is committed, so the caller commits it here."""
        proc = self._proc
        if proc is None:
            size = cached_size(state)  # None: GPU tensors, a view: no ring for them
            if size is not None:
                self.store.flush()
                with contextlib.suppress(OSError):  # no process to be had: fork or the shared ring refused
                    proc = self._proc = CommitProcess(size, self.store.checkpoint_every, self._child_write,
                                                      self._child_prepare)
            if proc is None:  # the thread, measured against this one as where there is no fork
                self.process_from = None
                self._adaptive = self._probing = True
                self._switch(index, True)
                return False
        # a pure step (no copy asked for) leaves s_index as it is: the child reads it from here
        sent, acks = self._guard(lambda: proc.send(index, state, skip_behind=self.skip_behind, by_ref=not self.copy))
        self._take(acks)
        if not sent:
            self._take(self._guard(proc.drain))
        return sent

    def _guard(self, call: Callable[[], _R]) -> _R:
        """``call``'s result; its error (the child's, or the child gone) kept for close too."""
        try:
            return call()
        except BaseException as e:
            if self._error is None:
                self._error = e
            raise

    def _take(self, acks: list[Ack]) -> None:
        """The commit process's states, in order: their leaves appended, the tree grown."""
        for index, digest, skipped in acks:
            self.store.append_leaf(digest)
            self.tree.append(digest)
            self.committed = index
            if skipped:
                self.skipped.append(index)
        self._unflushed += len(acks)
        if self._unflushed >= _LEAF_FLUSH_EVERY:
            self.store.flush()
            self._unflushed = 0

    def _child_prepare(self) -> None:
        """In the commit process, before its loop: its own locks and write buffer."""
        _commitproc.fresh_locks(self.store, self.store._pack)
        self._proc_writer = _StateWriter()

    def _child_write(self, index: int, view: memoryview, size: int) -> None:
        """In the commit process: checkpoint ``index`` into its slot (the leaves are the parent's)."""
        self.store.write_checkpoint(index, [view], writer=self._proc_writer, flush=False, size=size)

    def _commit(self, index: int, snap: _Snapshot) -> None:
        state = snap.wait()
        if index % self.store.checkpoint_every == 0:
            pieces: list[bytes | memoryview]
            if isinstance(state, Frozen):  # copied into its canonical bytes: hashed and written as they are
                digest, pieces, size = state.digest(), [state.data], len(state.data)
            else:  # the digest and the pieces from one look at the tensors (views of their memory:
                # ``state`` is held until they are written)
                digest, pieces, size = digest_and_pieces(state)
            self.store.append_leaf(digest)
            cheap = self.store.writes_through_page_cache(size)
            self._cheap_writes = cheap
            if self._pool is None or (INLINE_CHEAP_WRITES and cheap and (threading.current_thread() is self._thread
                                                                         or self._adaptive_inline)):
                # synchronous, or a write into the page cache on the thread that hashed the state
                # (one copy by the kernel, cheaper than handing the state to a writer thread)
                self.store.write_checkpoint(index, pieces, size=size)  # flushes the leaves up to index first
            else:
                self.store.flush()  # the leaves up to index reach the OS before the checkpoint can
                self._write_later(index, pieces, size, state)
        else:
            digest = state.digest() if isinstance(state, Frozen) else state_digest(state)
            self.store.append_leaf(digest)
        self.tree.append(digest)
        self.committed = index

    def _write_later(self, index: int, pieces: list[bytes | memoryview], size: int, keep: object) -> None:
        """Hand checkpoint ``index`` (``size`` bytes) to a writer thread (``keep``, the state the
        pieces view, is held until it is written); wait while too much is waiting already."""
        with self._pending:
            while self._pending_count and (self._pending_count >= MAX_PENDING_WRITES
                                           or self._pending_bytes + size > MAX_PENDING_WRITE_BYTES):
                if self._error is not None:
                    raise self._error
                if self.skip_behind and index:  # the disk is behind: keep the leaf only (s_0 always kept)
                    self.skipped.append(index)
                    return
                self._pending.wait(0.05)
            self._pending_count += 1
            self._pending_bytes += size
        assert self._pool is not None
        self._pool.submit(self._write, index, pieces, size, keep)

    def _write(self, index: int, pieces: list[bytes | memoryview], size: int, keep: object) -> None:
        # ``keep``: the state ``pieces`` may view, alive until this returns
        try:
            if self._error is None and not self._stop:
                writer = getattr(self._local, "writer", None)
                if writer is None:
                    writer = self._local.writer = _StateWriter()
                self.store.write_checkpoint(index, pieces, writer=writer, flush=False, size=size)
        except BaseException as e:  # surfaced on the caller's thread by submit/close
            if self._error is None:
                self._error = e
        finally:
            with self._pending:
                self._pending_count -= 1
                self._pending_bytes -= size
                self._pending.notify_all()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop:
                return
            if self._error is not None:
                continue
            try:
                self._commit(*item)
            except BaseException as e:  # surfaced on the caller's thread by submit/close
                if self._error is None:
                    self._error = e

    def close(self) -> None:
        """Wait until every submitted state is committed and every checkpoint written; raise the
        first error of the committer or a writer, if any."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if self._error is not None:
                proc.kill()
            else:
                self._take(self._guard(proc.close))
        if self._thread is not None:
            self._put_sentinel()
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop after the state being committed and the writes under way (the caller failed);
        never raises."""
        self._stop = True
        if self._proc is not None:
            self._proc.kill()
            self._proc = None
        if self._thread is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._put_sentinel()
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _put_sentinel(self) -> None:
        while True:
            try:
                self._queue.put(None, timeout=0.05)
                return
            except queue.Full:
                if self._thread is None or not self._thread.is_alive():
                    return
