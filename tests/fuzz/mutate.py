"""Mutations for the fuzz loop: byte-level, and aware of each format's structure.

* bytes: flip a bit, set a byte or a 2/4/8-byte word to an interesting value (0, 1, 2^31-1,
  2^40, 2^64-1, ...), insert, delete, duplicate, truncate, splice with another seed;
* bundle: overwrite one of the bundle's real length/count fields (tree size, k, m, a leaf index,
  a state length, p) with an interesting value, or truncate right after a field;
* state: overwrite the tensor count, a name length, a dtype code, ndim or a dimension;
* JSON records: replace a value somewhere in the tree with another JSON type, a huge or negative
  integer, NaN/Infinity, a lone surrogate, a long string, deep nesting; drop or add a key.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_WORDS = (0, 1, 2, 3, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**53 + 1,
                     2**63 - 1, 2**63, 2**64 - 1)


def _word(rng: random.Random, size: int) -> bytes:
    v = rng.choice(INTERESTING_WORDS) % (1 << (8 * size))
    return v.to_bytes(size, "little")


def mutate_bytes(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    op = rng.randrange(9)
    if not b:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    p = rng.randrange(len(b))
    if op == 0:
        b[p] ^= 1 << rng.randrange(8)
    elif op == 1:
        b[p] = rng.choice(INTERESTING_8)
    elif op == 2:
        size = rng.choice((2, 4, 8))
        b[p : p + size] = _word(rng, size)
    elif op == 3:
        b[p:p] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16)))
    elif op == 4:
        del b[p : p + rng.randrange(1, 32)]
    elif op == 5:
        q = rng.randrange(len(b))
        b[p:p] = b[q : q + rng.randrange(1, 64)]
    elif op == 6:
        del b[p:]
    elif op == 7 and pool:
        other = rng.choice(pool)
        q = rng.randrange(len(other) + 1)
        b = b[:p] + bytearray(other[q:])
    else:
        for _ in range(rng.randrange(2, 8)):
            b[rng.randrange(len(b))] = rng.getrandbits(8)
    return bytes(b)


# -- bundle structure ------------------------------------------------------------------------------


def bundle_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, size, name) of every integer field of a (roughly) well-formed bundle."""
    out = [(8, 2, "version"), (10, 2, "flags"), (76, 8, "tree_size"), (84, 4, "k")]
    try:
        k = struct.unpack_from("<I", data, 84)[0]
        pos = 88
        if 88 + 8 * k > len(data):
            return out
        for j in range(k):
            out.append((pos + 8 * j, 8, f"index{j}"))
        pos += 8 * k
        out.append((pos, 4, "m"))
        m = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        for j in range(min(m, len(data) // 16)):
            out.append((pos, 8, f"leaf{j}"))
            out.append((pos + 8, 8, f"length{j}"))
            length = struct.unpack_from("<Q", data, pos + 8)[0]
            pos += 16 + length
            if pos > len(data):
                return out
        out.append((pos, 4, "p"))
    except (struct.error, OverflowError):
        pass
    return out


def mutate_bundle(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    fields = bundle_fields(data)
    if rng.random() < 0.25 or not fields:
        return mutate_bytes(data, rng, pool)
    off, size, _ = rng.choice(fields)
    b = bytearray(data)
    if rng.random() < 0.2:  # truncate inside or right after the field
        return bytes(b[: off + rng.randrange(size + 1)])
    if rng.random() < 0.5:
        b[off : off + size] = _word(rng, size)
    else:  # nudge by a small amount
        v = int.from_bytes(b[off : off + size], "little") + rng.choice((-2, -1, 1, 2))
        b[off : off + size] = (v % (1 << (8 * size))).to_bytes(size, "little")
    return bytes(b)


def bundle_claiming(size_field: str, value: int, data: bytes) -> bytes:
    """``data`` with one named field set to ``value`` (e.g. a state length of 2^40)."""
    for off, size, name in bundle_fields(data):
        if name == size_field:
            b = bytearray(data)
            b[off : off + size] = value.to_bytes(size, "little")
            return bytes(b)
    raise KeyError(size_field)


# -- state structure ---------------------------------------------------------------------------------


def state_fields(data: bytes) -> list[tuple[int, int, str]]:
    out = [(4, 1, "version"), (5, 2, "count")]
    pos = 7
    try:
        for t in range(min(struct.unpack_from("<H", data, 5)[0], 300)):
            nlen = data[pos]
            out.append((pos, 1, f"name_len{t}"))
            pos += 1 + nlen
            out.append((pos, 1, f"dtype{t}"))
            out.append((pos + 1, 1, f"ndim{t}"))
            ndim = data[pos + 1]
            dims = struct.unpack_from(f"<{ndim}Q", data, pos + 2)
            for j in range(ndim):
                out.append((pos + 2 + 8 * j, 8, f"dim{t}.{j}"))
            pos += 2 + 8 * ndim
            n = 1
            for d in dims:
                n *= d
            pos += n * {1: 1, 2: 1, 3: 1, 4: 2, 5: 4, 6: 8, 7: 2, 8: 2, 9: 4, 10: 8}.get(data[pos - 2 - 8 * ndim], 1)
            if pos > len(data):
                break
    except (struct.error, IndexError, OverflowError):
        pass
    return out


def mutate_state(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    fields = state_fields(data)
    if rng.random() < 0.3:
        return mutate_bytes(data, rng, pool)
    off, size, name = rng.choice(fields)
    b = bytearray(data)
    if off >= len(b):
        return mutate_bytes(data, rng, pool)
    if name.startswith("dtype"):
        b[off] = rng.randrange(0, 13)
    elif size == 1:
        b[off] = rng.choice((0, 1, 2, 8, 9, 64, 65, 255))
    else:
        b[off : off + size] = _word(rng, size)
    return bytes(b)


# -- JSON records ---------------------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    out: Any = 0
    for _ in range(depth):
        out = [out]
    return out


_WEIRD: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**400, 1.5, float("nan"), float("inf"),
    -0.0, 1e308, "", "x", "x" * 65, "x" * 300, "\ud800", "\udfff\ud800", "a\x00b", "é" * 200, [], {}, [1, 2, 3],
    {"a": 1}, "0" * 64, "ff" * 32, "F" * 64, "11111111111111111111111111111111", "1" * 44,
)


def _weird(rng: random.Random) -> Any:
    """A JSON value of an unexpected type or size (big ones built only when drawn)."""
    r = rng.randrange(len(_WEIRD) + 5)
    if r < len(_WEIRD):
        return _WEIRD[r]
    r -= len(_WEIRD)
    if r == 0:
        return _nested(rng.choice((10, 500, 5000)))
    if r == 1:
        return "x" * 70_000
    if r == 2:
        return list(range(100))
    if r == 3:
        return ["00" * 32] * 50
    return {str(i): i for i in range(50)}


def _paths(obj: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> list[tuple[Any, ...]]:
    out = [prefix]
    if depth > 6:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k), depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            out += _paths(v, (*prefix, i), depth + 1)
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return obj


def mutate_json(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return mutate_bytes(data, rng, pool)
    if rng.random() < 0.15:
        return mutate_bytes(data, rng, pool)
    path = rng.choice(_paths(obj))
    op = rng.randrange(5)
    try:
        if op == 0 and path:  # delete a key / element
            parent = obj
            for p in path[:-1]:
                parent = parent[p]
            del parent[path[-1]]
        elif op == 1:  # an integer nudged
            target: Any = obj
            for p in path:
                target = target[p]
            value = target + rng.choice((-1, 1, 2**32, -(2**40))) if isinstance(target, int) else _weird(rng)
            obj = _set(obj, path, value)
        elif op == 2 and isinstance(obj, dict):  # an extra key
            obj[rng.choice(["extra", "type", "version", "x" * 40])] = _weird(rng)
        else:
            obj = _set(obj, path, _weird(rng))
    except (KeyError, IndexError, TypeError):
        return mutate_bytes(data, rng, pool)
    try:
        text = json.dumps(obj, sort_keys=rng.random() < 0.5)
    except (ValueError, RecursionError):
        return mutate_bytes(data, rng, pool)
    return text.encode("utf-8", errors="surrogatepass") if rng.random() < 0.1 else text.encode()


def mutator_for(name: str) -> Any:
    from tests.fuzz.targets import JSON_TARGETS

    if name == "bundle":
        return mutate_bundle
    if name == "state":
        return mutate_state
    if name in JSON_TARGETS:
        return mutate_json
    return mutate_bytes


def mutate(name: str, data: bytes, rng: random.Random, pool: list[bytes], rounds: int = 0) -> bytes:
    """1-4 stacked mutations of ``data`` for target ``name``."""
    fn = mutator_for(name)
    for _ in range(rounds or rng.choice((1, 1, 1, 2, 3, 4))):
        data = fn(data, rng, pool)
    return data
