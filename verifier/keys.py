"""ed25519 keypairs in Solana's formats, and the one sign/verify path of pocv's records.

A worker's or verifier's key is an ed25519 keypair; Solana keys are ed25519 too, so the key
that signs a commitment or a verdict is the key that settles on chain. pocv signs with the
``cryptography`` package and never needs solders for it (``pocv keygen`` and record parsing
stay light); :meth:`Keypair.to_solders` converts where a transaction must be signed.

Formats (as Solana's CLI writes and prints them): a public key is shown in base58; a keypair
file is a JSON array of the 64 bytes ``seed || public key``.
"""

from __future__ import annotations

import json
import secrets
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


def verify(pubkey: bytes, signature: bytes, message: bytes, what: str) -> None:
    """Raise SignatureError unless ``signature`` is ``pubkey``'s signature of ``message``."""
    if len(pubkey) != PUBKEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise SignatureError(f"{what} signature is malformed: expected a {PUBKEY_SIZE}-byte key and a "
                             f"{SIGNATURE_SIZE}-byte signature, got {len(pubkey)} and {len(signature)}")
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(signature, message)
    except InvalidSignature:
        raise SignatureError(f"{what} signature does not verify under {b58encode(pubkey)}") from None
    except ValueError as e:  # a key that is not a curve point
        raise SignatureError(f"{what} signature is malformed: {e}") from e


__all__ = ["Keypair", "PublicKey", "Signer", "as_keypair", "b58decode", "b58encode", "sign", "verify"]
