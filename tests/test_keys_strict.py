"""pocv.keys.verify: RFC 8032 vectors and the malleability edge cases, through both libraries.

``verify`` checks the encoding rule itself (S below L; the key and R canonical and not of small
order) and the equation by ed25519-dalek (solders' ``verify_strict``) when solders is loaded, else
by OpenSSL. Every vector here goes through both libraries; the cases are built with a small
reference implementation of the curve (RFC 8032 section 5.1, plain Python integers) so that they
are real signatures, not random bytes: a case that the rule refuses is one that OpenSSL alone
accepts (it is listed with what each library says).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pocv import keys
from pocv.errors import SignatureError
from pocv.keys import Keypair, encoding_problem, verify, verify_dalek, verify_openssl

# -- a reference curve (RFC 8032 5.1), for building cases -----------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)
IDENTITY: Point = (0, 1, 1, 0)


def add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def mul(s: int, p: Point) -> Point:
    q = IDENTITY
    while s:
        if s & 1:
            q = add(q, p)
        p, s = add(p, p), s >> 1
    return q


def neg(p: Point) -> Point:
    return -p[0] % P, p[1], p[2], -p[3] % P


def same(p: Point, q: Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def recover_x(y: int, sign: int) -> int | None:
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    if x2 == 0:
        return 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if (x & 1) != sign else x


def decode(raw: bytes) -> Point | None:
    """Lenient: y is read mod p and x = 0 with the sign bit set is read as x = 0 (what OpenSSL does)."""
    v = int.from_bytes(raw, "little")
    y = (v & ((1 << 255) - 1)) % P
    x = recover_x(y, v >> 255)
    return None if x is None else (x, y, 1, x * y % P)


def encode(p: Point) -> bytes:
    zi = pow(p[2], -1, P)
    x, y = p[0] * zi % P, p[1] * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def noncanonical(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


_BY = 4 * pow(5, -1, P) % P
_BX = recover_x(_BY, 0)
assert _BX is not None
BASE: Point = (_BX, _BY, 1, _BX * _BY % P)


def h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def secret(seed: bytes) -> tuple[int, bytes]:
    digest = hashlib.sha512(seed).digest()
    a = int.from_bytes(digest[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    return a, digest[32:]


def le(n: int) -> bytes:
    return n.to_bytes(32, "little")


def order(p: Point) -> int:
    return next(k for k in (1, 2, 4, 8, L, 2 * L, 4 * L, 8 * L) if same(mul(k, p), IDENTITY))


# the torsion points: [L] of a point of the full group is in the subgroup of order 8
TORSION = sorted({encode(mul(L, (x, y, 1, x * y % P))) for y in range(2, 60)
                  if (x := recover_x(y, 0)) is not None})
assert len(TORSION) == 8


# -- RFC 8032 section 7.1 ------------------------------------------------------------------------

RFC8032 = [  # (secret seed, public key, message, signature): TEST 1, 2, 3 and SHA(abc)
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24"
     "655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb0"
     "0d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc0"
     "27beceea1ec40a"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     hashlib.sha512(b"abc").hexdigest(),
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9"
     "bef1177331a704"),
]

VERIFIERS: dict[str, Callable[[bytes, bytes, bytes], bool]] = {"openssl": verify_openssl, "dalek": verify_dalek}


def strict(pub: bytes, sig: bytes, msg: bytes, check: Callable[[bytes, bytes, bytes], bool]) -> bool:
    """The rule keys.verify applies, with the equation by ``check``."""
    return encoding_problem(pub, sig) is None and check(pub, sig, msg)


@pytest.mark.parametrize(("seed", "pub", "msg", "sig"), RFC8032)
def test_rfc8032_vectors(seed: str, pub: str, msg: str, sig: str) -> None:
    key = Keypair(bytes.fromhex(seed))
    assert bytes(key.pubkey()).hex() == pub
    assert key.sign_message(bytes.fromhex(msg)).hex() == sig  # Ed25519 is deterministic
    a, prefix = secret(bytes.fromhex(seed))  # and the reference agrees, so the cases below are real signatures
    assert encode(mul(a, BASE)).hex() == pub
    r = h(prefix, bytes.fromhex(msg))
    big_r = encode(mul(r, BASE))
    assert (big_r + le((r + h(big_r, bytes.fromhex(pub), bytes.fromhex(msg)) * a) % L)).hex() == sig
    for name, check in VERIFIERS.items():
        assert check(bytes.fromhex(pub), bytes.fromhex(sig), bytes.fromhex(msg)), name
        assert not check(bytes.fromhex(pub), bytes.fromhex(sig), bytes.fromhex(msg) + b"\x00"), name
    verify(bytes.fromhex(pub), bytes.fromhex(sig), bytes.fromhex(msg), "test")


# -- the edge cases ------------------------------------------------------------------------------

SEED = bytes(range(32))
A_SCALAR, PREFIX = secret(SEED)
A = encode(mul(A_SCALAR, BASE))


def honest(msg: bytes, *, r_point: Point | None = None, r: int | None = None, key: bytes = A) -> bytes:
    """A signature by SEED's scalar: R = r_point (default [r]B), S = r + H(R, key, msg) a."""
    r = h(PREFIX, msg) if r is None else r
    big_r = encode(mul(r, BASE) if r_point is None else r_point)
    return big_r + le((r + h(big_r, key, msg) * A_SCALAR) % L)


