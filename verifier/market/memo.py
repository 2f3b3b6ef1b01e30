"""The public record: pocv memos on chain (SPL Memo v2, signed by the party that makes them).

One line of ASCII, ``pocv1 <kind> key=value ...``, small enough for one transaction. Keys are
base58 (Solana's own text form); digests (job id, spec hash, root, verdict digest) are base58 too,
44 characters instead of 64 hex. Parsing is strict (unknown kinds, keys, or malformed values give
``None`` / an error), because memos are written by anyone: an indexer must treat them as claims
to check, never as facts (docs/protocol.md §12.1, §13.4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from solders.hash import Hash, ParseHashError
from solders.pubkey import Pubkey

from pocv.errors import MalformedError

MEMO_PREFIX: Final = "pocv1"
MAX_FIELD_CHARS: Final = 128
MAX_FIELDS: Final = 16
KINDS: Final = ("offer", "post", "commit", "settle")
RESULTS: Final = ("PASS", "FAIL", "TIMEOUT")

_KEY_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,15}")
_VALUE_RE: Final = re.compile(r"[A-Za-z0-9@._,:+\-]{1,128}")

# Fields each kind must carry (and may carry nothing else).
_SCHEMA: Final[Mapping[str, frozenset[str]]] = {
    "offer": frozenset({"dev", "fp", "price", "bond", "kernels"}),
    "post": frozenset({"job", "spec", "kernel", "dev", "conf", "c", "w", "v", "price", "bond", "dl"}),
    "commit": frozenset({"job", "root", "bond"}),
    "settle": frozenset({"job", "root", "result", "verdict"}),
}


@dataclass(frozen=True)
class Memo:
    kind: str
    fields: Mapping[str, str]

    def text(self) -> str:
        return " ".join([MEMO_PREFIX, self.kind, *(f"{k}={v}" for k, v in self.fields.items())])

    # typed accessors (raise MalformedError on a bad value: a memo is hostile input)
    def key(self, name: str) -> Pubkey:
        try:
            return Pubkey.from_string(self.fields[name])
        except ValueError as e:
            raise MalformedError(f"memo field {name!r} is not a base58 public key") from e

    def digest(self, name: str) -> bytes:
        v = self.fields[name]
        if v == "-":
            return b""
        try:
            return bytes(Hash.from_string(v))
        except (ValueError, ParseHashError) as e:
            raise MalformedError(f"memo field {name!r} is not a base58 32-byte digest") from e

    def int(self, name: str) -> int:
        v = self.fields[name]
        if not v.isdigit() or len(v) > 20:
            raise MalformedError(f"memo field {name!r} is not a non-negative integer: {v!r}")
        return int(v)


def b58(digest: bytes) -> str:
    """A 32-byte digest as base58 (``-`` for none)."""
    return str(Hash.from_bytes(digest)) if digest else "-"


def make(kind: str, **fields: str | int) -> Memo:
    if kind not in _SCHEMA:
        raise MalformedError(f"unknown memo kind {kind!r}; expected one of {KINDS}")
    if set(fields) != _SCHEMA[kind]:
        raise MalformedError(f"{kind} memo needs fields {sorted(_SCHEMA[kind])}, got {sorted(fields)}")
    out = {}
    for k, v in fields.items():
        s = str(v)
        if not _VALUE_RE.fullmatch(s):
            raise MalformedError(f"memo field {k}={s[:40]!r} must match {_VALUE_RE.pattern}")
        out[k] = s
    return Memo(kind, out)


def parse(text: str) -> Memo | None:
    """A pocv memo, or ``None`` when the text is not one (other apps' memos, junk)."""
    parts = text.split(" ")
    if len(parts) < 2 or parts[0] != MEMO_PREFIX or parts[1] not in _SCHEMA:
        return None
    if len(parts) - 2 > MAX_FIELDS:
        return None
    fields: dict[str, str] = {}
    for p in parts[2:]:
        k, sep, v = p.partition("=")
        if not sep or not _KEY_RE.fullmatch(k) or not _VALUE_RE.fullmatch(v) or k in fields:
            return None
        fields[k] = v
    if set(fields) != _SCHEMA[parts[1]]:
        return None
    return Memo(parts[1], fields)
