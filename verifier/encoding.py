"""Canonical bytes of tensors and states, and the state digest: the root of a state's subtree.

A *state* is a mapping of names to tensors (torch or numpy). Its canonical encoding
(format version 1, unchanged by the state commitment format 2)::

    b"PCVS" | version u8 (=1) | count u16
    then, for each tensor in ascending order of its UTF-8 name:
        name_len u8 | name (UTF-8, [A-Za-z0-9_.-], 1..64 bytes)
        dtype u8 (see DTYPE_CODES) | ndim u8 (0..8) | dims u64[ndim]
        data: prod(dims) * itemsize bytes, C order, little-endian

All integers are little-endian. There is exactly one encoding per state: the bytes do not
depend on the device, strides, memory layout or the order the mapping was built in, and the
decoder refuses anything that is not canonical (unsorted or duplicate names, trailing bytes).

The state digest (state commitment format :data:`STATE_TREE_VERSION` = 2, docs/protocol.md
§4.1) is the root of a Merkle subtree over those bytes, so that a state can be opened in parts:

    leaf 0       H_keyed(K_HEADER, u8 STATE_TREE_VERSION | u32 CHUNK_BYTES | header bytes)
                 (header bytes: the canonical encoding with every tensor's data left out)
    leaf 1 + c   H_keyed(K_CHUNK, chunk c)   each tensor's data in CHUNK_BYTES pieces, in
                 canonical order (a tensor's last chunk may be shorter; chunks never span tensors)
    node         H_keyed(K_STATE_NODE, l || r), the RFC 6962 shape (pocv.merkle.keyed_root)

with the three keys derived from their own contexts, distinct from the job tree's leaf and node
keys (pocv.merkle). The subtree's shape follows from the schema alone (:class:`ChunkLayout`).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch
from blake3 import blake3

from pocv.errors import EncodingError, LimitExceeded, MalformedError, ProofError
from pocv.limits import DIGEST_SIZE, MAX_STATE_BYTES
from pocv.merkle import keyed_fold, keyed_levels, keyed_proof

if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("pocv's zero-copy encoding assumes a little-endian host")

FORMAT_VERSION: Final = 1
MAGIC: Final = b"PCVS"
#: How a state's canonical bytes are committed (1: one BLAKE3 derive_key hash over them;
#: 2: the subtree of header and chunk leaves, docs/protocol.md §4.1). The canonical bytes
#: (FORMAT_VERSION) did not change with it.
STATE_TREE_VERSION: Final = 2
#: Bytes of tensor data per chunk leaf. 256 KiB: chunk hashing runs at 0.88x the speed of raw
#: one-thread BLAKE3 on a 1 MiB tensor (16 KiB chunks: 0.55x, 64 KiB: 0.72x; per-call and fold
#: costs dominate below), and a sampled chunk costs 256 KiB + 32 bytes per level of its proof
#: (docs/protocol.md §4.1, figures).
CHUNK_BYTES: Final = 256 << 10
HEADER_KEY_CONTEXT: Final = "pocv 2026-11 state header v2"
CHUNK_KEY_CONTEXT: Final = "pocv 2026-11 state chunk v2"
STATE_NODE_KEY_CONTEXT: Final = "pocv 2026-11 state node v2"
#: context of the digest of bytes that are not a canonical encoding (never a state's root)
STATE_CONTEXT: Final = "pocv 2026-11 state bytes v2"
#: BLAKE3 keys of the subtree's header leaf, chunk leaves and inner nodes
K_HEADER: Final[bytes] = blake3(b"", derive_key_context=HEADER_KEY_CONTEXT).digest()
K_CHUNK: Final[bytes] = blake3(b"", derive_key_context=CHUNK_KEY_CONTEXT).digest()
K_STATE_NODE: Final[bytes] = blake3(b"", derive_key_context=STATE_NODE_KEY_CONTEXT).digest()
_HEADER_PREFIX: Final = struct.pack("<BI", STATE_TREE_VERSION, CHUNK_BYTES)
#: threads that hash one large state's chunks, the calling thread among them
_MAX_HASH_THREADS: Final = 4

#: Limits a hostile encoding cannot exceed (checked before anything is allocated).
MAX_TENSORS: Final = 256  # named tensors in one state
MAX_NDIM: Final = 8  # dimensions of one tensor
MAX_NAME_BYTES: Final = 64  # UTF-8 bytes of one name
#: Hash chunks on several threads only from this much tensor data up. The prover hashes right
#: after a torch step, while torch's OpenMP threads still spin: measured there (format 1), a 4 MiB
#: state took 1.00 ms on one thread and 1.21 ms with all cores, so threads start at 16 MiB.
_THREADED_HASH_BYTES: Final = 16 << 20

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

# name -> (code, numpy dtype used for the raw bytes, torch dtype, itemsize)
_DTYPES: Final[dict[str, tuple[int, np.dtype[Any], torch.dtype, int]]] = {
    "bool": (1, np.dtype("bool"), torch.bool, 1),
    "uint8": (2, np.dtype("<u1"), torch.uint8, 1),
    "int8": (3, np.dtype("<i1"), torch.int8, 1),
    "int16": (4, np.dtype("<i2"), torch.int16, 2),
    "int32": (5, np.dtype("<i4"), torch.int32, 4),
    "int64": (6, np.dtype("<i8"), torch.int64, 8),
    "float16": (7, np.dtype("<f2"), torch.float16, 2),
    "bfloat16": (8, np.dtype("<u2"), torch.bfloat16, 2),  # raw bits; numpy has no bfloat16
    "float32": (9, np.dtype("<f4"), torch.float32, 4),
    "float64": (10, np.dtype("<f8"), torch.float64, 8),
}
DTYPE_CODES: Final = {name: v[0] for name, v in _DTYPES.items()}
_BY_CODE: Final = {v[0]: name for name, v in _DTYPES.items()}
_TORCH_NAMES: Final = {v[2]: name for name, v in _DTYPES.items()}
_NUMPY_NAMES: Final = {np.dtype(n): n for n in _DTYPES if n != "bfloat16"}

Tensor = np.ndarray[Any, Any] | torch.Tensor
State = Mapping[str, Tensor]


def dtype_name(t: Tensor) -> str:
    """The canonical dtype name of a torch or numpy tensor; raises EncodingError if none."""
    if isinstance(t, torch.Tensor):
        name = _TORCH_NAMES.get(t.dtype)
    elif isinstance(t, np.ndarray):
        name = _NUMPY_NAMES.get(t.dtype.newbyteorder("<")) if t.dtype.kind != "b" else "bool"
    else:
        raise EncodingError(f"expected a torch.Tensor or numpy.ndarray, got {type(t).__name__}")
    if name is None:
        raise EncodingError(f"dtype {t.dtype} has no canonical encoding; expected one of {sorted(_DTYPES)}")
    return name


def _raw(t: Tensor) -> tuple[str, tuple[int, ...], np.ndarray[Any, Any]]:
    """(dtype name, shape, contiguous little-endian numpy array sharing memory when possible)."""
    name = dtype_name(t)
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            t = t.contiguous().view(torch.int16)
        arr = t.contiguous().numpy()
    else:
        arr = t
    raw_dtype = _DTYPES[name][1]
    # (np.ascontiguousarray would turn a 0-d array into a 1-d one; copy(order="C") keeps it)
    if name == "bfloat16":  # int16 bits from torch -> the same bits as uint16
        arr = arr.view(raw_dtype)
    else:  # astype swaps big-endian input; a no-op for native little-endian arrays
        arr = arr.astype(raw_dtype, copy=False)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    return name, tuple(int(d) for d in arr.shape), arr


def _check_name(name: object) -> bytes:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise EncodingError(f"tensor name must match {_NAME_RE.pattern}, got {name!r}")
    return name.encode()


def _pieces(state: State) -> Iterator[bytes | memoryview]:
    """The canonical encoding as a sequence of byte pieces (tensor data not copied)."""
    if len(state) > MAX_TENSORS:
        raise LimitExceeded(f"a state holds at most {MAX_TENSORS} tensors, got {len(state)}")
    items = sorted((_check_name(k), v) for k, v in state.items())
    yield MAGIC + struct.pack("<BH", FORMAT_VERSION, len(items))
    for bname, t in items:
        dname, shape, arr = _raw(t)
        if len(shape) > MAX_NDIM:
            raise LimitExceeded(f"a tensor has at most {MAX_NDIM} dimensions, got {len(shape)}")
        yield (
            struct.pack("<B", len(bname))
            + bname
            + struct.pack(f"<BB{len(shape)}Q", DTYPE_CODES[dname], len(shape), *shape)
        )
        if arr.size:
            yield memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


class _Layout:
    """What a state of one schema encodes to, around its tensor data (cached per schema).

    ``items`` holds, in canonical (name) order, each tensor's name and the dtype and shape the
    cached headers were made for; ``heads`` the header bytes before each non-empty tensor's
    data (the first with the magic and count), ``tail`` those after the last data.
    """

    __slots__ = ("digest_items", "header_leaf", "heads", "items", "names", "one", "single", "spans", "tail", "total",
                 "view_caches")

    def __init__(self, state: State) -> None:
        pieces = list(_pieces(state))  # validates names, count, dims (raises as the slow path does)
        self.total = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
        if self.total > MAX_STATE_BYTES:
            raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {self.total}")
        # heads[j]: the header bytes before the j-th non-empty tensor's data (an empty tensor has
        # no data, so its header joins the next head); tail: the header bytes after the last data
        heads: list[bytes] = []
        pending = b""
        for piece in pieces:
            if isinstance(piece, bytes):
                pending += piece
            else:
                heads.append(pending)
                pending = b""
        self.heads = tuple(heads)
        self.tail = pending
        self.header_leaf = _header_leaf(b"".join(p for p in pieces if isinstance(p, bytes)))
        items: list[tuple[str, object, tuple[int, ...], bool, bool]] = []
        digest_items: list[_DigestItem] = []
        for name in sorted(state, key=lambda k: k.encode()):
            t = state[name]
            size = int(t.numel()) if isinstance(t, torch.Tensor) else int(t.size)
            bf16 = isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
            shape = tuple(int(d) for d in t.shape)
            items.append((name, t.dtype, shape, size > 0, bf16))
            nbytes = size * _DTYPES[dtype_name(t)][3]
            digest_items.append((name, t.dtype, shape, _Views(nbytes) if nbytes else None))
        self.items = tuple(items)
        small = self.total < _THREADED_HASH_BYTES
        #: (name, dtype, shape, views of its memory) of each tensor in canonical order, for
        #: state_digest (views None for an empty tensor); None for a state hashed on several
        #: threads (those read numpy views, which keep the tensors' memory alive)
        self.digest_items = tuple(digest_items) if small else None
        #: the views of each non-empty tensor's memory, in canonical order (see _data_views)
        self.view_caches = tuple(v for *_, v in digest_items if v is not None)
        #: the digest item of a small state of one non-empty tensor (state_digest's tightest path)
        self.one = digest_items[0] if small and len(digest_items) == 1 and digest_items[0][3] is not None else None
        #: the state's data is one chunk: the subtree is one node over the header and chunk leaves
        self.single = len(heads) == 1 and self.total - len(heads[0]) - len(pending) <= CHUNK_BYTES
        #: (start, end) of each non-empty tensor's data in the canonical bytes, for a small state
        #: (see :func:`freeze`); None where digest_items is
        spans: list[tuple[int, int]] = []
        pos = 0
        for piece in pieces:
            n = len(piece) if isinstance(piece, bytes) else piece.nbytes
            if not isinstance(piece, bytes):
                spans.append((pos, pos + n))
            pos += n
        self.spans = tuple(spans) if small else None
        #: the tensors' names in canonical order
        self.names = tuple(name for name, *_ in items)


class _Views(dict[int, memoryview]):
    """Byte views of the memory at tensors' data pointers, for one size (a tensor's data bytes),
    by address. ``state_digest`` hashes a contiguous CPU tensor of a cached dtype and shape in
    place through the view at its ``data_ptr()`` (a C array at that address: building one costs
    more than hashing 1 KiB, so the views of the last few addresses are kept; the allocator
    hands a job's states the same few addresses step after step). A view is read only while a
    live tensor of exactly its size lies at its address, so a view of freed memory is never
    read."""

    __slots__ = ("array",)

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        self.array = ctypes.c_char * nbytes

    def at(self, ptr: int) -> memoryview | None:
        """The view at ``ptr``; None for the null pointer (a tensor without memory of its own,
        such as torch's zero tensors: the general path reads those)."""
        view = self.get(ptr)
        if view is None:
            if not ptr:
                return None
            if len(self) >= _MAX_VIEWS:
                self.clear()
            view = self[ptr] = memoryview(self.array.from_address(ptr)).cast("B")
        return view


#: (name, dtype, shape, views) of one tensor of a cached layout (see _Layout.digest_items)
_DigestItem = tuple[str, object, tuple[int, ...], "_Views | None"]
#: data addresses whose views one tensor of a layout keeps (see _Views): a committer holding a few
#: states in flight (its queue, checkpoint writes) cycles the allocator through more than 16 (a
#: training step's states missed 68% of lookups with 16, 35% with 256; a miss costs ~1 us)
_MAX_VIEWS: Final = 256


#: schema -> layout, keyed by the state's names in iteration order (a few schemas per process)
_LAYOUTS: dict[tuple[str, ...], _Layout] = {}
_MAX_LAYOUTS: Final = 256


def _fast_parts(state: State) -> tuple[_Layout, list[Any]] | None:
    """The canonical encoding of ``state`` as pieces: the cached headers interleaved with the
    tensors' numpy views (not copied, C-contiguous unless a tensor is strided, which the caller
    finds when it takes the buffer). None when the state's schema is new (the caller takes the
    general path, which may cache it) or a tensor is not a CPU torch tensor / numpy array of
    the cached dtype and shape."""
    lay = _LAYOUTS.get(tuple(state))
    return None if lay is None else _parts_of(lay, state)


def _parts_of(lay: _Layout, state: State) -> tuple[_Layout, list[Any]] | None:
    """:func:`_fast_parts` with the state's layout ``lay`` looked up."""
    parts: list[Any] = []
    heads = iter(lay.heads)
    try:
        for name, dt, shape, nonempty, bf16 in lay.items:
            t = state[name]
            if type(t) is torch.Tensor:
                if t.dtype is not dt:
                    return None
                arr = (t.view(torch.int16) if bf16 else t).numpy()  # refuses GPU and grad tensors
            elif type(t) is np.ndarray:
                if t.dtype != dt:
                    return None
                arr = t
            else:
                return None
            if arr.shape != shape:
                return None
            if nonempty:
                parts.append(next(heads))
                parts.append(arr)
    except (TypeError, RuntimeError):
        return None
    parts.append(lay.tail)
    return lay, parts


def _as_bytes(parts: list[Any]) -> list[bytes | memoryview] | None:
    """``parts`` with each array as a flat byte view; None if one is not C-contiguous."""
    out: list[bytes | memoryview] = []
    try:
        for p in parts:
            out.append(p if type(p) is bytes else memoryview(p if p.shape else p.reshape(1)).cast("B"))
    except TypeError:
        return None
    return out


def _cacheable(state: State) -> bool:
    for t in state.values():
        if type(t) is torch.Tensor:
            if not t.is_cpu or t.requires_grad or not t.is_contiguous():
                return False
        elif type(t) is np.ndarray:
            if not t.flags.c_contiguous or t.dtype.byteorder == ">":
                return False
        else:
            return False
    return True


def _remember(state: State) -> None:
    """Cache the layout of ``state`` if its tensors take the fast path (see _fast_parts)."""
    if not _cacheable(state):
        return
    if len(_LAYOUTS) >= _MAX_LAYOUTS:
        _LAYOUTS.clear()
    _LAYOUTS[tuple(state)] = _Layout(state)


def encode_state(state: State) -> bytes:
    """The canonical bytes of ``state`` (see the module docstring)."""
    fast = _fast_parts(state)
    if fast is not None:
        try:
            return b"".join(fast[1])
        except TypeError:  # a strided tensor: the general path copies it
            pass
    out = b"".join(_pieces(state))
    if len(out) > MAX_STATE_BYTES:
        raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {len(out)}")
    if fast is None:
        _remember(state)
    return out


def encoded_pieces(state: State) -> list[bytes | memoryview]:
    """The canonical bytes of ``state`` as pieces whose concatenation is :func:`encode_state`
    (tensor data not copied: for writing a state with ``writelines``)."""
    fast = _fast_parts(state)
    if fast is not None:
        pieces = _as_bytes(fast[1])
        if pieces is not None:
            return pieces
    pieces = list(_pieces(state))
    total = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
    if total > MAX_STATE_BYTES:
        raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {total}")
    if fast is None:
        _remember(state)
    return pieces


def _header_leaf(header: bytes | bytearray) -> bytes:
    """The header leaf of a state's subtree: keyed with K_HEADER over the commitment format
    (:data:`STATE_TREE_VERSION`, :data:`CHUNK_BYTES`) and the canonical bytes without data."""
    return bytes(blake3(_HEADER_PREFIX + bytes(header), key=K_HEADER).digest())


def chunk_leaf(data: bytes | bytearray | memoryview) -> bytes:
    """The leaf hash of one chunk of tensor data: BLAKE3 keyed with :data:`K_CHUNK`."""
    h = _HASHERS.chunk
    h.reset()
    h.update(data)
    return h.digest()


def _chunk_slices(datas: Sequence[memoryview]) -> list[memoryview]:
    """Each tensor's data cut into CHUNK_BYTES pieces (the last of a tensor may be shorter)."""
    out: list[memoryview] = []
    for d in datas:
        n = d.nbytes
        if n <= CHUNK_BYTES:
            out.append(d)
        else:
            out.extend(d[o : o + CHUNK_BYTES] for o in range(0, n, CHUNK_BYTES))
    return out


_chunk_pool: ThreadPoolExecutor | None = None
_chunk_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor | None:
    """Threads that hash the chunks of a large state beside the calling thread (BLAKE3 releases
    the GIL): one fewer than the cores, at most :data:`_MAX_HASH_THREADS` - 1, made on first use
    where there is more than one core."""
    global _chunk_pool
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2:
        return None
    if _chunk_pool is None:
        with _chunk_pool_lock:
            if _chunk_pool is None:
                _chunk_pool = ThreadPoolExecutor(max_workers=min(cores, _MAX_HASH_THREADS) - 1,
                                                 thread_name_prefix="pocv-chunks")
    return _chunk_pool


def _forget_pool_after_fork() -> None:
    global _chunk_pool, _chunk_pool_lock
    _chunk_pool, _chunk_pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


class _Hashers(threading.local):
    """This thread's keyed hashers, reset and reused for every hash: a reset costs a fraction of
    a new hasher or a copy (about 0.1 us against 0.4 us, a quarter of a 4 KiB state's digest).
    One set per thread, because a hasher is stateful between reset and digest and BLAKE3 lets
    go of the GIL while it hashes (the chunk threads and the prover's commit thread hash too)."""

    def __init__(self) -> None:
        self.chunk = blake3(key=K_CHUNK, max_threads=1)
        self.node = blake3(key=K_STATE_NODE, max_threads=1)


_HASHERS: Final = _Hashers()


def _hash_group(chunks: Sequence[memoryview]) -> list[bytes]:
    h = _HASHERS.chunk
    out = []
    for c in chunks:
        h.reset()
        h.update(c)
        out.append(h.digest())
    return out


def _node_root(leaves: list[bytes]) -> bytes:
    """pocv.merkle.keyed_root with K_STATE_NODE, on this thread's reused node hasher."""
    h = _HASHERS.node
    level = leaves
    while len(level) > 1:
        up = []
        for i in range(0, len(level) - 1, 2):
            h.reset()
            h.update(level[i] + level[i + 1])
            up.append(h.digest())
        if len(level) & 1:  # promote the odd last node
            up.append(level[-1])
        level = up
    return level[0]


def digest_threads(data_bytes: int) -> int:
    """The threads, the caller's among them, that hash the chunks of a state with ``data_bytes``
    bytes of tensor data: 1 below :data:`_THREADED_HASH_BYTES` (16 MiB), else the cores this
    process may run on, at most :data:`_MAX_HASH_THREADS`."""
    if data_bytes < _THREADED_HASH_BYTES:
        return 1
    pool = _pool()
    return 1 if pool is None else pool._max_workers + 1


def _hash_claimed(chunks: Sequence[memoryview], out: list[bytes], claim: Callable[[], int]) -> None:
    """Hash chunks into ``out`` until none is left unclaimed (``claim``: the next index, shared by
    the threads; itertools.count's __next__ is atomic under the GIL)."""
    h = _HASHERS.chunk
    n = len(chunks)
    while (i := claim()) < n:
        h.reset()
        h.update(chunks[i])
        out[i] = h.digest()


def _chunk_leaves(datas: Sequence[memoryview]) -> list[bytes]:
    """The chunk leaf hashes of the tensors' data, in order: from :data:`_THREADED_HASH_BYTES` of
    data on the calling thread and the pool's (:func:`_pool`), each claiming the next chunk not
    yet taken. Claiming one chunk at a time balances the threads when another process holds a
    core (fixed halves waited for the slower one: 0.67-0.76 of all-core BLAKE3 at 16 MiB)."""
    total = 0
    for d in datas:
        total += d.nbytes
    if total < _THREADED_HASH_BYTES or (pool := _pool()) is None:
        return _hash_group(_chunk_slices(datas))
    chunks = _chunk_slices(datas)
    out = [b""] * len(chunks)
    claim = itertools.count().__next__
    helpers = [pool.submit(_hash_claimed, chunks, out, claim) for _ in range(pool._max_workers)]
    try:
        _hash_claimed(chunks, out, claim)
    finally:  # never return (nor raise) while a helper still reads the caller's memory
        for f in helpers:
            f.cancel()  # one still queued (behind another state's helpers) has nothing left to do
        wait(helpers)
    for f in helpers:
        if not f.cancelled():
            f.result()  # a helper's error, raised here
    return out


def _root(header_leaf: bytes, datas: Sequence[memoryview]) -> bytes:
    """The root of the subtree over the header leaf and the chunks of ``datas``."""
    if len(datas) == 1 and datas[0].nbytes <= CHUNK_BYTES:  # one chunk: one node over two leaves
        return _one_chunk_root(header_leaf, datas[0])
    return _node_root([header_leaf, *_chunk_leaves(datas)])


def _one_chunk_root(header_leaf: bytes, data: Any) -> bytes:
    """The root of a subtree of two leaves: the header leaf and one chunk ``data`` (a buffer)."""
    hs = _HASHERS
    h = hs.chunk
    h.reset()
    h.update(data)
    node = hs.node
    node.reset()
    node.update(header_leaf + h.digest())
    return node.digest()


def _data_views(lay: _Layout, state: State) -> list[Any] | None:
    """Each non-empty tensor's data of ``state`` as a flat byte buffer, in place, in canonical
    order (the view at its :func:`_data_ptrs` pointer): None where those refuse the state."""
    ptrs = _data_ptrs(lay, state)
    if ptrs is None:
        return None
    return [views.get(ptr) or views.at(ptr) for views, ptr in zip(lay.view_caches, ptrs, strict=True)]


def state_digest(state: State) -> bytes:
    """The root of the state's subtree (docs/protocol.md §4.1): a header leaf over its schema and
    a leaf per CHUNK_BYTES of each tensor's data, in canonical order.

    A state of a schema seen before (the common case: every step of a job has one schema) is
    hashed with its header leaf cached, reading the tensors' memory in place, so a small state
    costs little more than BLAKE3 on its bytes.
    """
    lay = _LAYOUTS.get(tuple(state))
    if lay is not None:
        one = lay.one
        if one is not None:  # one tensor: the tightest path
            name, dt, shape, views = one
            t = state[name]
            # the tensor's bytes read in place (a C array at its data pointer: cheaper than
            # .numpy()), hashed at once while ``t`` is alive; only for a contiguous CPU tensor of
            # the cached dtype and shape (a lazily negated view, torch._neg_view, is not its bytes)
            if type(t) is torch.Tensor and t.dtype is dt and t.shape == shape and t.is_cpu \
                    and t.is_contiguous() and not t.is_neg():
                ptr = t.data_ptr()
                view = views.get(ptr) or views.at(ptr)  # type: ignore[union-attr]
                if view is not None:
                    if not lay.single:
                        return _root(lay.header_leaf, [view])
                    hs = _HASHERS  # _one_chunk_root, inline
                    h = hs.chunk
                    h.reset()
                    h.update(view)
                    node = hs.node
                    node.reset()
                    node.update(lay.header_leaf + h.digest())
                    return node.digest()
        if lay.digest_items is not None:
            datas = _data_views(lay, state)
            if datas is not None:
                return _one_chunk_root(lay.header_leaf, datas[0]) if lay.single else _root(lay.header_leaf, datas)
        else:  # a large state: numpy views, hashed on several threads
            fast = _parts_of(lay, state)
            if fast is not None:
                pieces = _as_bytes(fast[1])
                if pieces is not None:  # [head, data, head, data, ..., tail]
                    return _root(lay.header_leaf, [p for p in pieces[1:-1:2] if isinstance(p, memoryview)])
    pieces = list(_pieces(state))
    total = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
    if total > MAX_STATE_BYTES:
        raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {total}")
    header = b"".join(p for p in pieces if isinstance(p, bytes))
    _remember(state)  # a new schema, or tensors not as cached: cache this one if it fits
    return _root(_header_leaf(header), [p for p in pieces if isinstance(p, memoryview)])


def _interleave(lay: _Layout, datas: list[Any]) -> list[Any]:
    """The canonical encoding as pieces: ``lay``'s cached headers around ``datas`` (the views of
    each non-empty tensor's data, as :func:`_data_views` gives them)."""
    m = len(datas)
    parts: list[Any] = [lay.tail] * (2 * m + 1)
    parts[0 : 2 * m : 2] = lay.heads
    parts[1 : 2 * m : 2] = datas
    return parts


def digest_and_pieces(state: State) -> tuple[bytes, list[bytes | memoryview], int]:
    """(``state_digest(state)``, pieces whose concatenation is ``encode_state(state)``, their
    size) from one look at the tensors, for a state that is hashed and written.

    For a small state of a cached schema the pieces are views of the tensors' memory in place
    (at their data pointers, not keeping the tensors alive): the caller holds ``state`` until it
    is done with them, and nothing may change the tensors meanwhile."""
    lay = _LAYOUTS.get(tuple(state))
    if lay is not None and lay.spans is not None:
        datas = _data_views(lay, state)
        if datas is not None:
            digest = _one_chunk_root(lay.header_leaf, datas[0]) if lay.single else _root(lay.header_leaf, datas)
            return digest, _interleave(lay, datas), lay.total
    digest = state_digest(state)  # first: it caches a new schema's layout
    pieces = encoded_pieces(state)
    return digest, pieces, sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)


def _data_ptrs(lay: _Layout, state: State, tensors: list[torch.Tensor] | None = None) -> list[int] | None:
    """The data pointers of ``state``'s non-empty tensors, in canonical order: None unless every
    tensor is a contiguous CPU torch tensor (not a lazily negated view) with memory of its own,
    or a C-contiguous numpy array, of the dtype and shape ``lay`` was made for. Each pointer is
    read for its tensor's bytes of the layout while ``state`` holds the tensor. With
    ``tensors``, torch tensors only (numpy arrays refused), each appended to it in order."""
    out: list[int] = []
    for name, dt, shape, views in lay.digest_items or ():
        t = state[name]
        if type(t) is torch.Tensor:
            if t.dtype is not dt or t.shape != shape or not t.is_cpu or not t.is_contiguous() or t.is_neg():
                return None
            if views is not None:
                ptr = t.data_ptr()
                if not ptr:  # a tensor without memory of its own (torch's zero tensors)
                    return None
                out.append(ptr)
            if tensors is not None:
                tensors.append(t)
        elif type(t) is np.ndarray and tensors is None:
            if t.dtype != dt or t.shape != shape or not t.flags.c_contiguous:
                return None
            if views is not None:
                out.append(int(t.ctypes.data))
        else:
            return None
    return out


def cached_size(state: State) -> int | None:
    """The size of ``encode_state(state)`` for a small state of a cached schema whose tensors
    are read in place (what :func:`fill_encoding` writes); None for any other."""
    lay = _LAYOUTS.get(tuple(state))
    if lay is None or lay.spans is None or _data_ptrs(lay, state) is None:
        return None
    return lay.total


def data_refs(state: State, filled: object) -> tuple[list[int], list[torch.Tensor], tuple[str, ...]] | None:
    """Where ``state``'s tensor data lies in this process, for a copy made elsewhere (the commit
    process reads it from this one): (offset in the encoding, address, bytes) of each non-empty
    tensor in canonical order, flattened; the tensors in canonical order (what the caller holds
    until the copy is made, and whose version counters tell whether the data changed meanwhile);
    and their names. None unless ``filled`` is the layout token :func:`fill_encoding` returned for
    this state's schema and every tensor is a contiguous CPU torch tensor of its dtype and shape
    with memory of its own (a numpy array has no version counter: it is copied the usual way):
    the checks of :func:`_data_ptrs`."""
    lay = _LAYOUTS.get(tuple(state))
    if lay is None or lay is not filled or lay.spans is None:
        return None
    tensors: list[torch.Tensor] = []
    ptrs = _data_ptrs(lay, state, tensors)
    if ptrs is None:
        return None
    flat: list[int] = []
    for (a, b), ptr in zip(lay.spans, ptrs, strict=True):
        flat += (a, ptr, b - a)
    return flat, tensors, lay.names


def fill_encoding(state: State, buf: memoryview, filled: object = None, *,
                  address: int = 0) -> tuple[object, int] | None:
    """Write ``encode_state(state)`` at the start of ``buf`` for a small state of a cached schema
    (the tensors' data read in place); return (a token of its layout, its size), or None for any
    other state or one larger than ``buf`` (nothing written: the caller encodes or hashes it the
    general way). ``filled``: the token this returned for the bytes ``buf`` holds already; when
    it is this state's, their headers are this state's too and only the tensors' data is copied,
    with one ``memmove`` a tensor from its data pointer when ``address`` (where ``buf`` starts in
    memory) is given (no view made: the digits job's 17 tensors, 0.3 MB, right after a step:
    159-177 us against 187-207 us through views)."""
    lay = _LAYOUTS.get(tuple(state))
    if lay is None or lay.spans is None or lay.total > buf.nbytes:
        return None
    if filled is lay and address:
        ptrs = _data_ptrs(lay, state)
        if ptrs is None:
            return None
        move = ctypes.memmove
        for (a, b), ptr in zip(lay.spans, ptrs, strict=True):
            move(address + a, ptr, b - a)
        return lay, lay.total
    datas = _data_views(lay, state)
    if datas is None:
        return None
    if filled is lay:
        for (a, b), d in zip(lay.spans, datas, strict=True):
            buf[a:b] = d
    else:
        pos = 0
        for p in _interleave(lay, datas):
            n = len(p) if isinstance(p, bytes) else p.nbytes
            buf[pos : pos + n] = p
            pos += n
    return lay, lay.total


class Frozen:
    """A state's canonical bytes, copied at once (:func:`freeze`): what a committer hashes and
    writes while the next step may change the state's tensors. ``digest()`` is
    ``state_digest`` of the state as it was when frozen."""

    __slots__ = ("_lay", "data")

    def __init__(self, data: bytes, lay: _Layout | None) -> None:
        self.data = data
        self._lay = lay

    def digest(self) -> bytes:
        lay = self._lay
        if lay is None or lay.spans is None:
            return digest_encoded(self.data)
        mv = memoryview(self.data)
        if lay.single:
            a, b = lay.spans[0]
            return _one_chunk_root(lay.header_leaf, mv[a:b])
        return _root(lay.header_leaf, [mv[a:b] for a, b in lay.spans])


def freeze(state: State) -> Frozen:
    """A copy of ``state`` as its canonical bytes: one join of the cached headers and the tensors'
    memory for a small state of a cached schema (no tensor made; 20-40 us for a training step's
    17 tensors and 0.3 MB, against 90 us for cloning them), :func:`encode_state` otherwise."""
    lay = _LAYOUTS.get(tuple(state))
    if lay is not None and lay.spans is not None:
        datas = _data_views(lay, state)
        if datas is not None:
            return Frozen(b"".join(_interleave(lay, datas)), lay)
    return Frozen(encode_state(state), None)


class _Stream:
    """Canonical bytes given as pieces, read front to back without copying tensor data."""

    def __init__(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        self.views = [v for v in (memoryview(p).cast("B") for p in pieces) if v.nbytes]
        self.left = sum(v.nbytes for v in self.views)
        self.i = 0
        self.off = 0

    def take(self, n: int) -> list[memoryview] | None:
        """The next ``n`` bytes as views of the pieces they lie in; None if fewer are left."""
        if n > self.left:
            return None
        out: list[memoryview] = []
        self.left -= n
        while n:
            v = self.views[self.i]
            k = min(n, v.nbytes - self.off)
            out.append(v[self.off : self.off + k])
            n -= k
            self.off += k
            if self.off == v.nbytes:
                self.i, self.off = self.i + 1, 0
        return out

    def bytes(self, n: int) -> bytes | None:
        segs = self.take(n)
        return None if segs is None else b"".join(segs)


def _split(pieces: Sequence[bytes | bytearray | memoryview]) -> tuple[bytes, list[memoryview]] | None:
    """(header bytes, each non-empty tensor's data) of canonical bytes given as pieces, or None
    if they do not have the canonical structure (magic, version, counts, lengths within the
    limits, no trailing bytes). Names, their order and bool bytes are the decoder's to check:
    the digest is over exactly these bytes either way."""
    s = _Stream(pieces)
    if s.left > MAX_STATE_BYTES:
        return None
    head = s.bytes(7)
    if head is None or head[:4] != MAGIC or head[4] != FORMAT_VERSION:
        return None
    (count,) = struct.unpack("<H", head[5:])
    if count > MAX_TENSORS:
        return None
    header = [head]
    datas: list[memoryview] = []
    for _ in range(count):
        name_len = s.bytes(1)
        if name_len is None or not 1 <= name_len[0] <= MAX_NAME_BYTES:
            return None
        rest = s.bytes(name_len[0] + 2)
        if rest is None or rest[-2] not in _BY_CODE or rest[-1] > MAX_NDIM:
            return None
        dims_raw = s.bytes(8 * rest[-1])
        if dims_raw is None:
            return None
        header += [name_len, rest, dims_raw]
        extent = _DTYPES[_BY_CODE[rest[-2]]][3]
        for d in struct.unpack(f"<{rest[-1]}Q", dims_raw):
            extent *= max(d, 1)
            if extent > MAX_STATE_BYTES:
                return None
        nbytes = 0 if 0 in struct.unpack(f"<{rest[-1]}Q", dims_raw) else extent
        if nbytes:
            segs = s.take(nbytes)
            if segs is None:
                return None
            datas.append(segs[0] if len(segs) == 1 else memoryview(b"".join(segs)))
    if s.left:
        return None
    return b"".join(header), datas


def digest_pieces(pieces: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """The state digest of canonical bytes given as pieces (:func:`encoded_pieces`), hashed in
    place (a tensor's data is copied only where it spans pieces).

    Bytes that are not a canonical encoding have a digest too, in a domain of their own
    (BLAKE3 derive_key with :data:`STATE_CONTEXT`), which no state's subtree root can equal
    without a BLAKE3 collision: such bytes never open a leaf that a state committed.
    """
    split = _split_whole(memoryview(pieces[0]).cast("B")) if len(pieces) == 1 else _split(pieces)
    if split is None:
        h = blake3(derive_key_context=STATE_CONTEXT)
        _update_aligned(h, [memoryview(p).cast("B") for p in pieces])  # any buffer, as bytes
        return bytes(h.digest())
    header, datas = split
    leaf = _HEADER_LEAVES.get(header)
    if leaf is None:
        if len(_HEADER_LEAVES) >= _MAX_LAYOUTS:
            _HEADER_LEAVES.clear()
        leaf = _HEADER_LEAVES[header] = _header_leaf(header)
    return _root(leaf, datas)


#: header bytes -> header leaf, for digest_pieces (a few schemas per process)
_HEADER_LEAVES: dict[bytes, bytes] = {}


def _split_whole(mv: memoryview) -> tuple[bytes, list[memoryview]] | None:
    """:func:`_split` of canonical bytes in one piece (a flat byte view), read in place: the
    same bytes accepted, the same header and data (a verifier digests every state it opens so)."""
    n = mv.nbytes
    if n < 7 or n > MAX_STATE_BYTES:
        return None
    magic, version, count = struct.unpack_from("<4sBH", mv)
    if magic != MAGIC or version != FORMAT_VERSION or count > MAX_TENSORS:
        return None
    header: list[memoryview] = [mv[:7]]
    datas: list[memoryview] = []
    pos = 7
    for _ in range(count):
        if pos >= n:
            return None
        name_len = mv[pos]
        if not 1 <= name_len <= MAX_NAME_BYTES:
            return None
        dims_at = pos + 3 + name_len
        if dims_at > n:
            return None
        code, ndim = mv[dims_at - 2], mv[dims_at - 1]
        if code not in _BY_CODE or ndim > MAX_NDIM or dims_at + 8 * ndim > n:
            return None
        dims = struct.unpack_from(f"<{ndim}Q", mv, dims_at)
        data_at = dims_at + 8 * ndim
        header.append(mv[pos:data_at])
        extent = _DTYPES[_BY_CODE[code]][3]
        for d in dims:
            extent *= max(d, 1)
            if extent > MAX_STATE_BYTES:
                return None
        nbytes = 0 if 0 in dims else extent
        if data_at + nbytes > n:
            return None
        if nbytes:
            datas.append(mv[data_at : data_at + nbytes])
        pos = data_at + nbytes
    if pos != n:
        return None
    return b"".join(header), datas


def digest_encoded(data: bytes | bytearray | memoryview) -> bytes:
    """The state digest of already-canonical bytes (equal to ``state_digest(decode_state(data))``;
    see :func:`digest_pieces` for bytes that are not canonical)."""
    return digest_pieces([data])


# -- the subtree of one state, opened in chunks (docs/protocol.md §4.1) ------------------------


def _header_of(schema: Mapping[str, tuple[str, tuple[int, ...]]]) -> tuple[bytes, list[tuple[str, int]]]:
    """(header bytes, (name, data bytes) of each tensor in canonical order) of a schema."""
    if len(schema) > MAX_TENSORS:
        raise LimitExceeded(f"a state holds at most {MAX_TENSORS} tensors, got {len(schema)}")
    items = sorted((_check_name(k), k, v) for k, v in schema.items())
    out = [MAGIC + struct.pack("<BH", FORMAT_VERSION, len(items))]
    sizes: list[tuple[str, int]] = []
    for bname, name, (dname, shape) in items:
        if dname not in _DTYPES:
            raise EncodingError(f"dtype {dname!r} has no canonical encoding; expected one of {sorted(_DTYPES)}")
        if len(shape) > MAX_NDIM:
            raise LimitExceeded(f"a tensor has at most {MAX_NDIM} dimensions, got {len(shape)}")
        out.append(struct.pack("<B", len(bname)) + bname
                   + struct.pack(f"<BB{len(shape)}Q", DTYPE_CODES[dname], len(shape), *shape))
        count = 1
        for d in shape:
            count *= int(d)
        sizes.append((name, count * _DTYPES[dname][3]))
    return b"".join(out), sizes


@dataclass(frozen=True)
class ChunkLayout:
    """The subtree shape shared by every state of one schema: its header bytes and, for each
    chunk (leaf ``c + 1`` of the subtree), the tensor it belongs to and where it lies in the
    canonical encoding. Built from the schema alone, so a verifier knows it before any byte of
    a state arrives."""

    header: bytes
    #: (tensor name, offset in the canonical encoding, length) of each chunk, in leaf order
    chunks: tuple[tuple[str, int, int], ...]
    #: bytes of the canonical encoding
    total: int

    @classmethod
    def from_schema(cls, schema: Mapping[str, tuple[str, tuple[int, ...]]]) -> ChunkLayout:
        """The layout of states of ``schema`` (name -> (dtype name, shape))."""
        header, sizes = _header_of(schema)
        total = len(header) + sum(n for _, n in sizes)
        if total > MAX_STATE_BYTES:
            raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {total}")
        # the data of tensor j follows its descriptor: walk the header in step
        chunks: list[tuple[str, int, int]] = []
        pos = 7  # in the canonical encoding
        for name, nbytes in sizes:
            pos += 1 + len(name.encode()) + 2 + 8 * len(schema[name][1])
            for o in range(0, nbytes, CHUNK_BYTES):
                chunks.append((name, pos + o, min(CHUNK_BYTES, nbytes - o)))
            pos += nbytes
        return cls(header=header, chunks=tuple(chunks), total=total)

    @property
    def size(self) -> int:
        """Leaves of the subtree: the header and every chunk."""
        return 1 + len(self.chunks)

    def header_leaf(self) -> bytes:
        return _header_leaf(self.header)

    def chunk_of(self, data: bytes | bytearray | memoryview, index: int) -> bytes:
        """Chunk ``index`` of a state's canonical bytes ``data`` (of this layout)."""
        _, off, n = self.chunks[index]
        return bytes(memoryview(data)[off : off + n])


class StateTree:
    """The subtree of one state, kept whole (the worker's side of a chunk opening)."""

    __slots__ = ("_levels", "layout")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        """From canonical bytes; MalformedError if they are not a canonical encoding."""
        decoded = decode_state(data)  # checks every rule of the encoding
        self.layout = ChunkLayout.from_schema(state_schema(decoded))
        mv = memoryview(data).cast("B")
        leaves = [self.layout.header_leaf(), *(chunk_leaf(mv[o : o + n]) for _, o, n in self.layout.chunks)]
        self._levels = keyed_levels(leaves, K_STATE_NODE)

    @property
    def root(self) -> bytes:
        """The state digest."""
        return bytes(self._levels[-1][0])

    def chunk_proof(self, index: int) -> list[bytes]:
        """The audit path of chunk ``index`` (leaf ``index + 1`` of the subtree)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.layout.chunks):
            raise ProofError(f"chunk index out of range: expected 0 <= index < {len(self.layout.chunks)}, "
                             f"got {index!r}")
        return keyed_proof(self._levels, index + 1)


def verify_chunk(root: bytes, layout: ChunkLayout, index: int, data: bytes | bytearray | memoryview,
                 proof: Sequence[bytes]) -> None:
    """Check that ``data`` is chunk ``index`` of the state whose digest is ``root`` and whose
    schema gives ``layout``. Raises ProofError: (1) the index and the chunk's length against the
    layout, (2) the proof's shape (keyed_fold), then (3) the path folded and compared."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(layout.chunks):
        raise ProofError(f"chunk index out of range: expected 0 <= index < {len(layout.chunks)}, got {index!r}")
    want = layout.chunks[index][2]
    if memoryview(data).nbytes != want:
        raise ProofError(f"chunk {index} has wrong size: expected {want} bytes, got {memoryview(data).nbytes}")
    if len(root) != DIGEST_SIZE:
        raise ProofError(f"state root has wrong size: expected {DIGEST_SIZE} bytes, got {len(root)}")
    got = keyed_fold(chunk_leaf(data), index + 1, layout.size, proof, K_STATE_NODE)
    if got != root:
        raise ProofError(f"chunk {index} and its proof do not lead to the state root: expected {bytes(root).hex()}, "
                         f"got {got.hex()}")


#: a large piece is fed to BLAKE3 from a stream offset that is a multiple of this: 8 chunks, the
#: width BLAKE3 hashes at once with AVX2 (16 with AVX-512 fits too: the subtrees then grow from 8)
_ALIGN_STREAM: Final = 8 << 10


def _update_aligned(h: Any, pieces: Sequence[bytes | memoryview]) -> None:
    """``h.update`` with the concatenation of ``pieces``, fed so that every large piece starts
    at a stream offset that is a multiple of :data:`_ALIGN_STREAM`: the small pieces (headers)
    and the first few KiB of the large one that follows are joined (a copy of at most 8 KiB
    per large piece), the rest is hashed in place. BLAKE3 hashes a stream in power-of-two
    subtrees aligned to its chunk counter; after a 19-byte header every subtree of a tensor's
    data would start misaligned, and the first ones narrow (3-10% slower at 1 MiB, measured)."""
    pos = 0
    small: list[bytes | memoryview] = []
    small_len = 0
    for p in pieces:
        n = p.nbytes if isinstance(p, memoryview) else len(p)
        if n < 2 * _ALIGN_STREAM:
            small.append(p)
            small_len += n
            continue
        view = p if isinstance(p, memoryview) else memoryview(p)
        fill = -(pos + small_len) % _ALIGN_STREAM
        if small or fill:
            small.append(view[:fill])
            joined = b"".join(small)
            h.update(joined)
            pos += len(joined)
            small, small_len = [], 0
        h.update(view[fill:])
        pos += n - fill
    if small:
        h.update(b"".join(small))


def decode_state(data: bytes | bytearray | memoryview) -> dict[str, torch.Tensor]:
    """Parse canonical state bytes into CPU torch tensors (copies, safe to mutate).

    Raises :class:`MalformedError` / :class:`LimitExceeded` / :class:`EncodingError` for any
    input that is not exactly one canonical encoding.
    """
    mv = memoryview(data).cast("B")
    n = mv.nbytes
    if n > MAX_STATE_BYTES:
        raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {n}")
    pos = 0

    def take(k: int, what: str) -> memoryview:
        nonlocal pos
        if k > n - pos:
            raise MalformedError(f"state truncated: expected {k} bytes of {what} at offset {pos}, "
                                 f"got {n - pos}")
        out = mv[pos : pos + k]
        pos += k
        return out

    if bytes(take(4, "magic")) != MAGIC:
        raise MalformedError(f"not a pocv state: expected magic {MAGIC!r}, got {bytes(mv[:4])!r}")
    version, count = struct.unpack("<BH", take(3, "header"))
    if version != FORMAT_VERSION:
        raise MalformedError(f"state format version: expected {FORMAT_VERSION}, got {version}")
    if count > MAX_TENSORS:
        raise LimitExceeded(f"a state holds at most {MAX_TENSORS} tensors, got {count}")
    out: dict[str, torch.Tensor] = {}
    prev: bytes | None = None
    for _ in range(count):
        (name_len,) = take(1, "name length")
        if not 1 <= name_len <= MAX_NAME_BYTES:
            raise LimitExceeded(f"tensor name length must be 1..{MAX_NAME_BYTES}, got {name_len}")
        bname = bytes(take(name_len, "name"))
        try:
            name = bname.decode()
        except UnicodeDecodeError as e:
            raise MalformedError(f"tensor name is not UTF-8: {bname!r}") from e
        _check_name(name)
        if prev is not None and bname <= prev:
            raise MalformedError(f"tensor names not in strictly ascending order: {prev!r} then {bname!r}")
        prev = bname
        code, ndim = take(2, "dtype and ndim")
        dname = _BY_CODE.get(code)
        if dname is None:
            raise EncodingError(f"unknown dtype code {code}; expected one of {sorted(_BY_CODE)}")
        if ndim > MAX_NDIM:
            raise LimitExceeded(f"a tensor has at most {MAX_NDIM} dimensions, got {ndim}")
        shape = struct.unpack(f"<{ndim}Q", take(8 * ndim, "shape"))
        _, raw_dtype, tdtype, itemsize = _DTYPES[dname]
        # Bound the extent with zero dimensions counted as 1, so that a zero-sized tensor cannot
        # carry dimensions whose product overflows numpy (or anything else) either.
        extent = itemsize
        for d in shape:
            extent *= max(d, 1)
            if extent > MAX_STATE_BYTES:
                raise LimitExceeded(f"tensor {name!r} of shape {shape} is larger than any state "
                                    f"({MAX_STATE_BYTES} bytes), whether or not it is empty")
        nbytes = 0 if 0 in shape else extent
        if nbytes > n:
            raise LimitExceeded(f"tensor {name!r} of shape {shape} needs more bytes than the "
                                f"{n}-byte state holds")
        buf = take(nbytes, f"data of {name!r}")
        arr = np.frombuffer(buf, dtype=raw_dtype).reshape(shape).copy()
        if dname == "bool" and arr.size and arr.view(np.uint8).max() > 1:
            raise EncodingError(f"bool tensor {name!r} holds a byte other than 0 or 1")
        t = torch.from_numpy(arr)
        out[name] = t.view(tdtype) if dname == "bfloat16" else t
    if pos != n:
        raise MalformedError(f"state has {n - pos} trailing bytes after {count} tensors")
    return out


def encoded_size(schema: Mapping[str, tuple[str, tuple[int, ...]]]) -> int:
    """Bytes of the canonical encoding of any state with this name -> (dtype, shape) schema."""
    total = len(MAGIC) + 3
    for name, (dname, shape) in schema.items():
        count = 1
        for d in shape:
            count *= d
        total += 1 + len(name.encode()) + 2 + 8 * len(shape) + count * _DTYPES[dname][3]
    return total


def state_schema(state: State) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype name, shape): what a kernel checks a claimed state against."""
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for k, v in state.items():
        out[k] = (dtype_name(v), tuple(int(d) for d in v.shape))
    return out
