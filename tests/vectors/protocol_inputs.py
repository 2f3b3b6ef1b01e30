"""Fixed inputs of the protocol vectors (tests/vectors/protocol.json), defined once.

Both the generator (``make_protocol_vectors.py``) and the test (``tests/test_protocol_vectors.py``)
import this module: every builder here is a pure function of constants (fixed key seeds, fixed
roots and beacons, fixed metadata), so the records it returns are byte-for-byte reproducible.
ed25519 signatures are deterministic (RFC 8032), so signatures are pinned too.

The one input that is computed rather than written down is the response bundle: a real tiny
gemm-int8 job (an exact kernel: the same bits on any device) is run by ``pocv.prover.Prover``.
Its commitment is re-created here with fixed metadata, because ``Prover.run`` records the
machine's fingerprint and environment (torch version, CPU, ...) and would sign different bytes
on every machine; the bundle itself depends only on the job and the challenge.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from solders.keypair import Keypair

from pocv.bundle import Response
from pocv.challenge import derive_indices, detection_probability
from pocv.dispute import DisputeOutcome, Round, detect_equivocation, dispute_id
from pocv.errors import Reason
from pocv.jobs import MAX_STEPS, JobSpec
from pocv.kernels import resolve_spec
from pocv.records import Challenge, Commitment, Outcome, Verdict

# -- keys, roots, beacons, metadata -----------------------------------------------------------

KEY_SEEDS: dict[str, int] = {"worker": 1, "verifier": 2, "referee": 3, "worker_b": 4}


def key(name: str) -> Keypair:
    return Keypair.from_seed(bytes([KEY_SEEDS[name]]) * 32)


ROOT_A = bytes(range(32))
ROOT_B = bytes(range(32, 64))
ROOT_C = bytes([0xAB]) * 32
BEACON = bytes([0x42]) * 32
BEACON_2 = bytes.fromhex("00ff" * 16)

FINGERPRINT: dict[str, Any] = {"accelerator": "none", "cpu": "x86_64", "cores": 16}
ENVIRONMENT: dict[str, Any] = {"torch": "2.13.0", "numpy": "2.3.0", "device": "cpu", "checkpoint_every": 64}
UNICODE_META: dict[str, Any] = {"notes": "Grüße — 计算 ✓", "list": [1, 2.5, True, None], "nested": {"b": 1, "a": [0]}}

# -- job specs ----------------------------------------------------------------------------------

SPECS: dict[str, dict[str, Any]] = {
    "gemm-int8-n16-l1": {"kernel": "gemm-int8", "steps": 8, "seed": 7, "params": {"n": 16, "layers": 1}},
    "gemm-int8-defaults": {"kernel": "gemm-int8", "steps": 100, "seed": 0},
    "gemm-int8-explicit-version": {"kernel": "gemm-int8", "steps": 8, "seed": 7, "params": {"layers": 1, "n": 16},
                                   "version": 1},
    "mlp-sgd-small": {"kernel": "mlp-sgd", "steps": 16, "seed": 3, "params": {"width": 8, "depth": 1, "batch": 4}},
    "mlp-sgd-defaults-max-seed": {"kernel": "mlp-sgd", "steps": MAX_STEPS, "seed": (1 << 63) - 1},
    "heat2d-defaults": {"kernel": "heat2d", "steps": 1, "seed": 1},
    "gemm-fp32-exact-n1": {"kernel": "gemm-fp32-exact", "steps": 2, "seed": 5, "params": {"n": 1}},
}


def spec(name: str) -> JobSpec:
    """The resolved spec (kernel version fixed, parameter defaults filled in): only it has a job id."""
    return resolve_spec(JobSpec.from_dict(SPECS[name]))


# -- challenge derivation -------------------------------------------------------------------------

#: name -> (spec name whose job id is used, root, beacon, n, k)
INDICES: dict[str, tuple[str, bytes, bytes, int, int]] = {
    "n8-k3": ("gemm-int8-n16-l1", ROOT_A, BEACON, 8, 3),
    "k-equals-n": ("gemm-int8-n16-l1", ROOT_A, BEACON, 8, 8),
    "k-above-n": ("gemm-int8-n16-l1", ROOT_A, BEACON, 8, 20),
    "n1-k1": ("gemm-int8-n16-l1", ROOT_A, BEACON, 1, 1),
    "n2-k1": ("gemm-int8-n16-l1", ROOT_B, BEACON_2, 2, 1),
    "n3-k2": ("mlp-sgd-small", ROOT_C, BEACON_2, 3, 2),
    "n700-k600-many-repeats": ("mlp-sgd-small", ROOT_A, BEACON, 700, 600),
    "n1e9+7-k100": ("gemm-int8-defaults", ROOT_B, BEACON, 10**9 + 7, 100),
    "max-steps-k16": ("mlp-sgd-defaults-max-seed", ROOT_C, BEACON, MAX_STEPS, 16),
    "n2^63+1-k8-rejection": ("gemm-int8-defaults", ROOT_A, BEACON_2, (1 << 63) + 1, 8),
}

#: name -> (confidence p, cheat fraction f)
SAMPLE_SIZES: dict[str, tuple[float, float]] = {
    "p0.999-f0.1": (0.999, 0.1),
    "p0.99-f0.1": (0.99, 0.1),
    "p0.99-f0.01": (0.99, 0.01),
    "p0.5-f0.5": (0.5, 0.5),
    "p0.75-f0.5-exact-power": (0.75, 0.5),
    "p0.9-f1": (0.9, 1.0),
    "p0.999999-f0.001": (0.999999, 0.001),
    "p0.01-f0.9": (0.01, 0.9),
}

# -- signed records -------------------------------------------------------------------------------


def commitments() -> dict[str, Commitment]:
    w = key("worker")
    return {
        "gemm-int8-with-meta": Commitment.create(spec=spec("gemm-int8-n16-l1"), root=ROOT_A, key=w,
                                                 fingerprint=FINGERPRINT, environment=ENVIRONMENT),
        "mlp-sgd-empty-meta": Commitment.create(spec=spec("mlp-sgd-small"), root=ROOT_C, key=w),
        "unicode-meta-other-worker": Commitment.create(spec=spec("gemm-int8-defaults"), root=ROOT_B,
                                                       key=key("worker_b"), fingerprint=UNICODE_META,
                                                       environment={"device": "cuda:0"}),
    }


def _challenge(spec_name: str, root: bytes, beacon: bytes, k: int, f: float, **extra: Any) -> Challenge:
    s = spec(spec_name)
    indices = derive_indices(s.job_id, root, beacon, s.steps, k)
    full = len(indices) >= s.steps
    p = 1.0 if full else detection_probability(len(indices), f)
    return Challenge(job_id=s.job_id, root=root, steps=s.steps, beacon=beacon, indices=indices,
                     confidence=p, cheat_fraction=f, **extra).signed(key("verifier"))


def challenges() -> dict[str, Challenge]:
    s = spec("mlp-sgd-defaults-max-seed")
    big = Challenge(job_id=s.job_id, root=ROOT_C, steps=s.steps, beacon=BEACON,
                    indices=derive_indices(s.job_id, ROOT_C, BEACON, s.steps, 5), confidence=0.99,
                    cheat_fraction=0.6).signed(key("verifier"))
    return {
        "three-of-eight": _challenge("gemm-int8-n16-l1", ROOT_A, BEACON, 3, 0.25),
        "every-step": _challenge("gemm-int8-n16-l1", ROOT_A, BEACON, 8, 0.1),
        "unicode-beacon-source": _challenge("mlp-sgd-small", ROOT_C, BEACON_2, 4, 0.1,
                                            beacon_source="slot:12346:after:12345"),
        "max-steps": big,
    }


LONG_DETAIL = "é" * 400  # 800 bytes of UTF-8: clipped to MAX_DETAIL_BYTES before signing


def verdicts() -> dict[str, Verdict]:
    v = key("verifier")
    s = spec("gemm-int8-n16-l1")
    common: dict[str, Any] = {"job_id": s.job_id, "root": ROOT_A, "beacon": BEACON, "kernel": s.kernel_ref, "key": v}
    a, b = spec("gemm-int8-defaults"), spec("gemm-int8-defaults")
    did = dispute_id(a.job_id, ROOT_A, ROOT_B)
    return {
        "pass": Verdict.create(**common, outcomes=[Outcome(i, "OK") for i in (2, 5, 7)], cheat_fraction=0.25,
                               steps=8),
        "pass-steps-not-recorded": Verdict.create(**common, outcomes=[Outcome(3, "OK", "max |d| 0 <= 0")],
                                                  cheat_fraction=0.1),
        "fail-mismatch": Verdict.create(**common, outcomes=[Outcome(2, "OK"), Outcome(5, "MISMATCH", "x[3,4]: 17 != 12"),
                                                            Outcome(7, "BAD_PROOF", "root differs")],
                                        cheat_fraction=0.25, steps=8),
        "fail-every-reason": Verdict.create(**common, outcomes=[Outcome(i, r, f"reason {r}")
                                                                for i, r in enumerate(Reason, 1)],
                                            cheat_fraction=0.1, steps=16),
        "fail-refused-long-unicode-detail": Verdict.create(**common, outcomes=[Outcome(1, "REFUSED", LONG_DETAIL)],
                                                           cheat_fraction=0.1, steps=8),
        "fail-dispute-liar": Verdict.create(job_id=b.job_id, root=ROOT_B, beacon=did, kernel=b.kernel_ref,
                                            outcomes=[Outcome(37, "MISMATCH", "dispute: first divergent step")],
                                            cheat_fraction=1, key=key("referee"), steps=b.steps),
    }


def dispute_outcomes() -> dict[str, DisputeOutcome]:
    s = spec("gemm-int8-n16-l1")
    base: dict[str, Any] = {"job_id": s.job_id, "kernel": s.kernel_ref, "steps": s.steps, "root_a": ROOT_A,
                            "root_b": ROOT_B, "worker_a": bytes(key("worker").pubkey()),
                            "worker_b": bytes(key("worker_b").pubkey()), "referee": bytes(32)}
    same, va, vb = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    # steps 8: lo, hi = 0, 8; leaf 4 agrees -> (4, 8); leaf 6 differs -> (4, 6); leaf 5 agrees -> step 6
    full = (Round(4, True, same, same), Round(6, False, va, vb), Round(5, True, same, same))
    ref = key("referee")
    one = spec("gemm-fp32-exact-n1")
    return {
        "exact-mismatch-liar-b": DisputeOutcome(**base, rounds=full, step=6, case="exact-mismatch", liars=("B",),
                                                detail="B's s_6 is not the recomputed one").sign(ref),
        "both-within-bound": DisputeOutcome(**base, rounds=full, step=6, case="both-within-bound", liars=(),
                                            detail="").sign(ref),
        "refused-after-one-round": DisputeOutcome(**base, rounds=full[:1], step=0, case="refused", liars=("A",),
                                                  detail="A did not answer round 1 — timeout").sign(ref),
        "bad-init-both-two-steps": DisputeOutcome(**{**base, "job_id": one.job_id, "kernel": one.kernel_ref,
                                                     "steps": one.steps}, rounds=(Round(1, False, va, vb),),
                                                  step=1, case="bad-init", liars=("A", "B"),
                                                  detail=LONG_DETAIL).sign(ref),
    }


def equivocation_verdicts() -> dict[str, Verdict]:
    s = spec("gemm-int8-n16-l1")
    w = key("worker")
    first = Commitment.create(spec=s, root=ROOT_A, key=w, fingerprint=FINGERPRINT)
    second = Commitment.create(spec=s, root=ROOT_B, key=w, fingerprint=FINGERPRINT)
    v1, v2 = detect_equivocation(first, second).verdicts(key("referee"))
    return {"equivocation-first": v1, "equivocation-second": v2}


def signed_records() -> dict[str, dict[str, Any]]:
    """family -> {name: record}: every record kind that has ``signing_bytes``."""
    return {"commitment": commitments(), "challenge": challenges(), "verdict": verdicts(),
            "dispute_outcome": dispute_outcomes(), "equivocation_verdict": equivocation_verdicts()}


#: the signer of each family's records (the key whose public key must verify the signature)
SIGNER_FIELD: dict[str, str] = {"commitment": "worker", "challenge": "verifier", "verdict": "verifier",
                                "dispute_outcome": "referee", "equivocation_verdict": "verifier"}

# -- a complete response bundle -------------------------------------------------------------------

BUNDLE_SPEC = "gemm-int8-n16-l1"
BUNDLE_BEACON = bytes.fromhex("5eed" * 16)
BUNDLE_K = 3
BUNDLE_CHEAT_FRACTION = 0.25


def bundle_run() -> dict[str, Any]:
    """Run the bundle job for real and answer a fixed challenge.

    Returns the prover's root, the commitment (re-created with fixed metadata, see the module
    docstring), the signed challenge, the :class:`Response` and the verifier's verdict on it.
    """
    from pocv.check import Verifier
    from pocv.prover import Prover

    with tempfile.TemporaryDirectory() as tmp:
        prover = Prover(trace_dir=Path(tmp) / "trace", key=key("worker"))
        run = prover.run(spec(BUNDLE_SPEC))
        commitment = Commitment.create(spec=run.spec, root=run.root, key=key("worker"),
                                       fingerprint=FINGERPRINT, environment=ENVIRONMENT)
        verifier = Verifier(key=key("verifier"))
        challenge = verifier.challenge(commitment, beacon=BUNDLE_BEACON, k=BUNDLE_K,
                                       cheat_fraction=BUNDLE_CHEAT_FRACTION, beacon_source="nonce:1790000000")
        response: Response = prover.respond(challenge)
        verdict = verifier.check(commitment, challenge, response)
    return {"root": run.root, "commitment": commitment, "challenge": challenge, "response": response,
            "verdict": verdict}

# -- declared format versions, domains and contexts ------------------------------------------------

#: (module, name) of every constant that names a wire format or a hash/signature domain: a
#: deliberate format change bumps one of these, and the stored values make the bump visible.
CONSTANTS: tuple[tuple[str, str], ...] = (
    ("pocv.records", "COMMITMENT_DOMAIN"),
    ("pocv.records", "CHALLENGE_DOMAIN"),
    ("pocv.records", "VERDICT_DOMAIN"),
    ("pocv.records", "VERDICT_VERSION"),
    ("pocv._fields", "META_CONTEXT"),
    ("pocv.errors", "Reason"),
    ("pocv.dispute", "OUTCOME_DOMAIN"),
    ("pocv.dispute", "DISPUTE_ID_CONTEXT"),
    ("pocv.dispute", "CASES"),
    ("pocv.jobs", "JOB_CONTEXT"),
    ("pocv.challenge", "CHALLENGE_CONTEXT"),
    ("pocv.bundle", "MAGIC"),
    ("pocv.bundle", "BUNDLE_VERSION"),
    ("pocv.bundle", "BUNDLE_DOMAIN"),
    ("pocv.encoding", "MAGIC"),
    ("pocv.encoding", "FORMAT_VERSION"),
    ("pocv.encoding", "STATE_CONTEXT"),
    ("pocv.encoding", "STATE_TREE_VERSION"),
    ("pocv.encoding", "CHUNK_BYTES"),
    ("pocv.encoding", "HEADER_KEY_CONTEXT"),
    ("pocv.encoding", "CHUNK_KEY_CONTEXT"),
    ("pocv.encoding", "STATE_NODE_KEY_CONTEXT"),
    ("pocv.merkle", "LEAF_KEY_CONTEXT"),
    ("pocv.merkle", "NODE_KEY_CONTEXT"),
)


def constant(module: str, name: str) -> Any:
    """The constant as JSON: bytes as hex (and text), tuples as lists, an enum as its values in order."""
    import enum
    import importlib

    value = getattr(importlib.import_module(module), name)
    if isinstance(value, bytes):
        return {"hex": value.hex(), "text": value.decode("latin-1")}
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, type) and issubclass(value, enum.Enum):
        return [m.value for m in value]
    return value
