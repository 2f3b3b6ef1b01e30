"""The one exception hierarchy of pocv.

Two roots under :class:`PocvError`:

* :class:`EvidenceError` -- the evidence is bad (malformed bytes, a proof that does not
  verify, a signature that does not match, a state that does not recompute). Final: trying
  again gives the same answer. Inside ``Verifier.check`` these become a FAIL verdict; at the
  CLI they are "bad input" (exit 3) unless a verdict was produced.
* :class:`TransientError` -- I/O or chain trouble; trying again may help.

:class:`InputError` (missing or unreadable files, bad arguments the library can detect) and
:class:`VerificationFailed` (the raising form of a FAIL verdict) complete the set. Every class
carries ``exit_code``, the code the CLI exits with (documented in the README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from verifier.records import Verdict

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_CHAIN = 4
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE: a bug, never to be read as FAIL


class PocvError(Exception):
    """Base of every error pocv raises on purpose."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


# -- the evidence is bad ---------------------------------------------------------------------


class EvidenceError(PocvError):
    """Bytes or records that cannot be accepted. Final."""

    reason: ClassVar[str] = "MALFORMED"


class MalformedError(EvidenceError):
    """Bytes that do not parse: wrong magic, truncated, a length over a limit, bad UTF-8."""

    reason = "MALFORMED"


class LimitExceeded(MalformedError):
    """A length or count field claims more than a named limit allows."""

    reason = "LIMIT"


class EncodingError(MalformedError):
    """A tensor or state that has no canonical encoding (unknown dtype, bad shape)."""

    reason = "BAD_STATE"


class ProofError(EvidenceError):
    """A Merkle proof of the wrong shape, or one that does not lead to the committed root."""

    reason = "BAD_PROOF"


class SignatureError(EvidenceError):
    """A signature that does not verify under the stated public key."""

    reason = "BAD_SIGNATURE"


class MismatchError(EvidenceError):
    """Records that do not belong together: another job id, root, tree size or challenge."""

    reason = "MISMATCH"


class SpecError(EvidenceError):
    """A job spec that no kernel accepts: unknown kernel or version, bad parameters."""

    reason = "BAD_SPEC"


class StateError(EvidenceError):
    """A state whose names, dtypes or shapes are not what the kernel produces."""

    reason = "BAD_STATE"


# -- inputs and the environment ---------------------------------------------------------------


class InputError(PocvError):
    """A missing or unreadable file, or an argument the library rejects (bad beacon, k)."""

    exit_code = EXIT_BAD_INPUT


class TransientError(PocvError):
    """I/O or network trouble; the operation may succeed if tried again."""

    exit_code = EXIT_BAD_INPUT


class StorageError(TransientError):
    """The trace directory cannot be read or written."""


class ChainError(TransientError):
    """The chain backend refused, failed or timed out."""

    exit_code = EXIT_CHAIN


class VerificationFailed(PocvError):
    """Raised by ``Verifier.verify`` when the verdict is FAIL. Carries the signed verdict."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.verdict = verdict