def forged_small(a_enc: bytes, r_enc: bytes) -> tuple[bytes, bytes] | None:
    """(message, signature) with S = 0 that satisfies the equation under a small-order key:
    [0]B = R + [k]A, found by trying messages (k mod the order of A is what matters)."""
    ap, rp = decode(a_enc), decode(r_enc)
    assert ap is not None and rp is not None
    for n in range(256):
        msg = b"any message %d" % n
        if same(rp, neg(mul(h(r_enc, a_enc, msg) % 8, ap))):  # [k]A = [k mod 8]A
            return msg, r_enc + le(0)
    return None


def cases() -> list[tuple[str, bytes, bytes, bytes, bool, bool]]:
    """(name, key, signature, message, OpenSSL's answer, dalek's answer), all found by the test's own run."""
    out: list[tuple[str, bytes, bytes, bytes, bool, bool]] = []
    msg = b"a verdict"
    sig = honest(msg)
    s = int.from_bytes(sig[32:], "little")

    def case(name: str, pub: bytes, signature: bytes, message: bytes) -> None:
        out.append((name, pub, signature, message, verify_openssl(pub, signature, message),
                    verify_dalek(pub, signature, message)))

    case("valid", A, sig, msg)
    case("S + L (the same signature, S not reduced)", A, sig[:32] + le(s + L), msg)
    case("S + 2L", A, sig[:32] + le(s + 2 * L), msg)
    case("S with the top bits set", A, sig[:32] + le(s | (7 << 253)), msg)
    case("S = L", A, sig[:32] + le(L), msg)
    case("R flipped", A, bytes([sig[0] ^ 1]) + sig[1:], msg)
    case("R not a curve point", A, noncanonical(2) + sig[32:], msg)  # y = 2 has no x
    case("key not a curve point", noncanonical(2), sig, msg)
    case("key of another message", A, sig, b"another verdict")
    # small-order keys and R: one signature verifies for any message under them (OpenSSL accepts)
    for a_enc in TORSION:
        for r_enc in TORSION:
            found = forged_small(a_enc, r_enc)
            if found is not None:
                ap, rp = decode(a_enc), decode(r_enc)
                assert ap is not None and rp is not None
                case(f"small-order key (order {order(ap)}), small-order R (order {order(rp)}), S = 0",
                     a_enc, found[1], found[0])
    case("R = identity, honest key (S = k a)", A, honest(msg, r_point=IDENTITY, r=0), msg)
    # mixed order: key = aB + T (T of order 8), cofactorless-valid when [k]T = 0 (both accept: not weak)
    t8 = next(p for t in TORSION if order(p := decode(t) or IDENTITY) == 8)
    mixed_key = encode(add(mul(A_SCALAR, BASE), t8))
    for n in range(512):
        m = b"mixed %d" % n
        r = h(PREFIX, m)
        big_r = encode(mul(r, BASE))
        if h(big_r, mixed_key, m) % 8 == 0:  # [k]T = 0 for T of order 8
            case("mixed-order key, [k]T = 0 (cofactorless-valid)", mixed_key, honest(m, key=mixed_key), m)
            break
    else:  # pragma: no cover - a chance of (7/8)^512
        raise AssertionError("no message with [k]T = 0 found")
    for n in range(512):  # mixed-order R too: R = rB + T', S = r + ka, with T' + [k]T = 0
        m = b"mixed R %d" % n
        r = h(PREFIX, m)
        hit = None
        for t in TORSION:
            tp = decode(t)
            assert tp is not None
            big_r = encode(add(mul(r, BASE), tp))
            if not same(tp, IDENTITY) and same(add(tp, mul(h(big_r, mixed_key, m) % 8, t8)), IDENTITY):
                hit = big_r + le((r + h(big_r, mixed_key, m) * A_SCALAR) % L)
                break
        if hit is not None:
            case("mixed-order key and mixed-order R (cofactorless-valid)", mixed_key, hit, m)
            break
    # non-canonical encodings (y >= p, or x = 0 with its sign bit): only small-order points can be
    # signed for without a discrete logarithm, so these are the ones that matter
    for name, enc in [("identity as y = p + 1", noncanonical(P + 1)),
                      ("identity as y = p + 1, sign set", noncanonical(P + 1, 1)),
                      ("identity with x = -0", noncanonical(1, 1)),
                      ("(0, -1) with x = -0", noncanonical(P - 1, 1)),
                      ("order 4 as y = p", noncanonical(P)),
                      ("order 4 as y = p, sign set", noncanonical(P, 1))]:
        for r_enc in TORSION:
            found = forged_small(enc, r_enc)
            if found is not None:
                case(f"non-canonical small-order key: {name}", enc, found[1], found[0])
                break
        if same(decode(enc) or BASE, IDENTITY):
            case(f"non-canonical R: {name}, honest key", A, enc + le(h(enc, A, msg) * A_SCALAR % L), msg)
    # a non-canonical encoding of a point of large order (y = 3 + p), as key and as R
    big = noncanonical(3 + P)
    case("non-canonical key of large order (y = p + 3)", big, sig, msg)
    case("non-canonical R of large order (y = p + 3)", A, big + sig[32:], msg)
    return out


