"""Canonical bytes of tensors and states, and the BLAKE3 digest of a state.

A *state* is a mapping of names to tensors (torch or numpy). Its canonical encoding
(format version 1) is::

    b"PCVS" | version u8 (=1) | count u16
    then, for each tensor in ascending order of its UTF-8 name:
        name_len u8 | name (UTF-8, [A-Za-z0-9_.-], 1..64 bytes)
        dtype u8 (see DTYPE_CODES) | ndim u8 (0..8) | dims u64[ndim]
        data: prod(dims) * itemsize bytes, C order, little-endian

All integers are little-endian. There is exactly one encoding per state: the bytes do not
depend on the device, strides, memory layout or the order the mapping was built in, and the
decoder refuses anything that is not canonical (unsorted or duplicate names, trailing bytes).

The state digest is BLAKE3 in ``derive_key`` mode with context :data:`STATE_CONTEXT` over
those bytes, fed piece by piece so the tensor data is never copied.
"""

from __future__ import annotations

import ctypes
import re
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import numpy as np
import torch
from blake3 import blake3

from pocv.errors import EncodingError, LimitExceeded, MalformedError
from pocv.limits import MAX_STATE_BYTES

if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("pocv's zero-copy encoding assumes a little-endian host")

FORMAT_VERSION: Final = 1
MAGIC: Final = b"PCVS"
STATE_CONTEXT: Final = "pocv 2026-11 state digest v1"

#: Limits a hostile encoding cannot exceed (checked before anything is allocated).
MAX_TENSORS: Final = 256  # named tensors in one state
MAX_NDIM: Final = 8  # dimensions of one tensor
MAX_NAME_BYTES: Final = 64  # UTF-8 bytes of one name
#: Hash with all cores only from this piece size up. On an idle 2-core host blake3.AUTO wins from
#: 256 KiB (bench/REPORT.md, hashing), but the prover hashes right after a torch step, while torch's
#: OpenMP threads still spin: measured there, a 4 MiB state took 1.00 ms on one thread and 1.21 ms
#: with blake3.AUTO from 1 MiB pieces (gemm-fp32: 0.86 vs 1.00 ms), so threads start at 16 MiB.
_THREADED_HASH_BYTES: Final = 16 << 20

#: States up to this size are joined into one buffer before hashing (a copy costs less than
#: more update calls); larger ones are fed in place from 8 KiB-aligned stream offsets
#: (_update_aligned), so the header does not put BLAKE3's subtrees out of alignment.
_JOIN_BYTES: Final = 16 << 10
#: a derive_key hasher copied per digest (deriving the context key anew costs more)
_DERIVE: Final = blake3(derive_key_context=STATE_CONTEXT, max_threads=1)
#: canonical bytes are little-endian: a tensor's memory is its encoding only on such a host
_LITTLE_ENDIAN: Final = sys.byteorder == "little"

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

    __slots__ = ("heads", "items", "one", "raw", "tail", "total")

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
        items: list[tuple[str, object, tuple[int, ...], bool, bool]] = []
        for name in sorted(state, key=lambda k: k.encode()):
            t = state[name]
            size = int(t.numel()) if isinstance(t, torch.Tensor) else int(t.size)
            bf16 = isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
            items.append((name, t.dtype, tuple(int(d) for d in t.shape), size > 0, bf16))
        self.items = tuple(items)
        #: (name, dtype, shape, head, tail) of a state of one non-empty, non-bfloat16 tensor
        #: below _THREADED_HASH_BYTES, hashed by the tightest path in state_digest
        self.one: tuple[str, object, tuple[int, ...], bytes, bytes] | None = None
        #: a C array type of that tensor's byte size (state_digest reads the tensor in place)
        self.raw: Any = None
        if len(items) == 1 and items[0][3] and not items[0][4] and self.total < _THREADED_HASH_BYTES:
            self.one = (items[0][0], items[0][1], items[0][2], heads[0], pending)
            self.raw = ctypes.c_char * (self.total - len(heads[0]) - len(pending))


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
    if lay is None:
        return None
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


