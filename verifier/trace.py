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

Which states are kept is a :class:`CheckpointPolicy` (``auto`` by default: the fewest checkpoints
such that answering a default challenge recomputes at most 5% of the job, within an 8 GiB disk
budget; or ``all``, ``every:C``, ``budget:SIZE``); the resolved interval c is what trace.json
records, so the format is unchanged. The prover commits through a :class:`Committer`: one
background thread hashes s_i, appends its leaf and writes its checkpoint (O_DIRECT where the file
system allows, so a new file costs no page-cache allocation) while s_(i+1) computes, in order,
so every invariant below holds at every instant of a run.

Durability: during a run nothing is fsynced (a killed process loses nothing the page cache
holds, and after a power loss the digest check above discards whatever did not reach the
disk). ``sync()`` fsyncs the leaves before the commitment is signed, and the commitment itself
is fsynced, so a signed root always has its leaves on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import queue
import re
import secrets
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import torch

from pocv.challenge import sample_size
from pocv.encoding import State, Tensor, digest_encoded, digest_pieces, encoded_pieces, state_digest
from pocv.errors import EvidenceError, InputError, StorageError
from pocv.jobs import JobSpec
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE, DIGEST_SIZE, MAX_STATE_BYTES
from pocv.merkle import IncrementalTree
from pocv.store import atomic_write, atomic_writer

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

    def __init__(self, root: str | os.PathLike[str], spec: JobSpec, *, checkpoint_every: int,
                 provider: str | None = None) -> None:
        self.root = Path(root)
        self.spec = spec
        self.checkpoint_every = checkpoint_every
        #: the provider of the kernel that computed this trace ("pocv", "dist==version"); None in
        #: a trace written before it was recorded
        self.provider = provider
        self._leaf_file: BinaryIO | None = None
        self._pending = bytearray()
        self._writer = _StateWriter()

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
            return cls(root, existing, checkpoint_every=every, provider=recorded)
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
        store = cls(root, spec, checkpoint_every=checkpoint_every, provider=provider)
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
        self.flush()
        if self._leaf_file is not None:
            self._leaf_file.close()
            self._leaf_file = None

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_path(self, index: int) -> Path:
        return self.root / "checkpoints" / f"{index:012d}.state"

    def write_checkpoint(self, index: int, encoded_state: bytes | Sequence[bytes | memoryview], *,
                         writer: _StateWriter | None = None, flush: bool = True) -> None:
        """Write checkpoint ``index`` (its canonical bytes, or pieces that concatenate to them)
        atomically, after the leaves up to ``index``; not fsynced (see the module docstring).

        ``flush`` false: the caller has flushed those leaves already (a writer thread of the
        :class:`Committer`, which must not touch the leaves); ``writer``: that thread's own."""
        if flush:
            self.flush()  # leaves up to index are written before the checkpoint that needs them
        pieces = [encoded_state] if isinstance(encoded_state, bytes | bytearray | memoryview) else encoded_state
        try:
            (writer or self._writer).write(self.checkpoint_path(index), pieces)
        except OSError as e:
            raise StorageError(f"cannot write checkpoint {index} in {str(self.root)!r}: {e.strerror}") from e

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


class _StateWriter:
    """Writes checkpoint files, bypassing the page cache where the file system allows.

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

    def write(self, path: Path, pieces: Sequence[bytes | memoryview]) -> None:
        """Write the concatenation of ``pieces`` to ``path`` atomically (temporary file, rename)."""
        total = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in pieces)
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
        pos = 0
        for p in pieces:
            n = p.nbytes if isinstance(p, memoryview) else len(p)
            view[pos : pos + n] = p if isinstance(p, bytes) else p.cast("B")
            pos += n
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

    def __init__(self, state: State, event: Any = None) -> None:
        self.state = state
        self.event = event

    def wait(self) -> State:
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
    and cloned otherwise.
    """
    gpu = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.device.type == "cuda"]
    if not gpu:
        if not copy:
            return _Snapshot(state)
        return _Snapshot({k: v.clone() if isinstance(v, torch.Tensor) else v.copy() for k, v in state.items()})
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
#: an adaptive committer (``background=None``) hashes the first states this many on the
#: caller's thread and times them ...
ADAPT_STATES: Final = 4
#: ... then moves the hashing to its own thread when committing one state took this long or more
#: (the median): handing a state over costs the caller 20-50 us in thread switches, a 64 KiB
#: state's hash about as much, a training step's 0.3 MB state's 0.3 ms
BACKGROUND_MIN_COMMIT_S: Final = 150e-6


