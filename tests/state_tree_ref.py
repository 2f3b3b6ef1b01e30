"""An independent definition of the state digest (docs/protocol.md §4.1), written from the
protocol text with nothing from pocv but the context strings: the canonical bytes are parsed
here, the subtree is the RFC 6962 recursion, every hash one call of the blake3 library. Tests
compare pocv.encoding's fast paths with it."""

from __future__ import annotations

import struct

from blake3 import blake3

ITEMSIZE = {1: 1, 2: 1, 3: 1, 4: 2, 5: 4, 6: 8, 7: 2, 8: 2, 9: 4, 10: 8}
K_HEADER = blake3(b"", derive_key_context="pocv 2026-11 state header v2").digest()
K_CHUNK = blake3(b"", derive_key_context="pocv 2026-11 state chunk v2").digest()
K_NODE = blake3(b"", derive_key_context="pocv 2026-11 state node v2").digest()
CHUNK = 256 * 1024


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """(header bytes, each tensor's data) of a canonical encoding (assumed well formed)."""
    count = struct.unpack_from("<H", data, 5)[0]
    header, datas, pos = bytearray(data[:7]), [], 7
    for _ in range(count):
        n = data[pos]
        code, ndim = data[pos + 1 + n], data[pos + 2 + n]
        end = pos + 3 + n + 8 * ndim
        dims = struct.unpack_from(f"<{ndim}Q", data, pos + 3 + n)
        header += data[pos:end]
        size = ITEMSIZE[code]
        for d in dims:
            size *= d
        datas.append(data[end : end + size])
        pos = end + size
    assert pos == len(data)
    return bytes(header), datas


def leaves(data: bytes) -> list[bytes]:
    header, datas = split(data)
    out = [blake3(struct.pack("<BI", 2, CHUNK) + header, key=K_HEADER).digest()]
    for d in datas:
        out += [blake3(d[o : o + CHUNK], key=K_CHUNK).digest() for o in range(0, len(d), CHUNK)]
    return out


def mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return blake3(mth(hashes[:k]) + mth(hashes[k:]), key=K_NODE).digest()


def naive_state_root(data: bytes) -> bytes:
    return mth(leaves(data))
