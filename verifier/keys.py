"""ed25519 keypairs in Solana's formats, and the one sign/verify path of pocv's records.

A worker's or verifier's key is an ed25519 keypair; Solana keys are ed25519 too, so the key
that signs a commitment or a verdict is the key that settles on chain. pocv signs with the
``cryptography`` package and never needs solders for it (``pocv keygen`` and record parsing
stay light); :meth:`Keypair.to_solders` converts where a transaction must be signed.

Formats (as Solana's CLI writes and prints them): a public key is shown in base58; a keypair
file is a JSON array of the 64 bytes ``seed || public key``.

Verification (:func:`verify`) is RFC 8032's cofactorless check made strict: ``S`` must be below
the group order ``L``, and the public key and ``R`` must be canonical encodings of points that
are not of small order (the eight torsion points, under which one signature verifies for any
message). OpenSSL alone accepts small-order keys and ``R`` (and ``x = 0`` encoded with the sign
bit set); ed25519-dalek's ``verify_strict`` refuses them. The rule is checked here in Python
first, then the equation ``[S]B = R + [k]A`` (cofactorless) by one of two libraries, which then
decide the same thing (tests/test_keys_strict.py runs both on RFC 8032's vectors and on every
edge case): ed25519-dalek through solders when this process has already loaded solders (the
market does; ~55 us a check), else OpenSSL through ``cryptography`` (~140-190 us a check;
importing solders for it would cost ~30 ms, and record parsing stays light).
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, SupportsBytes

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pocv.errors import InputError, MalformedError, SignatureError
from pocv.limits import PUBKEY_SIZE, SIGNATURE_SIZE

if TYPE_CHECKING:  # typing only: solders loads when a transaction is signed
    import solders.keypair

SEED_SIZE: Final = 32
_P: Final = 2**255 - 19  # the field's prime: a point's y is encoded below it
_L: Final = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
_Y_BITS: Final = (1 << 255) - 1  # an encoding's y (its top bit is the sign of x)
#: the eight points of small order, canonically encoded, and the two with ``x = 0`` whose
#: encodings set x's sign bit (RFC 8032 refuses those; OpenSSL reads them as the points without it)
SMALL_ORDER_ENCODINGS: Final = frozenset(bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",  # the identity (order 1)
    "0100000000000000000000000000000000000000000000000000000000000080",  # the identity, x = -0
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, -1): order 2
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # (0, -1), x = -0
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
))


class Signer(Protocol):
    """What signs a record: pocv's :class:`Keypair` or a ``solders`` keypair."""

    def pubkey(self) -> SupportsBytes: ...

    def sign_message(self, message: bytes) -> SupportsBytes: ...


def b58encode(data: bytes) -> str:
    return base58.b58encode(data).decode("ascii")


def b58decode(text: str, size: int, what: str) -> bytes:
    """``size`` bytes from base58 ``text``; MalformedError naming ``what`` otherwise."""
    if not isinstance(text, str) or not 1 <= len(text) <= size * 138 // 100 + 1:
        raise MalformedError(f"{what}: expected base58 text of {size} bytes, got {str(text)[:90]!r}")
    try:
        raw = base58.b58decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise MalformedError(f"{what} is not base58: {e}") from e
    if len(raw) != size:
        raise MalformedError(f"{what}: expected {size} bytes of base58, got {len(raw)}")
    return bytes(raw)


class PublicKey:
    """An ed25519 public key: ``bytes()`` gives its 32 bytes, ``str()`` its base58 form."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != PUBKEY_SIZE:
            raise MalformedError(f"a public key is {PUBKEY_SIZE} bytes, got {raw!r:.80}")
        self._raw = raw

    @classmethod
    def from_string(cls, text: str) -> PublicKey:
        return cls(b58decode(text, PUBKEY_SIZE, "public key"))

    def __bytes__(self) -> bytes:
        return self._raw

    def __str__(self) -> str:
        return b58encode(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)


class Keypair:
    """An ed25519 keypair. ``Keypair()`` draws a new one from the OS's random source."""

    __slots__ = ("_private", "_public", "_seed")

    def __init__(self, seed: bytes | None = None) -> None:
        seed = secrets.token_bytes(SEED_SIZE) if seed is None else seed
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise InputError(f"an ed25519 seed is {SEED_SIZE} bytes, got {seed!r:.80}")
        self._seed = seed
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        return cls(bytes(seed))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Keypair:
        """From Solana's 64 bytes ``seed || public key``; the public half must match the seed."""
        if len(raw) != SEED_SIZE + PUBKEY_SIZE:
            raise InputError(f"a keypair is {SEED_SIZE + PUBKEY_SIZE} bytes, got {len(raw)}")
        key = cls(bytes(raw[:SEED_SIZE]))
        if key._public != bytes(raw[SEED_SIZE:]):
            raise InputError("the keypair's public half is not the key of its secret half")
        return key

    @classmethod
    def from_solana_json(cls, text: str | bytes) -> Keypair:
        """From a Solana CLI keypair file's text: a JSON array of 64 integers 0..255."""
        try:
            values: Any = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise InputError(f"not a Solana keypair file: {e}") from e
        if not (isinstance(values, list) and len(values) == SEED_SIZE + PUBKEY_SIZE and all(
                type(v) is int and 0 <= v <= 255 for v in values)):
            raise InputError("not a Solana keypair file: expected a JSON array of 64 integers 0..255")
        return cls.from_bytes(bytes(values))

    def to_solana_json(self) -> str:
        return json.dumps(list(bytes(self)))

    def __bytes__(self) -> bytes:
        return self._seed + self._public

    def pubkey(self) -> PublicKey:
        return PublicKey(self._public)

    def sign_message(self, message: bytes) -> bytes:
        return self._private.sign(bytes(message))

    def to_solders(self) -> solders.keypair.Keypair:
        """The same key as a solders keypair, to sign Solana transactions."""
        from solders.keypair import Keypair as SoldersKeypair  # solders loads only for the chain

        return SoldersKeypair.from_bytes(bytes(self))

    def __repr__(self) -> str:
        return f"Keypair(pubkey={self.pubkey()})"