class Committer:
    """Hashes states, appends their leaves and writes checkpoints off the caller's thread, in
    order, while the caller computes the next step (issue 16 point 1).

    ``submit(i, state)`` hands over ``s_i`` (frozen by :func:`snapshot`) and returns at once
    unless ``depth`` states are already waiting. One thread (the committer) hashes each state,
    appends its leaf and, for a checkpoint, flushes the leaves up to it to the OS and hands the
    write to one of :data:`CHECKPOINT_WRITERS` writer threads (at most
    :data:`MAX_PENDING_WRITES` states or :data:`MAX_PENDING_WRITE_BYTES` waiting; the committer
    waits beyond that), so the disk's latency never stalls the hashing. Checkpoints may land out
    of order, each atomically (temporary file, rename) and only after its leaf: a trace on disk
    is always a prefix of the job's leaves plus checkpoints that match them, and a resumed run
    reaches the same root. The committer is the only writer of ``store``'s leaves and of
    ``tree`` until :meth:`close`, which returns once every leaf and checkpoint is written.

    An error on any of these threads (a full disk, an unencodable state) stops the committing at
    that state and is raised by the next ``submit`` (or the one waiting) and by :meth:`close`.
    With ``background`` false the hashing happens in ``submit`` on the caller's thread (for small
    states: a thread handing each state over costs the caller more, in GIL switches, than
    hashing it), and checkpoint writes still go to the writer threads when ``async_writes``;
    with both false everything happens in ``submit``. With ``background`` None (adaptive) the
    first :data:`ADAPT_STATES` states are committed in ``submit`` and timed, and the committer
    thread takes over from then on if the median took :data:`BACKGROUND_MIN_COMMIT_S` or more
    (the states before it are committed by then: the order holds). The order and the files are
    the same in every mode.
    """

    def __init__(self, store: TraceStore, tree: IncrementalTree, *, depth: int = 2, background: bool | None = True,
                 copy: bool = False, writers: int = CHECKPOINT_WRITERS, async_writes: bool | None = None) -> None:
        if depth < 1:
            raise InputError(f"committer queue depth must be positive, got {depth}")
        if writers < 1:
            raise InputError(f"checkpoint writers must be positive, got {writers}")
        self.store = store
        self.tree = tree
        self.copy = copy
        self.committed = -1  # index of the last state committed
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
        if self._thread is None:  # hashed here, before the next step runs; a checkpoint written
            # later by a writer thread is copied first if the next step may modify its input
            later = self._pool is not None and index % self.store.checkpoint_every == 0
            t0 = time.perf_counter()
            self._commit(index, snapshot(state, copy=self.copy and later))
            if self._timings is not None:
                self._timings.append(time.perf_counter() - t0)
                if len(self._timings) >= ADAPT_STATES:
                    if statistics.median(self._timings) >= BACKGROUND_MIN_COMMIT_S:
                        self._start_thread()
                    self._timings = None  # decided, once
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

    def _commit(self, index: int, snap: _Snapshot) -> None:
        state = snap.wait()
        if index % self.store.checkpoint_every == 0:
            pieces = encoded_pieces(state)
            digest = digest_pieces(pieces)
            self.store.append_leaf(digest)
            if self._pool is None:
                self.store.write_checkpoint(index, pieces)  # flushes the leaves up to index first
            else:
                self.store.flush()  # the leaves up to index reach the OS before the checkpoint can
                self._write_later(index, pieces)
        else:
            digest = state_digest(state)
            self.store.append_leaf(digest)
        self.tree.append(digest)
        self.committed = index

    def _write_later(self, index: int, pieces: list[bytes | memoryview]) -> None:
        """Hand checkpoint ``index`` to a writer thread (``pieces`` keep the state alive until
        it is written); wait while too much is waiting already."""
        size = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in pieces)
        with self._pending:
            while self._pending_count and (self._pending_count >= MAX_PENDING_WRITES
                                           or self._pending_bytes + size > MAX_PENDING_WRITE_BYTES):
                if self._error is not None:
                    raise self._error
                self._pending.wait(0.05)
            self._pending_count += 1
            self._pending_bytes += size
        assert self._pool is not None
        self._pool.submit(self._write, index, pieces, size)

    def _write(self, index: int, pieces: list[bytes | memoryview], size: int) -> None:
        try:
            if self._error is None and not self._stop:
                writer = getattr(self._local, "writer", None)
                if writer is None:
                    writer = self._local.writer = _StateWriter()
                self.store.write_checkpoint(index, pieces, writer=writer, flush=False)
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
