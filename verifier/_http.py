"""Signed HTTP messages between a verifier (or scheduler) and a worker (docs/network.md §3).

Every request and every response carries four headers: the signer's public key, a timestamp,
a nonce and an ed25519 signature. Pure: bytes and header mappings in, bytes out; the server
(:mod:`pocv.serve`) and the client (:mod:`pocv.client`) share it.

Request signing bytes::

    b"pocv http request v1\\x00"
    u8   length of the method, then the method (ASCII, upper case)
    u16  length of the path, then the path with its query (ASCII, as sent)
    32   BLAKE3 of the body (of b"" when there is none)
    u64  timestamp, milliseconds since the Unix epoch
    16   nonce
    32   the worker's public key (the audience: a request signed for one worker is refused by
         every other)

Response signing bytes::

    b"pocv http response v1\\x00"
    u16  status
    32   BLAKE3 of the request's signature (binds the response to one request)
    32   BLAKE3 of the body
    u64  timestamp, milliseconds
    16   nonce

A request is accepted when its key is one the worker accepts, its signature verifies, its
timestamp is within :data:`REPLAY_WINDOW_S` of the worker's clock, and its (key, nonce) was
not seen in the window (:class:`NonceCache`). A response is accepted when it is signed by the
worker the client expects and answers the client's own request.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from blake3 import blake3

from pocv.errors import MalformedError, SignatureError
from pocv.keys import Signer, b58decode, b58encode, sign, verify
from pocv.limits import PUBKEY_SIZE, SIGNATURE_SIZE

REQUEST_DOMAIN: Final = b"pocv http request v1\x00"
RESPONSE_DOMAIN: Final = b"pocv http response v1\x00"

H_KEY: Final = "X-Pocv-Key"
H_TIME: Final = "X-Pocv-Time"
H_NONCE: Final = "X-Pocv-Nonce"
H_SIGNATURE: Final = "X-Pocv-Signature"

NONCE_BYTES: Final = 16
#: a signed request or response is accepted within this many seconds of the receiver's clock
#: (both ways): the clocks of the two hosts must agree this well (NTP does far better)
REPLAY_WINDOW_S: Final = 30.0
#: (key, nonce) pairs remembered by one worker: a replay is refused while its timestamp is still
#: in the window; when the cache is full, requests are refused (503) until entries expire
MAX_NONCES: Final = 200_000
#: longest path (with query) a signed request may name
MAX_PATH_BYTES: Final = 2048

EMPTY_HASH: Final = bytes(blake3(b"").digest())
#: the audience of a request to GET /v1/info, which any worker answers: how a client learns a
#: worker's key (it then checks that key against the commitments it fetches)
ANY_AUDIENCE: Final = bytes(PUBKEY_SIZE)


def body_hash(body: bytes) -> bytes:
    return bytes(blake3(body).digest())


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Signed:
    """The four authentication headers of one message, parsed."""

    key: bytes
    time_ms: int
    nonce: bytes
    signature: bytes

    def headers(self) -> dict[str, str]:
        return {H_KEY: b58encode(self.key), H_TIME: str(self.time_ms), H_NONCE: self.nonce.hex(),
                H_SIGNATURE: self.signature.hex()}

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], what: str) -> Signed:
        """Parse the headers; MalformedError naming the first that is missing or malformed."""
        values = {}
        for name in (H_KEY, H_TIME, H_NONCE, H_SIGNATURE):
            value = headers.get(name)
            if value is None:
                raise MalformedError(f"{what} has no {name} header: every message is signed (docs/network.md §3)")
            values[name] = value
        key = b58decode(values[H_KEY], PUBKEY_SIZE, f"{what} {H_KEY}")
        t = values[H_TIME]
        if not (t.isascii() and t.isdigit() and 1 <= len(t) <= 16):
            raise MalformedError(f"{what} {H_TIME}: expected milliseconds since the epoch, got {t[:40]!r}")
        nonce = _hex(values[H_NONCE], NONCE_BYTES, f"{what} {H_NONCE}")
        signature = _hex(values[H_SIGNATURE], SIGNATURE_SIZE, f"{what} {H_SIGNATURE}")
        return cls(key=key, time_ms=int(t), nonce=nonce, signature=signature)


def _hex(text: str, size: int, what: str) -> bytes:
    if len(text) != 2 * size:
        raise MalformedError(f"{what}: expected {2 * size} hex digits, got {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise MalformedError(f"{what}: not hex: {e}") from e


def request_bytes(method: str, path: str, digest: bytes, time_ms: int, nonce: bytes, audience: bytes) -> bytes:
    m = method.upper().encode("ascii")
    try:
        p = path.encode("ascii")
    except UnicodeEncodeError as e:
        raise MalformedError(f"request path is not ASCII: {e}") from e
    if len(p) > MAX_PATH_BYTES:
        raise MalformedError(f"request path is {len(p)} bytes, at most {MAX_PATH_BYTES}")
    if len(audience) != PUBKEY_SIZE:
        raise MalformedError(f"audience is a {PUBKEY_SIZE}-byte public key, got {len(audience)} bytes")
    return (REQUEST_DOMAIN + struct.pack("<B", len(m)) + m + struct.pack("<H", len(p)) + p + digest
            + struct.pack("<Q", time_ms) + nonce + audience)


def response_bytes(status: int, request_signature: bytes, digest: bytes, time_ms: int, nonce: bytes) -> bytes:
    return (RESPONSE_DOMAIN + struct.pack("<H", status) + body_hash(request_signature) + digest
            + struct.pack("<Q", time_ms) + nonce)


def sign_request(key: Signer, method: str, path: str, digest: bytes, audience: bytes) -> Signed:
    t, nonce = now_ms(), secrets.token_bytes(NONCE_BYTES)
    sig = sign(key, request_bytes(method, path, digest, t, nonce, audience))
    return Signed(key=bytes(key.pubkey()), time_ms=t, nonce=nonce, signature=sig)


def sign_response(key: Signer, status: int, request_signature: bytes, digest: bytes) -> Signed:
    t, nonce = now_ms(), secrets.token_bytes(NONCE_BYTES)
    sig = sign(key, response_bytes(status, request_signature, digest, t, nonce))
    return Signed(key=bytes(key.pubkey()), time_ms=t, nonce=nonce, signature=sig)


class StaleError(SignatureError):
    """A signed message whose timestamp is outside the replay window."""


class ReplayError(SignatureError):
    """A request whose (key, nonce) was already accepted within the replay window."""


def check_fresh(signed: Signed, what: str, window_s: float = REPLAY_WINDOW_S, now: int | None = None) -> None:
    skew = abs((now_ms() if now is None else now) - signed.time_ms) / 1000
    if skew > window_s:
        raise StaleError(f"{what} timestamp is {skew:.1f} s from this host's clock; at most {window_s:.0f} s "
                         "(replay window) is accepted: check both clocks")


def verify_request(signed: Signed, method: str, path: str, digest: bytes, audience: bytes) -> None:
    verify(signed.key, signed.signature, request_bytes(method, path, digest, signed.time_ms, signed.nonce, audience),
           "request")


def verify_response(signed: Signed, expected_key: bytes, status: int, request_signature: bytes, digest: bytes) -> None:
    if signed.key != expected_key:
        raise SignatureError(f"response is signed by {b58encode(signed.key)}, expected the worker "
                             f"{b58encode(expected_key)}")
    verify(signed.key, signed.signature, response_bytes(status, request_signature, digest, signed.time_ms,
                                                        signed.nonce), "response")


class NonceCache:
    """(key, nonce) pairs seen in the replay window, bounded by ``capacity``."""

    def __init__(self, capacity: int = MAX_NONCES, window_s: float = REPLAY_WINDOW_S) -> None:
        self.capacity = capacity
        self.window_ms = int(window_s * 1000)
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # key || nonce -> expiry (ms), oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: int) -> None:
        while self._seen:
            first, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[first]

    def full(self) -> bool:
        self._expire(now_ms())
        return len(self._seen) >= self.capacity

    def add(self, signed: Signed) -> None:
        """Remember the pair; ReplayError if it was seen. A message is remembered until its
        timestamp leaves the window, so entries expire in insertion order give or take the
        window: the cache keeps each at least that long."""
        now = now_ms()
        self._expire(now)
        name = signed.key + signed.nonce
        if name in self._seen:
            raise ReplayError(f"request nonce {signed.nonce.hex()} from {b58encode(signed.key)} was already used: "
                              "a replayed request")
        # remembered until both its own window and every earlier entry's have passed: keeps order
        last = next(reversed(self._seen.values()), 0)
        self._seen[name] = max(last, signed.time_ms + self.window_ms, now + self.window_ms)


__all__ = [
    "ANY_AUDIENCE",
    "EMPTY_HASH",
    "MAX_NONCES",
    "REPLAY_WINDOW_S",
    "NonceCache",
    "ReplayError",
    "Signed",
    "StaleError",
    "body_hash",
    "check_fresh",
    "sign_request",
    "sign_response",
    "verify_request",
    "verify_response",
]
