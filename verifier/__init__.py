"""pocv: proof-of-compute verification.

The public API (everything else is internal and may change)::

    from verifier import JobSpec, Prover, Verifier, load_keypair

    spec = JobSpec(kernel="gemm-int8", steps=1000, seed=7, params={"n": 256})
    worker = Prover(trace_dir="traces/job1", key=load_keypair("worker.json"))
    commitment = worker.run(spec, device="cpu")              # signed Merkle root
    verifier = Verifier(key=load_keypair("verifier.json"))
    challenge = verifier.challenge(commitment, beacon=beacon, confidence=0.999, cheat_fraction=0.1)
    response = worker.respond(challenge)
    verdict = verifier.check(commitment, challenge, response)   # result form
    verifier.verify(commitment, challenge, response)            # raising form
"""

from verifier.bundle import Response
from verifier.challenge import derive_indices, sample_size
from verifier.check import Verifier
from verifier.errors import (
    ChainError,
    EvidenceError,
    InputError,
    PocvError,
    TransientError,
    VerificationFailed,
)
from verifier.jobs import JobSpec
from verifier.prover import Prover
from verifier.records import Challenge, Commitment, Outcome, Verdict, load_keypair, save_keypair

__version__ = "0.1.0"

__all__ = [
    "ChainError",
    "Challenge",
    "Commitment",
    "EvidenceError",
    "InputError",
    "JobSpec",
    "Outcome",
    "PocvError",
    "Prover",
    "Response",
    "TransientError",
    "Verdict",
    "VerificationFailed",
    "Verifier",
    "derive_indices",
    "load_keypair",
    "sample_size",
    "save_keypair",
]
