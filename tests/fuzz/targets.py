"""Fuzz targets: every parser that takes bytes from someone else, and valid seeds for each.

A target takes ``bytes`` and calls one parser. The property every target must keep: the only
exceptions that escape are :class:`pocv.errors.PocvError` subclasses (typed, with a
message) -- never IndexError, struct.error, ValueError, OverflowError, UnicodeError,
RecursionError, MemoryError ... -- and no input makes it hang or allocate beyond its limits.

Structured targets (``inclusion``, ``multiproof``, ``state-header``) read their arguments out of
the fuzzed bytes, so a byte-level fuzzer explores proof shapes, sizes and indices.
"""

from __future__ import annotations

import functools
import json
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pocv.kernels import kernel_for, resolve_spec

TargetFn = Callable[[bytes], object]


# -- the targets -------------------------------------------------------------------------------


def _bundle(data: bytes) -> object:
    from pocv.bundle import Response

    return Response.from_bytes(data)


def _record(cls_name: str) -> TargetFn:
    def target(data: bytes) -> object:
        from pocv import dispute, records
        from pocv.jobs import JobSpec

        cls: Any = {"commitment": records.Commitment, "challenge": records.Challenge,
                    "verdict": records.Verdict, "jobspec": JobSpec,
                    "dispute-query": dispute.Query, "dispute-opening": dispute.Opening,
                    "dispute-outcome": dispute.DisputeOutcome, "dispute-session": dispute.Dispute,
                    "equivocation": dispute.Equivocation}[cls_name]
        return cls.from_json(data)

    target.__name__ = f"_{cls_name}"
    return target


def _state(data: bytes) -> object:
    from pocv.encoding import decode_state

    return decode_state(data)


def _take_proof(rest: bytes) -> list[bytes]:
    """Proof hashes from the fuzzed tail: a length byte then that many bytes, repeated."""
    out: list[bytes] = []
    pos = 0
    while pos < len(rest) and len(out) < 200:
        n = rest[pos]
        out.append(rest[pos + 1 : pos + 1 + n])
        pos += 1 + n
    return out


def _inclusion(data: bytes) -> object:
    """shift(1) root(32) size(u64) index(u64) value(32), then proof hashes (length-prefixed).

    ``size`` and ``index`` are shifted right by the low 6 bits of ``shift`` and its high 2 bits
    times 16, so small trees (the interesting ones) are common while huge values stay reachable.
    """
    from pocv.merkle import verify_inclusion

    head = data[:81].ljust(81, b"\0")
    shift, root = head[0], head[1:33]
    size, index = struct.unpack("<QQ", head[33:49])
    return verify_inclusion(root, size >> (shift & 63), index >> ((shift >> 6) * 16), head[49:81],
                            _take_proof(data[81:]))


def _multiproof(data: bytes) -> object:
    """shift(1) root(32) size(u64) count(u8), count * (index u16, value 32), then proof hashes."""
    from pocv.merkle import verify_multiproof

    head = data[:42].ljust(42, b"\0")
    shift, root, (size,), count = head[0], head[1:33], struct.unpack("<Q", head[33:41]), head[41]
    pos = 42
    values: dict[int, bytes] = {}
    for _ in range(count):
        chunk = data[pos : pos + 34]
        if len(chunk) < 2:
            break
        values[struct.unpack("<H", chunk[:2])[0]] = chunk[2:]
        pos += 34
    return verify_multiproof(root, size >> (shift & 63), values, _take_proof(data[pos:]))


TARGETS: dict[str, TargetFn] = {
    "bundle": _bundle,
    "commitment": _record("commitment"),
    "challenge": _record("challenge"),
    "verdict": _record("verdict"),
    "jobspec": _record("jobspec"),
    "state": _state,
    "inclusion": _inclusion,
    "multiproof": _multiproof,
    "dispute-query": _record("dispute-query"),
    "dispute-opening": _record("dispute-opening"),
    "dispute-outcome": _record("dispute-outcome"),
    "dispute-session": _record("dispute-session"),
    "equivocation": _record("equivocation"),
}
#: Crashes found in code this suite does not own, reported in BUGS-FOUND.md and not fixed yet:
#: (exception type, module.function that raised it) -> bug id. The property tests tolerate these
#: (and only these); tests/fuzz/test_regressions.py keeps each one as a strict xfail, so the
#: fix shows up as XPASS: then delete the entry.
KNOWN_OPEN: dict[tuple[str, str], str] = {
    # B1-B5 (huge numbers, lone surrogates, out-of-range indices, unbounded zero-size shapes) were
    # fixed in 27b49d3; their regression files now must pass. Add new open bugs here.
}


