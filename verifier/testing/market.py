"""Stand-in compute for market tests: commitments and verdicts made up without running a job.

:func:`run_market_demo <pocv.market.demo.run_market_demo>` takes the compute side as two
callbacks (``commit`` and ``verify``). These stand-ins exercise every chain step of a round with
no computation at all: the "honest" root is a fixed digest of the spec, a cheater's root is
random, and the stand-in verifier signs PASS for the honest root and a FAIL for any other. The
verdicts are fabricated -- nothing was checked -- so they belong in tests, never in a product.
"""

from __future__ import annotations

import os

from blake3 import blake3

from pocv.errors import Reason
from pocv.jobs import JobSpec
from pocv.keys import Signer
from pocv.records import Commitment, Outcome, Verdict

STAND_IN_CONTEXT = "pocv demo stand-in root"


def stand_in_root(spec: JobSpec) -> bytes:
    """The root the stand-in honest worker commits for ``spec`` (a digest of the spec)."""
    return bytes(blake3(spec.canonical_json(), derive_key_context=STAND_IN_CONTEXT).digest())


def stand_in_commit(spec: JobSpec, key: Signer, honest: bool) -> Commitment:
    """Stand-in for the prover: the 'honest' root is :func:`stand_in_root`, a cheater's is random."""
    root = stand_in_root(spec) if honest else os.urandom(32)
    return Commitment.create(spec=spec, root=root, key=key, fingerprint={"device": "stand-in"})


def stand_in_verify(commitment: Commitment, beacon: bytes, source: str, key: Signer) -> Verdict:
    """Stand-in for the verifier: a signed PASS iff the root is :func:`stand_in_root` (nothing is
    recomputed; the one outcome's step is drawn from the beacon)."""
    ok = commitment.root == stand_in_root(commitment.spec)
    return stand_in_verdict(job_id=commitment.job_id, root=commitment.root, beacon=beacon,
                            kernel=commitment.spec.kernel_ref, key=key, ok=ok, steps=commitment.steps)


def stand_in_verdict(*, job_id: bytes, root: bytes, beacon: bytes, kernel: str, key: Signer, ok: bool = True,
                     steps: int = 4) -> Verdict:
    """A verdict that settles like a real one: every one of ``steps`` steps checked (detection 1),
    the first a MISMATCH unless ``ok``, and a FAIL on a bundle the worker signed (evidence)."""
    outcomes = [Outcome(i, Reason.MISMATCH if (i == 1 and not ok) else Reason.OK,
                        "stand-in: a recomputed state differs" if (i == 1 and not ok) else "")
                for i in range(1, steps + 1)]
    return Verdict.create(job_id=job_id, root=root, beacon=beacon, kernel=kernel, outcomes=outcomes,
                          cheat_fraction=0.1, key=key, steps=steps,
                          bundle=blake3(b"stand-in bundle" + root).digest(), bundle_signed=True)


__all__ = ["stand_in_commit", "stand_in_root", "stand_in_verdict", "stand_in_verify"]