def state_digest(state: State) -> bytes:
    """BLAKE3 (derive_key mode, :data:`STATE_CONTEXT`) of the canonical encoding of ``state``.

    A state of a schema seen before (the common case: every step of a job has one schema) is
    hashed from a cached hasher that has already absorbed the leading header, one ``update``
    per tensor, so a small state costs little more than BLAKE3 on its bytes.
    """
    lay = _LAYOUTS.get(tuple(state))
    if lay is not None and lay.one is not None:  # one tensor, small: the tightest path
        name, dt, shape, head, tail = lay.one
        t = state[name]
        if type(t) is torch.Tensor:
            # the tensor's bytes read in place (a C array at its data pointer: cheaper than
            # .numpy()), joined to the cached header at once while ``t`` is alive; only for a
            # contiguous CPU tensor of the cached dtype and shape on a little-endian host
            if _LITTLE_ENDIAN and t.dtype is dt and t.shape == shape and t.is_cpu and t.is_contiguous() \
                    and not t.is_neg():  # a lazily negated view (torch._neg_view) is not its bytes
                data = lay.raw.from_address(t.data_ptr())
                h = _DERIVE.copy()
                if lay.total <= _JOIN_BYTES:
                    h.update(b"".join((head, data, tail)))
                else:  # the header and the data's first bytes up to an 8 KiB stream offset, joined;
                    # the rest in place (as _update_aligned does)
                    view = memoryview(data).cast("B")
                    fill = -len(head) % _ALIGN_STREAM
                    h.update(b"".join((head, view[:fill])))
                    h.update(view[fill:])
                    h.update(tail)
                return h.digest()
        elif type(t) is np.ndarray and t.dtype == dt and t.shape == shape:
            try:
                h = _DERIVE.copy()
                h.update(b"".join((head, t, tail)))  # type: ignore[arg-type]
                return h.digest()
            except TypeError:  # strided: the general path copies it
                pass
    fast = _fast_parts(state)
    if fast is not None:
        lay, parts = fast
        if lay.total <= _JOIN_BYTES:
            # one contiguous update: BLAKE3 hashes whole 1 KiB chunks in parallel only when the
            # stream is chunk-aligned, and a header before the data puts it off by a few bytes;
            # for a small state the copy costs less than the misalignment
            try:
                joined = b"".join(parts)
            except TypeError:  # a strided tensor: the general path copies it
                pass
            else:
                h = _DERIVE.copy()
                h.update(joined)
                return bytes(h.digest())
        elif lay.total < _THREADED_HASH_BYTES:
            pieces = _as_bytes(parts)
            if pieces is not None:
                h = _DERIVE.copy()
                _update_aligned(h, pieces)
                return bytes(h.digest())
    pieces = list(_pieces(state))
    total = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
    if total > MAX_STATE_BYTES:
        raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {total}")
    largest = max((p.nbytes for p in pieces if isinstance(p, memoryview)), default=0)
    threads = blake3.AUTO if largest >= _THREADED_HASH_BYTES else 1
    h = blake3(derive_key_context=STATE_CONTEXT, max_threads=threads)
    _update_aligned(h, pieces)
    if fast is None:
        _remember(state)
    return bytes(h.digest())


def digest_encoded(data: bytes | bytearray | memoryview) -> bytes:
    """The state digest of already-canonical bytes (equal to ``state_digest(decode_state(data))``)."""
    mv = memoryview(data)
    threads = blake3.AUTO if mv.nbytes >= _THREADED_HASH_BYTES else 1
    return bytes(blake3(mv, derive_key_context=STATE_CONTEXT, max_threads=threads).digest())


def digest_pieces(pieces: Sequence[bytes | memoryview]) -> bytes:
    """The state digest of canonical bytes given as pieces (:func:`encoded_pieces`), hashed in
    place: on all cores when a piece reaches 16 MiB, as :func:`state_digest` does."""
    largest = max((p.nbytes if isinstance(p, memoryview) else len(p) for p in pieces), default=0)
    h = _DERIVE.copy() if largest < _THREADED_HASH_BYTES else blake3(derive_key_context=STATE_CONTEXT,
                                                                      max_threads=blake3.AUTO)
    _update_aligned(h, pieces)
    return bytes(h.digest())


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
