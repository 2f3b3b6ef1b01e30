"""The one exception hierarchy of pocv, and the reason codes (docs/architecture.md §6).

Everything pocv raises on purpose derives from :class:`PocvError`, under three branches:

* :class:`EvidenceError` -- the evidence is bad (malformed bytes, a proof that does not
  verify, a signature that does not match, a state that does not recompute). Final: trying
  again gives the same answer. :class:`VerificationFailed`, the raising form of a FAIL
  verdict, is one of them.
* :class:`TransientError` -- I/O, chain or network trouble; trying again may help.
* :class:`InputError` -- the caller's mistake: a missing file, a bad argument, a record given
  where another was expected.

The library attaches no exit codes: the CLI maps classes to exit codes in one table
(``pocv.cli``). Every message says what was expected and what came.

:class:`Reason` is the reason code of one checked step, shared by verdicts and disputes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing only: records import this module
    from pocv.records import Verdict


class Reason(StrEnum):
    """Why a challenged step passed or failed. The order is the wire code (docs/protocol.md §10)."""

    OK = "OK"  # the opened state recomputes (exact) or lies within the bound (tolerance)
    MISMATCH = "MISMATCH"  # recomputed state differs / is outside the tolerance bound
    BAD_PROOF = "BAD_PROOF"  # the openings do not lead to the committed root
    BAD_STATE = "BAD_STATE"  # a state of the wrong names, dtypes or shapes, or not canonical
    MISSING = "MISSING"  # a challenged state was not opened
    MALFORMED = "MALFORMED"  # the response bundle does not parse or exceeds a limit
    WRONG_JOB = "WRONG_JOB"  # the response is for another job id, root or tree size
    BAD_INIT = "BAD_INIT"  # the opened s_0 is not the one the spec derives
    REFUSED = "REFUSED"  # no response (refusal or timeout)

    @property
    def code(self) -> int:
        """The byte that stands for this reason in signed bytes."""
        return _CODES[self]


_CODES: dict[Reason, int] = {r: i for i, r in enumerate(Reason)}


class PocvError(Exception):
    """Base of every error pocv raises on purpose."""


# -- the evidence is bad ---------------------------------------------------------------------


class EvidenceError(PocvError):
    """Bytes or records that cannot be accepted. Final."""


class MalformedError(EvidenceError):
    """Bytes that do not parse: wrong magic, truncated, a length over a limit, bad UTF-8."""


class LimitExceeded(MalformedError):
    """A length or count field claims more than a named limit allows."""


class EncodingError(MalformedError):
    """A tensor or state that has no canonical encoding (unknown dtype, bad shape)."""


class ProofError(EvidenceError):
    """A Merkle proof of the wrong shape, or one that does not lead to the committed root."""


class SignatureError(EvidenceError):
    """A signature that does not verify under the stated public key."""


class MismatchError(EvidenceError):
    """Records that do not belong together: another job id, root, tree size or challenge."""


class SpecError(EvidenceError):
    """A job spec that no kernel accepts: unknown kernel or version, bad parameters."""


class StateError(EvidenceError):
    """A state whose names, dtypes or shapes are not what the kernel produces."""


class VerificationFailed(EvidenceError):
    """Raised by ``Verifier.verify`` when the verdict is FAIL. Carries the signed verdict."""

    def __init__(self, message: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.verdict = verdict


# -- the caller's mistakes -------------------------------------------------------------------


class InputError(PocvError):
    """A missing or unreadable file, or an argument the library rejects (bad beacon, k)."""


class WrongRecordError(InputError):
    """A file that is recognisably another pocv record than the one expected."""


class SetupError(InputError):
    """This side cannot run or judge the job as it is installed: the kernel's provider differs
    from the one the commitment names, an artifact is missing or altered, or a tolerance kernel
    has no calibration record. Not evidence against the worker: ``Kernel.judge`` lets it through."""


class ProviderMismatch(SetupError):
    """The commitment names another kernel provider (distribution and version) than the one
    installed here: a verifier runs only code it installed itself."""


class ArtifactError(SetupError):
    """An artifact a job references is not in the local store, or its bytes do not hash to its
    reference. The message names the hash."""


class NotCalibrated(SetupError):
    """A tolerance kernel whose bound comes from a calibration record was asked to judge a job
    that references none."""


# -- try again -------------------------------------------------------------------------------


class TransientError(PocvError):
    """I/O, chain or network trouble; the operation may succeed if tried again."""


class StorageError(TransientError):
    """The trace directory cannot be read or written."""


class ChainError(TransientError):
    """The chain backend refused, failed or timed out."""


class UnsignedResponse(TransientError):
    """A FAIL on a response bundle the committing worker did not sign: it may be a relay's
    corruption, so it is not evidence against the worker; fetch the bundle again. Carries the
    (signed) verdict, whose ``bundle_signed`` is False."""

    def __init__(self, message: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.verdict = verdict


__all__ = [
    "ArtifactError",
    "ChainError",
    "EncodingError",
    "EvidenceError",
    "InputError",
    "LimitExceeded",
    "MalformedError",
    "MismatchError",
    "NotCalibrated",
    "PocvError",
    "ProofError",
    "ProviderMismatch",
    "Reason",
    "SetupError",
    "SignatureError",
    "SpecError",
    "StateError",
    "StorageError",
    "TransientError",
    "UnsignedResponse",
    "VerificationFailed",
    "WrongRecordError",
]