CASES = cases()


def test_the_cases_cover_what_they_claim() -> None:
    names = [c[0] for c in CASES]
    assert sum(n.startswith("small-order key") for n in names) >= 20  # every order of key and of R
    assert {1, 2, 4, 8} <= {order(decode(c[1]) or BASE) for c in CASES if c[0].startswith("small-order key")}
    assert any("mixed-order R" in n for n in names)
    assert sum(n.startswith("non-canonical") for n in names) >= 8


@pytest.mark.parametrize(("name", "pub", "sig", "msg", "openssl", "dalek"), CASES, ids=[c[0] for c in CASES])
def test_the_strict_rule_is_one_rule_whichever_library(name: str, pub: bytes, sig: bytes, msg: bytes,
                                                      openssl: bool, dalek: bool) -> None:
    # what verify accepts with either library: never more than OpenSSL (today's path) accepts
    by_openssl, by_dalek = strict(pub, sig, msg, verify_openssl), strict(pub, sig, msg, verify_dalek)
    assert by_openssl == by_dalek
    assert not by_openssl or openssl
    # dalek's verify_strict alone already refuses all that the rule adds to OpenSSL
    assert by_dalek == dalek, (name, openssl, dalek)
    if by_openssl:
        verify(pub, sig, msg, "test")
    else:
        with pytest.raises(SignatureError):
            verify(pub, sig, msg, "test")


def test_what_openssl_alone_accepts_is_what_the_rule_adds() -> None:
    differ = sorted({c[0].split(" (")[0].split(":")[0] for c in CASES if c[4] != c[5]})
    assert all(c[4] for c in CASES if c[4] != c[5])  # where they differ, OpenSSL is the one that accepts
    assert differ == ["R = identity, honest key", "non-canonical small-order key",
                      "small-order key"], differ


def test_valid_cases_verify() -> None:
    valid = [c[0] for c in CASES if c[4] and c[5]]
    assert valid == ["valid", "mixed-order key, [k]T = 0 (cofactorless-valid)",
                     "mixed-order key and mixed-order R (cofactorless-valid)"]


def test_random_keys_and_tampering_agree() -> None:
    for i in range(60):
        key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
        k = Keypair(key.private_bytes_raw())
        msg = os.urandom(i)
        sig = k.sign_message(msg)
        pub = bytes(k.pubkey())
        flip = bytearray(sig)
        flip[i % 64] ^= 1 << (i % 8)
        for s, m in ((sig, msg), (bytes(flip), msg), (sig, msg + b"!"), (os.urandom(64), msg)):
            assert strict(pub, s, m, verify_openssl) == strict(pub, s, m, verify_dalek) == (s == sig and m == msg)


def test_verify_uses_dalek_once_solders_is_loaded_and_says_why_it_refuses() -> None:
    import solders.signature  # noqa: F401  # reason: the market loads it; verify then takes dalek

    msg = b"a verdict"
    verify(A, honest(msg), msg, "verdict")
    assert keys._dalek is not None
    with pytest.raises(SignatureError, match="small order"):
        verify(TORSION[0], TORSION[2] + le(0), msg, "verdict")
    with pytest.raises(SignatureError, match="not below the group order"):
        verify(A, honest(msg)[:32] + le(L), msg, "verdict")
    with pytest.raises(SignatureError, match="canonical point encoding"):
        verify(noncanonical(P + 3), honest(msg), msg, "verdict")
    with pytest.raises(SignatureError, match="does not verify under"):
        verify(A, honest(msg), b"another", "verdict")
