"""A commit process: small states hashed and written on another core, outside this process's GIL.

The adaptive :class:`~pocv.trace.Committer` (states under ``BACKGROUND_MIN_BYTES``) hands each
state it does not commit in line to a child forked from the prover. ``submit`` copies the
state's canonical bytes into a slot of a shared-memory ring (its tensors' data only, once the
slot holds a state of the same schema: 0.3 MB in 40-90 us) and sends the slot's number down a
pipe; the child hashes the bytes, writes the checkpoint into its slot of the pack, and sends
back the digest, which the parent appends to the leaves and the tree in order. For a pure step
(``send(by_ref=True)``: nothing writes a state's tensors once handed over) the parent does not
even copy the data: it sends each tensor's address, the child copies the data into the slot
itself with ``process_vm_readv`` (on its own core), and the parent holds the tensors until their
digest comes back, then checks that no tensor's version counter moved meanwhile. The parent
reads the digests only when it needs a slot (once every :data:`RING_SLOTS` states or so: a
system call right after a step costs 30-40 us here), and at the end. The parent keeps the
leaves file and the tree; the child writes only checkpoint slots (a checkpoint may land before
its leaf: resume ignores a checkpoint past the leaves and checks each against its leaf,
:meth:`~pocv.trace.TraceStore.resume_point`).

Why a process: a thread hashing and writing a training step's 0.3 MB state takes the GIL from
the step for its Python glue and the hand-over (the caller measured 1.1 ms of CPU a state on the
thread against 0.7 ms in line, :data:`~pocv.trace.BACKGROUND_MIN_COMMIT_S`), and a child
started by ``spawn`` imports torch again (4 s and 250 MB here). A forked child shares the
prover's memory copy-on-write and starts in milliseconds.

Fork safety: the child runs only this module's loop: pipe reads and writes, BLAKE3 over the ring
(one thread: states this small never reach the chunk pool), ``pwritev`` into the pack, whose
locks it replaces with its own at once. It takes no lock another thread of the parent may have
held at the fork, imports nothing, never touches torch, and leaves with ``os._exit`` (no atexit
handler, no finalizer of the parent's objects runs in it). It ignores SIGINT (the parent decides
when to stop it), exits when the parent's end of the pipe closes, and is killed by the kernel
when the parent's forking thread ends (PR_SET_PDEATHSIG: a prover killed mid-run leaves nothing
writing into its trace).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import mmap
import operator
import os
import select
import signal
import struct
import sys
import termios
import threading
import warnings
from collections.abc import Callable
from typing import Any, Final

from pocv.encoding import State, data_refs, digest_encoded, fill_encoding
from pocv.errors import SetupError, StorageError

#: slots of the ring: states copied whose digests the parent has not read back at most (then
#: ``send`` reads them, waiting if the child is behind)
RING_SLOTS: Final = 8
#: parent -> child: state index (-1: stop), slot, bytes, flags
_MSG: Final = struct.Struct("<qIIB")
#: flag: a best-effort run (the prover's auto and budget policies): the child does not write a
#: checkpoint while :data:`BEHIND` states or more wait for it (the disk is behind), so the
#: parent's steps do not wait for the disk
SKIP: Final = 1
BEHIND: Final = RING_SLOTS // 2
#: flag: the state's tensor data is not in the slot: the child reads it from the parent's memory
#: (``process_vm_readv``) into the slot, whose headers are the state's; the message goes on with
#: a count and, for each tensor, (offset in the slot, address in the parent, bytes)
REF: Final = 2
_COUNT: Final = struct.Struct("<I")
_REF: Final = struct.Struct("<QQQ")
#: the most tensors a state read by reference may have (IOV_MAX: one system call)
MAX_REFS: Final = 1024
#: child -> parent: state index (-1: an error, its message of the given length follows; -2: the
#: child's first record, whether it can read the parent's memory), the state's digest, whether its
#: checkpoint was skipped
_ACK: Final = struct.Struct("<q32s?")
_HELLO: Final = -2
#: the most bytes of an error message the child sends
_MAX_ERROR: Final = 4096

#: (state index, digest, checkpoint skipped) of each state the child committed
Ack = tuple[int, bytes, bool]
#: a state the child reads from the parent: its tensors' names, the tensors, their versions when sent
_Held = tuple[tuple[str, ...], list[Any], tuple[int, ...]]


def available() -> bool:
    """Whether this platform can fork a commit process (Linux: fork after threads is sound for
    the child's loop; macOS's system libraries are not fork-safe once threads ran)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class CommitProcess:
    """The parent's handle of a forked commit child (module docstring).

    ``write(index, view, size)`` runs in the child to keep checkpoint ``index`` (its canonical
    bytes, ``view`` into the ring); ``every``: the store's checkpoint interval; ``prepare``
    runs in the child before its loop (fresh locks for the objects it will use)."""

    def __init__(self, slot_bytes: int, every: int, write: Callable[[int, memoryview, int], None],
                 prepare: Callable[[], None]) -> None:
        self.slot_bytes = -(-slot_bytes // mmap.PAGESIZE) * mmap.PAGESIZE
        #: whether the child reads a state's tensors from this process's memory (``send(by_ref=)``):
        #: found out by the child at its start (Yama's ptrace scope or a seccomp rule may forbid it:
        #: then every state is copied)
        self.by_ref = False
        self._held: dict[int, _Held] = {}  # index -> the tensors the child reads, by reference
        probe = ctypes.create_string_buffer(os.urandom(16), 16)  # what the child reads back at its start
        self._ring = mmap.mmap(-1, self.slot_bytes * RING_SLOTS)  # MAP_SHARED | MAP_ANONYMOUS: the child sees it
        self._view = memoryview(self._ring)
        self._cell = ctypes.c_char.from_buffer(self._ring)  # the ring's address, for memmove into it
        self._base = ctypes.addressof(self._cell)
        self._free = list(range(RING_SLOTS - 1, -1, -1))
        self._filled: list[object] = [None] * RING_SLOTS  # the layout token of the bytes in each slot
        self._sizes = [0] * RING_SLOTS  # ... and their size
        self._slots: dict[int, int] = {}  # state index -> its slot, while in flight
        #: states handed to the child so far, and of those, the ones it read from this process
        self.sent = 0
        self.sent_by_ref = 0
        self._buf = b""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        parent = os.getpid()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of fork() in a process with threads: the child runs only the
                # loop below (module docstring), which needs no lock another thread may hold
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:  # no process to be had (a process limit, memory): nothing left open
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            del self._cell
            self._view.release()
            self._ring.close()
            raise
        if pid == 0:  # the child
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _die_with(parent)
                os.close(down_w)
                os.close(up_r)
                os.write(up_w, _ACK.pack(_HELLO, bytes(32), _can_read(parent, probe)))
                prepare()
                _serve(down_r, up_w, self._view, self._base, self.slot_bytes, every, write)
                code = 0
            finally:
                os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self.pid = pid
        self._down = down_w
        self._up = up_r
        self._exit: int | None = None
        hello = _read_exact(up_r, _ACK.size)  # the child's first record: it has started
        if hello is None or _ACK.unpack(hello)[0] != _HELLO:
            self._shut()
            del self._cell
            self._view.release()
            self._ring.close()
            raise OSError(f"the commit process did not start ({self._reap()})")
        self.by_ref = bool(_ACK.unpack(hello)[2])
        os.set_blocking(up_r, False)

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    def send(self, index: int, state: State, *, skip_behind: bool, by_ref: bool = False) -> tuple[bool, list[Ack]]:
        """Copy ``s_index``'s canonical encoding into a free slot and hand it to the child:
        (whether it went, the states the child committed that were read back to free a slot,
        in order). It does not go where it is not a small state of a cached schema, or larger
        than a slot: nothing is sent then.

        ``by_ref`` (the caller's promise that nothing writes the state's tensors until the
        child has read them: a pure step, Kernel.pure_step): once a slot holds a state of this
        schema, only the addresses of its tensors' data go down the pipe, and the child copies
        the data into the slot itself (``process_vm_readv``, where :attr:`by_ref`): the copy is
        made on the child's core, not between this process's steps. This process holds the
        tensors until the child's digest comes back, and then checks each tensor's version
        counter: a tensor written meanwhile (the promise broken) raises SetupError."""
        acks: list[Ack] = []
        while not self._free:
            acks += self.acks(block=True)
        slot = self._free[-1]
        flags = SKIP if skip_behind else 0
        refs = data_refs(state, self._filled[slot]) if by_ref and self.by_ref else None
        if refs is not None and len(refs[0]) <= 3 * MAX_REFS:
            flat, tensors, names = refs
            self._held[index] = (names, tensors, tuple(map(_VERSION, tensors)))
            size = self._sizes[slot]
            self._write(_MSG.pack(index, slot, size, flags | REF) + _COUNT.pack(len(flat) // 3)
                        + _packer(len(flat)).pack(*flat))
            self.sent_by_ref += 1
        else:
            off = slot * self.slot_bytes
            filled = fill_encoding(state, self._view[off : off + self.slot_bytes], self._filled[slot],
                                   address=self._base + off)
            if filled is None:
                return False, acks
            self._filled[slot], size = filled
            self._sizes[slot] = size
            self._write(_MSG.pack(index, slot, size, flags))
        self._free.pop()
        self._slots[index] = slot
        self.sent += 1
        return True, acks

    def acks(self, *, block: bool) -> list[Ack]:
        """The states the child committed since the last call, in order; with ``block``, at
        least one (none while none is in flight). StorageError if the child failed or died."""
        out: list[Ack] = []
        while True:
            if block and not out and self._slots:
                select.select([self._up], [], [])
            try:
                data = os.read(self._up, 64 * _ACK.size)
            except BlockingIOError:
                data = None
            if data == b"":
                raise StorageError(f"the commit process stopped ({self._reap()}) with {len(self._slots)} states "
                                   "not committed")
            if data:
                self._buf += data
            while len(self._buf) >= _ACK.size:
                index, digest, skipped = _ACK.unpack_from(self._buf)
                if index < 0:
                    raise StorageError(self._error_message())
                self._buf = self._buf[_ACK.size :]
                self._free.append(self._slots.pop(index))
                held = self._held.pop(index, None)
                if held is not None:
                    _unchanged(index, held)
                out.append((index, digest, skipped))
            if data is None and (out or not block or not self._slots):
                return out

    def drain(self) -> list[Ack]:
        """Every state in flight, committed (in order)."""
        out: list[Ack] = []
        while self._slots:
            out += self.acks(block=True)
        return out

    def close(self) -> list[Ack]:
        """The states in flight committed, then the child stopped and reaped."""
        try:
            out = self.drain()
            self._write(_MSG.pack(-1, 0, 0, 0))
        finally:
            self._shut()
        return out

    def kill(self) -> None:
        """Stop the child at once (the run failed); never raises."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        self._shut()

    # -- internals -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:  # one write for a message of PIPE_BUF bytes or fewer (a state of 170 tensors)
                view = view[os.write(self._down, view) :]
        except BrokenPipeError:
            raise StorageError(f"the commit process stopped ({self._reap()})") from None

    def _error_message(self) -> str:
        """The child's error after the record at the head of the buffer (read to its end)."""
        os.set_blocking(self._up, True)
        rest = bytearray(self._buf[_ACK.size :])
        while True:
            chunk = os.read(self._up, _MAX_ERROR)
            if not chunk:
                break
            rest += chunk
        self._reap()
        return bytes(rest[:_MAX_ERROR]).decode("utf-8", "replace") or "the commit process failed"

    def _reap(self) -> str:
        if self._exit is None:
            _, status = os.waitpid(self.pid, 0)
            self._exit = status
        code = os.waitstatus_to_exitcode(self._exit)
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def _shut(self) -> None:
        for fd in (self._down, self._up):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._down = self._up = -1
        with contextlib.suppress(ChildProcessError):
            self._reap()
        self._slots.clear()
        self._held.clear()


_VERSION: Final = operator.attrgetter("_version")  # a torch tensor's version counter: +1 a write in place


@functools.lru_cache(maxsize=16)
def _packer(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}Q")


def _unchanged(index: int, held: _Held) -> None:
    """SetupError unless every tensor of ``s_index`` read by the child kept its version."""
    names, tensors, versions = held
    if tuple(map(_VERSION, tensors)) == versions:
        return
    for name, t, version in zip(names, tensors, versions, strict=True):
        if t._version != version:
            raise SetupError(f"tensor {name!r} of s_{index} was written while the commit process read it: the "
                             "kernel's step writes its input state, so it is not pure; a kernel declares "
                             "pure_step only for a step that returns new tensors (pocv.kernels.base.Kernel.pure_step)")


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


def _vm_readv() -> Any:
    """libc's ``process_vm_readv``, typed; None where there is none."""
    try:
        f = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return None
    f.restype = ctypes.c_ssize_t
    f.argtypes = (ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                  ctypes.c_ulong)
    return f


def _can_read(parent: int, probe: Any) -> bool:
    """In the child: whether it can read the parent's memory (``probe``, the same bytes in both)."""
    readv = _vm_readv()
    if readv is None:
        return False
    mine = ctypes.create_string_buffer(len(probe))
    local = _Iovec(ctypes.addressof(mine), len(probe))
    remote = _Iovec(ctypes.addressof(probe), len(probe))
    return bool(readv(parent, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) == len(probe)
                and mine.raw == probe.raw)


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _die_with(parent: int) -> None:
    """Have the kernel kill this child when the thread that forked it ends (PR_SET_PDEATHSIG): a
    prover killed mid-run leaves no child writing into its trace while a resumed run reads it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(1)  # no guard, or the parent is gone already


_PR_SET_PDEATHSIG: Final = 1


def _waiting(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` (FIONREAD): the states behind, once divided by the
    length of a state's message."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def _read_parent(readv: Any, parent: int, index: int, slot: int, refs: bytes) -> None:
    """In the child: copy each tensor of ``s_index`` from the parent's memory to its place in
    the slot at address ``slot`` (``refs``: (offset, parent's address, bytes) each)."""
    n = len(refs) // _REF.size
    vals = _packer(3 * n).unpack(refs)
    local, remote = (_Iovec * n)(), (_Iovec * n)()
    total = 0
    for j in range(n):
        off, ptr, size = vals[3 * j : 3 * j + 3]
        local[j].base, local[j].len = slot + off, size
        remote[j].base, remote[j].len = ptr, size
        total += size
    got = readv(parent, local, n, remote, n, 0) if readv is not None else -1
    if got != total:
        err = ctypes.get_errno()
        raise StorageError(f"the commit process could not read s_{index} from the prover: read {got} of {total} "
                           f"bytes ({os.strerror(err) if err else 'no process_vm_readv'})")


def _serve(down: int, up: int, ring: memoryview, base: int, slot_bytes: int, every: int,
           write: Callable[[int, memoryview, int], None]) -> None:
    """The child's loop: hash each state handed over, keep its checkpoint, send its digest."""
    parent = os.getppid()
    readv = _vm_readv()
    try:
        while True:
            msg = _read_exact(down, _MSG.size)
            if msg is None:  # the parent is gone
                return
            index, slot, size, flags = _MSG.unpack(msg)
            if index < 0:
                return
            length = _MSG.size
            if flags & REF:
                head = _read_exact(down, _COUNT.size)
                refs = _read_exact(down, _REF.size * _COUNT.unpack(head)[0]) if head is not None else None
                if refs is None:
                    return
                length += _COUNT.size + len(refs)
                _read_parent(readv, parent, index, base + slot * slot_bytes, refs)
            view = ring[slot * slot_bytes : slot * slot_bytes + size]
            digest = digest_encoded(view)
            skipped = False
            if index % every == 0:
                if flags & SKIP and index and _waiting(down) // length >= BEHIND:  # s_0 is always kept
                    skipped = True
                else:
                    write(index, view, size)
            os.write(up, _ACK.pack(index, digest, skipped))
    except BaseException as e:  # the parent raises it as a StorageError
        text = (str(e) if isinstance(e, StorageError) else f"the commit process failed: {type(e).__name__}: {e}")
        with contextlib.suppress(OSError):
            os.write(up, _ACK.pack(-1, bytes(32), False) + text.encode()[:_MAX_ERROR])
        raise


def fresh_locks(*objects: Any) -> None:
    """Give each object's ``_lock`` / ``_pack_lock`` a new lock (in the child: one held by a
    parent's thread at the fork would never be released)."""
    for obj in objects:
        for name in ("_lock", "_pack_lock"):
            if obj is not None and hasattr(obj, name):
                setattr(obj, name, threading.Lock())