def as_keypair(key: Signer) -> Keypair:
    """pocv's keypair for ``key`` (a solders keypair converts through its 64 bytes)."""
    if isinstance(key, Keypair):
        return key
    return Keypair.from_bytes(bytes(key))  # type: ignore[call-overload]


def sign(key: Signer, message: bytes) -> bytes:
    """``key``'s ed25519 signature of ``message`` (64 bytes)."""
    sig = bytes(key.sign_message(message))
    if len(sig) != SIGNATURE_SIZE:  # pragma: no cover - both signers give 64 bytes
        raise SignatureError(f"a signature is {SIGNATURE_SIZE} bytes, got {len(sig)}")
    return sig


def encoding_problem(pubkey: bytes, signature: bytes) -> str | None:
    """What makes (``pubkey``, ``signature``) unacceptable before any curve arithmetic, or None:
    ``S`` at or above the group order (a second form of the same signature), a public key or
    ``R`` that is not a canonical point encoding (y at or above p) or is a point of small order."""
    if int.from_bytes(signature[32:], "little") >= _L:
        return "its S is not below the group order (not canonical)"
    for name, point in (("public key", pubkey), ("signature's R", signature[:32])):
        if int.from_bytes(point, "little") & _Y_BITS >= _P:
            return f"the {name} is not a canonical point encoding"
        if point in SMALL_ORDER_ENCODINGS:
            return f"the {name} is a point of small order (one signature would verify for any message)"
    return None


def verify_openssl(pubkey: bytes, signature: bytes, message: bytes) -> bool:
    """The cofactorless equation, by OpenSSL (``cryptography``); False also for a key that is
    not a curve point."""
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


_dalek: Callable[[bytes, bytes, bytes], bool] | None = None


def _solders_verifier() -> Callable[[bytes, bytes, bytes], bool] | None:
    """ed25519-dalek's ``verify_strict`` through solders, if this process has loaded solders."""
    global _dalek
    if _dalek is None:
        signature_mod, pubkey_mod = sys.modules.get("solders.signature"), sys.modules.get("solders.pubkey")
        if signature_mod is None or pubkey_mod is None:
            return None
        from_sig, from_key = signature_mod.Signature.from_bytes, pubkey_mod.Pubkey.from_bytes

        def dalek(pubkey: bytes, signature: bytes, message: bytes) -> bool:
            return bool(from_sig(signature).verify(from_key(pubkey), message))

        _dalek = dalek
    return _dalek


def verify_dalek(pubkey: bytes, signature: bytes, message: bytes) -> bool:
    """The same equation by ed25519-dalek's ``verify_strict`` (solders, imported here if needed);
    False also for a key that is not a curve point."""
    from solders.pubkey import Pubkey  # reason: solders loads only where it is asked for (keys stays light)
    from solders.signature import Signature  # reason: as above

    return bool(Signature.from_bytes(signature).verify(Pubkey.from_bytes(pubkey), message))


def verify(pubkey: bytes, signature: bytes, message: bytes, what: str) -> None:
    """Raise SignatureError unless ``signature`` is ``pubkey``'s signature of ``message`` (the
    strict rule of the module's docstring)."""
    if len(pubkey) != PUBKEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise SignatureError(f"{what} signature is malformed: expected a {PUBKEY_SIZE}-byte key and a "
                             f"{SIGNATURE_SIZE}-byte signature, got {len(pubkey)} and {len(signature)}")
    pubkey, signature = bytes(pubkey), bytes(signature)
    problem = encoding_problem(pubkey, signature)
    if problem is not None:
        raise SignatureError(f"{what} signature is malformed: {problem}")
    dalek = _dalek or _solders_verifier()
    ok = dalek(pubkey, signature, message) if dalek is not None else verify_openssl(pubkey, signature, message)
    if not ok:
        raise SignatureError(f"{what} signature does not verify under {b58encode(pubkey)}")


__all__ = ["SMALL_ORDER_ENCODINGS", "Keypair", "PublicKey", "Signer", "as_keypair", "b58decode", "b58encode",
           "encoding_problem", "sign", "verify", "verify_dalek", "verify_openssl"]
