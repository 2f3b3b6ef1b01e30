"""pocv: proof-of-compute verification.

The public API (everything else is internal and may change)::

    from pocv import JobSpec, Prover, Verifier, load_keypair

    spec = JobSpec(kernel="gemm-int8", steps=1000, seed=7, params={"n": 256})
    worker = Prover(trace_dir="traces/job1", key=load_keypair("worker.json"))
    commitment = worker.run(spec, device="cpu")              # signed Merkle root
    verifier = Verifier(key=load_keypair("verifier.json"))
    challenge = verifier.challenge(commitment, beacon=beacon, confidence=0.999, cheat_fraction=0.1)
    response = worker.respond(challenge)
    verdict = verifier.check(commitment, challenge, response)   # result form
    verifier.verify(commitment, challenge, response)            # raising form

Importing ``pocv`` loads nothing heavy: each name is imported on first use (PEP 562), so a
scheduler that only parses records never loads torch, numba or solders
(docs/architecture.md §5).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: Final[dict[str, str]] = {
    "ChainError": "pocv.errors",
    "EvidenceError": "pocv.errors",
    "InputError": "pocv.errors",
    "PocvError": "pocv.errors",
    "Reason": "pocv.errors",
    "TransientError": "pocv.errors",
    "VerificationFailed": "pocv.errors",
    "Keypair": "pocv.keys",
    "JobSpec": "pocv.jobs",
    "Challenge": "pocv.records",
    "Commitment": "pocv.records",
    "Outcome": "pocv.records",
    "Verdict": "pocv.records",
    "derive_indices": "pocv.challenge",
    "sample_size": "pocv.challenge",
    "Response": "pocv.bundle",
    "Verifier": "pocv.check",
    "Prover": "pocv.prover",
    "resolve_spec": "pocv.kernels",
    "register_kernel": "pocv.kernels",
    "load_challenge": "pocv.store",
    "load_commitment": "pocv.store",
    "load_keypair": "pocv.store",
    "load_spec": "pocv.store",
    "load_verdict": "pocv.store",
    "save_keypair": "pocv.store",
}

__all__ = [
    "ChainError",
    "Challenge",
    "Commitment",
    "EvidenceError",
    "InputError",
    "JobSpec",
    "Keypair",
    "Outcome",
    "PocvError",
    "Prover",
    "Reason",
    "Response",
    "TransientError",
    "Verdict",
    "VerificationFailed",
    "Verifier",
    "derive_indices",
    "load_challenge",
    "load_commitment",
    "load_keypair",
    "load_spec",
    "load_verdict",
    "register_kernel",
    "resolve_spec",
    "sample_size",
    "save_keypair",
]


assert sorted(_EXPORTS) == __all__  # one list of public names


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pocv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), "register" if name == "register_kernel" else name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from pocv.bundle import Response
    from pocv.challenge import derive_indices, sample_size
    from pocv.check import Verifier
    from pocv.errors import (
        ChainError,
        EvidenceError,
        InputError,
        PocvError,
        Reason,
        TransientError,
        VerificationFailed,
    )
    from pocv.jobs import JobSpec
    from pocv.kernels import register as register_kernel
    from pocv.kernels import resolve_spec
    from pocv.keys import Keypair
    from pocv.prover import Prover
    from pocv.records import Challenge, Commitment, Outcome, Verdict
    from pocv.store import (
        load_challenge,
        load_commitment,
        load_keypair,
        load_spec,
        load_verdict,
        save_keypair,
    )
