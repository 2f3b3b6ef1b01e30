"""The field parsers every JSON record shares (commitments, challenges, verdicts, disputes).

Each takes a value that came out of ``json.loads`` and either returns it checked and
converted, or raises :class:`~pocv.errors.MalformedError` (or ``LimitExceeded``) with a
message that names the field, what was expected and what came.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from blake3 import blake3

from pocv.errors import InputError, LimitExceeded, MalformedError
from pocv.keys import b58decode, b58encode
from pocv.limits import DIGEST_SIZE, MAX_META_BYTES, MAX_RECORD_BYTES, PUBKEY_SIZE, SIGNATURE_SIZE

META_CONTEXT: Final = "pocv 2026-11 metadata v1"
_HEX_RE: Final = re.compile(r"[0-9a-f]*")


def load_record_json(text: str | bytes, what: str, *, limit: int = MAX_RECORD_BYTES,
                     version: int | None = 1) -> dict[str, Any]:
    """Parse a JSON record whose ``type`` is ``what``: size-limited, an object, of that type,
    and (unless ``version`` is None) of that format version."""
    if not isinstance(text, str | bytes):
        raise MalformedError(f"{what}: expected JSON text, got {type(text).__name__}")
    if len(text) > limit:
        raise LimitExceeded(f"{what} is at most {limit} bytes, got {len(text)}")
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise MalformedError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise MalformedError(f"{what}: expected a JSON object, got {type(d).__name__}")
    if d.get("type") != what:
        raise MalformedError(f"expected a {what} record, got type {str(d.get('type'))[:40]!r}")
    if version is not None and (type(d.get("version")) is not int or d.get("version") != version):
        raise MalformedError(f"{what} version: expected {version}, got {str(d.get('version'))[:20]}")
    return d


def known_fields(d: Mapping[str, Any], what: str, allowed: set[str]) -> None:
    """Refuse fields other than ``allowed`` (``type`` and ``version`` are always allowed)."""
    unknown = set(d) - allowed - {"type", "version"}
    if unknown:
        raise MalformedError(f"{what} has unknown fields {sorted(unknown)[:5]}")


def get(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``d[key]``, which must be present and of ``kind`` (a bool is never an int)."""
    if key not in d:
        raise MalformedError(f"{what} is missing field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MalformedError(f"{what}.{key}: expected {name}, got {type(v).__name__}")
    return v


def integer(value: object, lo: int, hi: int, what: str) -> int:
    """An int (never a bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MalformedError(f"{what}: expected an integer in {lo}..{hi}, got {str(value)[:40]}")
    return value


def fraction(value: object, what: str) -> float:
    """A finite number in [0, 1] (int or float; never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            (isinstance(value, int) or math.isfinite(value)) and 0 <= value <= 1):
        raise MalformedError(f"{what}: expected a number in [0, 1], got {str(value)[:40]}")
    return value


def fixed_bytes(value: object, size: int, what: str) -> bytes:
    """``value`` itself, which must be ``bytes`` of exactly ``size``."""
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise MalformedError(f"{what}: expected {size} bytes, got {got}")
    return value


def hex_bytes(value: object, size: int, what: str) -> bytes:
    """``size`` bytes from exactly ``2 * size`` lowercase hex digits."""
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX_RE.fullmatch(value):
        raise MalformedError(f"{what}: expected {2 * size} lowercase hex digits, got {str(value)[:80]!r}")
    return bytes.fromhex(value)


def digest(value: object, what: str) -> bytes:
    """A 32-byte digest (root, job id, beacon) from 64 lowercase hex digits."""
    return hex_bytes(value, DIGEST_SIZE, what)


def signature(value: object, what: str) -> bytes:
    """A 64-byte ed25519 signature from 128 lowercase hex digits."""
    return hex_bytes(value, SIGNATURE_SIZE, what)


def pubkey(value: object, what: str) -> bytes:
    """A 32-byte ed25519 public key from its base58 form."""
    if not isinstance(value, str):
        raise MalformedError(f"{what}: expected a base58 public key, got {type(value).__name__}")
    return b58decode(value, PUBKEY_SIZE, what)


def pubkey_text(raw: bytes) -> str:
    """The base58 form of a 32-byte public key, as records write it."""
    return b58encode(raw)


def utf8(value: object, what: str, limit: int) -> bytes:
    """The UTF-8 bytes of a string of at most ``limit`` bytes (lone surrogates refused)."""
    if not isinstance(value, str):
        raise MalformedError(f"{what}: expected a string, got {type(value).__name__}")
    try:
        data = value.encode()
    except UnicodeEncodeError as e:
        raise MalformedError(f"{what} is not valid UTF-8 text: {e}") from e
    if len(data) > limit:
        raise LimitExceeded(f"{what} is at most {limit} bytes, got {len(data)}")
    return data


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (with "..." when cut)."""
    raw = text.encode(errors="replace")
    if len(raw) <= limit:
        return raw.decode()
    return raw[: limit - 3].decode(errors="ignore") + "..."


def meta(value: object, what: str) -> Mapping[str, Any]:
    """A metadata mapping (fingerprint, environment) that has canonical JSON within the limit."""
    if not isinstance(value, Mapping):
        raise MalformedError(f"{what}: expected a JSON object, got {type(value).__name__}")
    try:  # exactly what meta_hash will hash: JSON-serializable and valid UTF-8 (no lone surrogates)
        size = len(json.dumps(dict(value), sort_keys=True, ensure_ascii=False).encode())
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as e:
        raise MalformedError(f"{what} is not canonical JSON: {e}") from e
    if size > MAX_META_BYTES:
        raise LimitExceeded(f"{what} is at most {MAX_META_BYTES} bytes of JSON, got {size}")
    return MappingProxyType(dict(value))


def meta_hash(value: Mapping[str, Any]) -> bytes:
    """Digest of a metadata mapping (fingerprint, environment) through its canonical JSON."""
    text = json.dumps(dict(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return bytes(blake3(text, derive_key_context=META_CONTEXT).digest())


def parse_hash(text: str, what: str = "hash") -> bytes:
    """32 bytes given by a person: 64 hex digits (``0x`` and upper case accepted) or base58,
    which is how Solana prints hashes and keys. InputError otherwise."""
    t = text.strip()
    h = t.lower().removeprefix("0x")
    if len(h) == 2 * DIGEST_SIZE and _HEX_RE.fullmatch(h):
        return bytes.fromhex(h)
    try:
        return b58decode(t, DIGEST_SIZE, what)
    except MalformedError:
        raise InputError(f"{what} must be 32 bytes as 64 hex digits or base58, got {text[:80]!r} "
                         f"({len(text)} chars)") from None