def known_open(crash: str) -> str | None:
    """The BUGS-FOUND.md id of a crash name ``<parser>-<Exception>-<module.function>``, if listed."""
    for (kind, where), bug in KNOWN_OPEN.items():
        if crash.endswith(f"-{kind}-{where}"):
            return bug
    return None


JSON_TARGETS = frozenset(t for t in TARGETS if t not in ("bundle", "state", "inclusion", "multiproof"))


def run_target(name: str, data: bytes) -> BaseException | None:
    """Call target ``name``; return the exception if it is NOT a typed PocvError, else None."""
    from pocv.errors import PocvError

    try:
        TARGETS[name](data)
    except PocvError:
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # the bug we are looking for (pyo3's PanicException included)
        return e
    return None


# -- seeds: one valid input (or a few) per target ------------------------------------------------


@functools.cache
def seeds() -> dict[str, list[bytes]]:
    """Valid inputs for every target, made by a small honest run (about a second, cached)."""
    from solders.keypair import Keypair

    from pocv import JobSpec, Prover, Verifier
    from pocv.dispute import Dispute, Opening, detect_equivocation
    from pocv.encoding import encode_state
    from pocv.merkle import MerkleTree

    tmp = Path(tempfile.mkdtemp(prefix="pocv-fuzz-seeds-"))
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=12, seed=5, params={"n": 16}))
    key = Keypair.from_seed(bytes([7]) * 32)
    prover = Prover(trace_dir=tmp / "t", key=key, checkpoint_every=4)
    c = prover.run(spec)
    v = Verifier(key=Keypair.from_seed(bytes([8]) * 32))
    ch = v.challenge(c, beacon=bytes(range(32)), k=3)
    resp = prover.respond(ch)
    verdict = v.check(c, ch, resp)
    mlp = resolve_spec(JobSpec(kernel="mlp-sgd", steps=3, seed=1, params={"width": 8, "depth": 2, "batch": 4}))
    mlp_state = encode_state(kernel_for(mlp).init_state(mlp))
    # a tolerance job compared by chunk samples: a bundle with a chunk section (docs/protocol.md §8.1)
    sampled = resolve_spec(JobSpec(kernel="mlp-sgd", steps=6, seed=1, params={"width": 8, "depth": 1, "batch": 4},
                                   sample_chunks=2))
    sp = Prover(trace_dir=tmp / "s", key=key)
    sc = sp.run(sampled)
    sampled_resp = sp.respond(v.challenge(sc, beacon=bytes(range(32)), k=2))
    assert sampled_resp.chunks

    # a second root for the same job by the same worker: a dispute and an equivocation
    from pocv.prover import answer_query
    from pocv.testing import make_liar, skip

    liar = make_liar(skip(0).at(7), trace_dir=tmp / "l", key=key, checkpoint_every=4)
    c2 = liar.run(spec)
    d = Dispute.open(c, c2)
    q = d.query()
    op = answer_query(prover, q)
    assert isinstance(op, Opening)
    d.submit(op, answer_query(liar, q))
    session = d.to_json().encode()
    q2 = q
    while not d.done:
        q2 = d.query()
        d.submit(answer_query(prover, q2), answer_query(liar, q2))  # the last is a step query
    outcome, _ = d.finish(key)

    tree = MerkleTree((tmp / "t" / "leaves.bin").read_bytes())
    leaf = 5
    incl = (b"\0" + tree.root + struct.pack("<QQ", tree.size, leaf) + tree.leaf_value(leaf)
            + b"".join(bytes([32]) + h for h in tree.inclusion_proof(leaf)))
    idx = [0, 3, 4, 9]
    multi = (b"\0" + tree.root + struct.pack("<QB", tree.size, len(idx))
             + b"".join(struct.pack("<H", i) + tree.leaf_value(i) for i in idx)
             + b"".join(bytes([32]) + h for h in tree.multiproof(idx)))
    return {
        "bundle": [resp.to_bytes(), sampled_resp.to_bytes()],
        "commitment": [c.to_json().encode()],
        "challenge": [ch.to_json().encode()],
        "verdict": [verdict.to_json().encode()],
        "jobspec": [spec.to_json().encode(), mlp.to_json().encode(), sampled.to_json().encode()],
        "state": [next(iter(resp.states.values())), mlp_state],
        "inclusion": [incl],
        "multiproof": [multi],
        "dispute-query": [q.to_json().encode(), q2.to_json().encode()],
        "dispute-opening": [op.to_json().encode()],
        "dispute-outcome": [outcome.to_json().encode()],
        "dispute-session": [session],
        "equivocation": [detect_equivocation(c, c2).to_json().encode()],
    }


def check_seeds_parse() -> None:
    """Every seed parses without any error (so mutations start from valid inputs)."""
    for name, items in seeds().items():
        for data in items:
            TARGETS[name](data)


def json_loads_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
