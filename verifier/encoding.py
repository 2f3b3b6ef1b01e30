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

import re
import struct
import sys
from collections.abc import Iterator, Mapping
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


def encode_state(state: State) -> bytes:
    """The canonical bytes of ``state`` (see the module docstring)."""
    out = b"".join(_pieces(state))
    if len(out) > MAX_STATE_BYTES:
        raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {len(out)}")
    return out


def state_digest(state: State) -> bytes:
    """BLAKE3 (derive_key mode, :data:`STATE_CONTEXT`) of the canonical encoding of ``state``."""
    pieces = list(_pieces(state))
    total = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
    if total > MAX_STATE_BYTES:
        raise LimitExceeded(f"an encoded state is at most {MAX_STATE_BYTES} bytes, got {total}")
    largest = max((p.nbytes for p in pieces if isinstance(p, memoryview)), default=0)
    threads = blake3.AUTO if largest >= _THREADED_HASH_BYTES else 1
    h = blake3(derive_key_context=STATE_CONTEXT, max_threads=threads)
    for piece in pieces:
        h.update(piece)
    return bytes(h.digest())


def digest_encoded(data: bytes | bytearray | memoryview) -> bytes:
    """The state digest of already-canonical bytes (equal to ``state_digest(decode_state(data))``)."""
    mv = memoryview(data)
    threads = blake3.AUTO if mv.nbytes >= _THREADED_HASH_BYTES else 1
    return bytes(blake3(mv, derive_key_context=STATE_CONTEXT, max_threads=threads).digest())


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
