"""The verifier side: issue challenges, check responses, sign verdicts.

``Verifier.check`` is the result form (always returns a signed :class:`Verdict` with a reason
per challenged step); ``Verifier.verify`` is the raising form. The numbered steps follow
docs/protocol.md §9:

(0) the kernel installed here is the one the commitment names, provider (distribution and
    version) included, and every artifact the job references is in this verifier's store with
    its hash (docs/kernels.md);
(1) the commitment's signature verifies and its job id is the id of its spec;
(2) the challenge belongs to the commitment, its indices are the ones its beacon derives, and
    it is the current one this verifier issued for the commitment (its ChallengeBook);
(3) the response bundle parses within the bounds this challenge sets (pocv.bundle.Expected);
(4) the response is for this job id, root, tree size and challenge;
(5) it opens exactly leaf 0 and i-1, i for each challenged i (fewer: those steps are MISSING);
    s_(i-1) whole, except s_0 and, for an exact kernel, where i-1 is challenged too;
(6) the multiproof over the opened states' digests leads to the committed root;
(7) the opened s_0 is the one the spec derives;
(8) each challenged step is judged by the kernel's one rule, ``Kernel.judge`` (schema of both
    states, then recompute and compare, or a cheaper sound check) on this verifier's device, in
    ascending order; an exact kernel's step whose s_(i-1) was not opened whole starts from the
    verifier's own s_(i-1), kept from step i-1 only if that step matched its committed leaf;
(9) the verdict is signed.

A response that fails (3)-(7) is the worker's fault and gives a FAIL verdict; inputs that fail
(0)-(2) are the caller's and raise.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Protocol

import numpy as np
from blake3 import blake3

from pocv.bundle import MAX_BUNDLE_BYTES, Expected, Response, answer_bytes_bound, probe_signature, signature_ok
from pocv.challenge import chunk_detection, derive_chunks, derive_indices, detection_probability, sample_size
from pocv.device import cpu_workers, resolve_device
from pocv.encoding import (
    ChunkLayout,
    State,
    decode_state,
    digest_encoded,
    encode_state,
    encoded_size,
    state_digest,
    verify_chunk,
)
from pocv.errors import (
    EvidenceError,
    InputError,
    MismatchError,
    ProofError,
    ProviderMismatch,
    Reason,
    SetupError,
    UnsignedResponse,
    VerificationFailed,
)
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for
from pocv.kernels.base import Comparison, Kernel
from pocv.kernels.params import ArtifactSource, use_artifacts
from pocv.keys import Signer, b58encode
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE
from pocv.merkle import verify_multiproof
from pocv.records import Challenge, Commitment, Outcome, Verdict

log = logging.getLogger(__name__)

#: what a worker's answer can be: a parsed bundle, its bytes, a binary file object (read
#: streamed), or None (refused or timed out: a FAIL). Never a path: opening files is the caller's.
ResponseInput = Response | bytes | bytearray | memoryview | BinaryIO | None


class ChallengeBook(Protocol):
    """Where a verifier keeps the challenge it issued last for each commitment (job id, root).

    A verifier judges only its current challenge: issuing a new one for a commitment retires
    the earlier ones, so a worker cannot answer an older challenge that happens to miss its
    faked steps. ``pocv.store.ChallengeFile`` keeps the book on disk for the CLI.
    """

    def issue(self, challenge: Challenge) -> None: ...

    def current(self, job_id: bytes, root: bytes) -> bytes | None:
        """The digest (``challenge_digest``) of the current challenge, or None if none is known."""
        ...


def challenge_digest(challenge: Challenge) -> bytes:
    """BLAKE3 of a challenge's signing bytes: names one issued challenge."""
    return bytes(blake3(challenge.signing_bytes()).digest())


class MemoryBook:
    """A :class:`ChallengeBook` in memory, the default: one per Verifier."""

    def __init__(self) -> None:
        self._current: dict[tuple[bytes, bytes], bytes] = {}

    def issue(self, challenge: Challenge) -> None:
        self._current[(challenge.job_id, challenge.root)] = challenge_digest(challenge)

    def current(self, job_id: bytes, root: bytes) -> bytes | None:
        return self._current.get((job_id, root))


class _Judged:
    """The bundle a verdict names: its body's digest and whether the worker signed it."""

    def __init__(self) -> None:
        self.digest = bytes(32)
        self.signed = False


def _judge_by_leaf(kernel: Kernel, prev: State, leaf: bytes, i: int, spec: JobSpec, device: str) -> Comparison:
    """An exact kernel's step ``i`` opened by its leaf value: ``step(prev)`` must have the
    committed digest ``leaf`` (docs/protocol.md §9 (8)). With judge's guarantees: ``prev`` is
    checked against the schema first, and whatever the kernel raises on a hostile ``prev`` is a
    bad state, never an exception (the verifier's own MemoryError and SetupError pass)."""
    return _recompute_by_leaf(kernel, prev, leaf, i, spec, device, keep=False)[0]


def _recompute_by_leaf(kernel: Kernel, prev: State, leaf: bytes, i: int, spec: JobSpec, device: str, *,
                       keep: bool) -> tuple[Comparison, bytes | None]:
    """:func:`_judge_by_leaf`, and with ``keep`` the canonical bytes of the verifier's own
    ``s_i`` when their digest is the committed ``leaf`` (None otherwise): the bytes the worker
    committed to, which the next challenged step ``i + 1`` of a chain starts from (§8)."""
    why = kernel.check_schema(prev, spec)
    if why is not None:
        return Comparison(False, f"state {i - 1}: {why}", bad_state=True), None
    mine: bytes | None = None
    try:
        expected = kernel.step(prev, i, spec, device)
        if keep:  # the canonical bytes, hashed: the next step decodes exactly what a worker would send
            mine = encode_state(expected)
            got = digest_encoded(mine)
        else:
            got = state_digest(expected)
    except EvidenceError as e:
        return Comparison(False, str(e), bad_state=True), None
    except (MemoryError, SetupError):
        raise
    except Exception as e:  # the engine's guarantee: a state that breaks the kernel is a FAIL
        log.error("kernel %s@%s raised %s while recomputing step %d; judged as a bad state",
                  kernel.name, kernel.version, type(e).__name__, i, exc_info=True)
        return Comparison(False, f"the kernel cannot step from state {i - 1}: {type(e).__name__}",
                          bad_state=True), None
    if got == leaf:
        return Comparison(True), mine
    return Comparison(False, f"the recomputed state {i} has digest {got.hex()[:16]}..., the committed leaf is "
                             f"{bytes(leaf).hex()[:16]}..."), None


def _judge_by_digest(kernel: Kernel, prev: State, leaf: bytes, i: int, spec: JobSpec,
                     device: str) -> tuple[Comparison | None, State | None]:
    """A step whose ``s_i`` is opened whole, for a kernel whose ``verify_step`` is the default
    (recompute, then compare): the verifier's own ``s_i`` is recomputed first, and when it has
    the committed digest ``leaf`` (the digest of the opened bytes, which the multiproof proved),
    the opened ``s_i`` is the verifier's own bit for bit, so the verdict is what ``compare``
    gives a state against itself (``Kernel._compare_equal``), without decoding the opened state
    or comparing it element by element. Returns (that verdict, None), or (None, the recomputed
    ``s_i`` or None) where it is not decided here (another digest, a schema that fails, a
    kernel that raised or cannot say): the caller judges the opened state then
    (``Kernel.judge_recomputed`` with the recomputed state, else ``judge``)."""
    if kernel.check_schema(prev, spec) is not None:
        return None, None
    try:
        mine = kernel.step(prev, i, spec, device)
        if state_digest(mine) != leaf or kernel.check_schema(mine, spec) is not None:
            return None, mine
        return kernel._compare_equal(mine, spec), None
    except (MemoryError, SetupError):
        raise
    except Exception:  # judge() judges it again and says why: a state that breaks the kernel is a FAIL
        return None, None


#: how the detail of a step left unjudged begins: an exact kernel's step whose s_(i-1) is not opened
#: whole and whose step i-1 did not pass (its outcome is MISSING; docs/protocol.md §9 (8))
NOT_JUDGED = "not judged: "


#: a kernel that judges steps together (its own verify_steps) gets them in batches holding at
#: most this many bytes of opened states (two per step), so checking holds a bounded memory
CHECK_BATCH_BYTES = 256 << 20


def _batches(indices: list[int], state_bytes: int) -> list[list[int]]:
    """``indices`` in consecutive batches of at most CHECK_BATCH_BYTES of states (one step at least)."""
    per = max(1, CHECK_BATCH_BYTES // max(1, 2 * state_bytes))
    return [indices[j : j + per] for j in range(0, len(indices), per)]


def _is_real_file(f: BinaryIO) -> bool:
    """Whether ``f`` is a file with a descriptor that can be read at offsets (not a BytesIO)."""
    try:
        f.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return True


class Verifier:
    """Challenges a commitment and checks the worker's response on ``device``."""

    def __init__(self, *, key: Signer, device: str = "cpu",
                 progress: Callable[[int, int], None] | None = None, book: ChallengeBook | None = None,
                 artifacts: ArtifactSource | None = None, workers: int | None = None) -> None:
        """``progress(done, total)`` is called after each challenged step is judged, in order;
        ``book`` keeps the challenge issued last per commitment (default: in memory, this
        instance); ``artifacts`` is this verifier's own artifact store (pocv.artifacts.ArtifactStore),
        where the artifacts a job references are resolved and hash-checked (None: the store in use,
        pocv.kernels.params.use_artifacts). ``workers``: challenged steps judged at once on the
        CPU for a kernel whose step is pure (Kernel.pure_step; any other kernel, and any
        accelerator, one at a time); None: the cores torch's threads leave free
        (pocv.device.cpu_workers). The verdict is the same whatever the number."""
        if workers is not None and (type(workers) is not int or workers < 1):
            raise InputError(f"verifier workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.artifacts = artifacts
        self.progress = progress
        self.book: ChallengeBook = MemoryBook() if book is None else book
        self.key = key
        self.device = resolve_device(device)  # InputError now, not a crash mid-check

    @property
    def public_key(self) -> bytes:
        return bytes(self.key.pubkey())

    def challenge(
        self,
        commitment: Commitment,
        *,
        beacon: bytes,
        confidence: float = DEFAULT_CONFIDENCE,
        cheat_fraction: float = DEFAULT_CHEAT_FRACTION,
        k: int | None = None,
        beacon_source: str | None = None,
    ) -> Challenge:
        """Indices from (job id, root, beacon); k from (p, f) unless given. The challenge becomes
        this verifier's current one for the commitment (earlier ones are retired).

        ``beacon_source`` says where the beacon came from, checkably (docs/protocol.md §7.1):
        ``slot:<s>:after:<c>`` for a chain slot hash, ``dispute:<id>``; by default
        ``nonce:<now>``, a verifier nonce drawn now, after the commitment was received."""
        if beacon_source is None:
            beacon_source = f"nonce:{int(time.time())}"
        if not isinstance(beacon, bytes) or len(beacon) != 32:
            raise InputError("a challenge needs a 32-byte beacon the worker could not know before committing")
        kernel = self.installed_kernel(commitment)  # (0) the worker's kernel is the one installed here
        commitment.verify_signature()
        kernel.check_limits(commitment.spec)
        explicit = k is not None
        if k is None:
            k = sample_size(confidence, cheat_fraction)
        elif not 0 <= cheat_fraction <= 1:
            raise InputError(f"cheat fraction f must be in [0, 1], got {cheat_fraction}")
        answer = answer_bytes_bound(min(k, commitment.steps), encoded_size(kernel.schema(commitment.spec)),
                                    commitment.tree_size)
        if answer > MAX_BUNDLE_BYTES:  # no honest worker could answer: refuse to ask
            raise InputError(f"a challenge of {k} steps needs an answer of up to {answer:,} bytes; a response is "
                             f"at most {MAX_BUNDLE_BYTES:,} bytes: ask for a lower confidence or a higher f")
        indices = derive_indices(commitment.job_id, commitment.root, beacon, commitment.steps, k)
        if explicit:  # record what k really gives, not a confidence it does not reach
            full = len(indices) >= commitment.steps
            confidence = 1.0 if full else detection_probability(len(indices), cheat_fraction, commitment.steps)
        challenge = Challenge(job_id=commitment.job_id, root=commitment.root, steps=commitment.steps,
                              beacon=beacon, indices=indices, confidence=confidence,
                              cheat_fraction=cheat_fraction, beacon_source=beacon_source).signed(self.key)
        self.book.issue(challenge)
        return challenge

    def installed_kernel(self, commitment: Commitment) -> Kernel:
        """(0) The kernel this verifier installed for ``commitment``, which must be the one the
        worker ran: same name, version and provider (distribution and version), else
        ProviderMismatch naming both. Then every artifact the job references must be in this
        verifier's store with its hash (ArtifactError) and a calibrated kernel's record present
        (NotCalibrated). Nothing else is done before this."""
        kernel = kernel_for(commitment.spec)
        if kernel.provider != commitment.provider:
            raise ProviderMismatch(
                f"the commitment's kernel {commitment.spec.kernel_ref} comes from {commitment.provider}, but this "
                f"verifier has {commitment.spec.kernel_ref} from {kernel.provider} installed: a verifier runs only "
                f"the code it installed; install {commitment.provider} to judge this job")
        with use_artifacts(self.artifacts):
            kernel.require(commitment.spec)
        return kernel

    # -- result form -----------------------------------------------------------------------

    def check(self, commitment: Commitment, challenge: Challenge, response: ResponseInput) -> Verdict:
        """Check ``response`` and return the signed verdict (see :meth:`_check`)."""
        self.installed_kernel(commitment)  # (0) before anything else
        with use_artifacts(self.artifacts):
            return self._check(commitment, challenge, response)

    def _check(self, commitment: Commitment, challenge: Challenge, response: ResponseInput) -> Verdict:
        """Check ``response`` and return the signed verdict (PASS or FAIL, reasons per step).

        ``response`` may be a :class:`Response`, raw bundle bytes or a binary file object open on
        a bundle (parsed here, streamed; a malformed bundle is a FAIL), or None (the worker
        refused or timed out: a FAIL). A path is refused with InputError: the caller opens files.
        """
        # (1) the commitment
        commitment.verify_signature()
        spec = commitment.spec
        kernel = kernel_for(spec)
        kernel.check_limits(spec)  # a job no honest worker can answer is not a job (SpecError)
        # (2) the challenge: issued by this verifier, for this commitment, with the k it promises
        challenge.verify_signature(expected_verifier=self.public_key)
        if challenge.k < commitment.steps and challenge.detection < challenge.confidence - 1e-9:
            raise MismatchError(f"challenge promises p = {challenge.confidence} at f = {challenge.cheat_fraction} "
                                f"but its {challenge.k} steps give only {challenge.detection:.6f}")
        if (challenge.job_id, challenge.root, challenge.steps) != (
                commitment.job_id, commitment.root, commitment.steps):
            raise MismatchError("challenge is not for this commitment (job id, root or steps differ)")
        derived = derive_indices(commitment.job_id, commitment.root, challenge.beacon, commitment.steps,
                                 challenge.k)
        if derived != challenge.indices:
            raise MismatchError("challenge indices are not the ones its beacon derives")
        current = self.book.current(commitment.job_id, commitment.root)
        if current is not None and current != challenge_digest(challenge):
            raise MismatchError("this challenge was retired: a newer challenge was issued for this commitment, "
                                "and a verifier judges only its current one")
        indices = challenge.indices
        judged = _Judged()  # what (9) names: set once the bundle is read

        def verdict(outcomes: Sequence[Outcome]) -> Verdict:
            # (9)
            failed = sum(not o.ok for o in outcomes)
            log.info("check job %s: %s, %d of %d challenged steps rejected%s", commitment.job_id.hex()[:16],
                     "FAIL" if failed else "PASS", failed, len(outcomes),
                     "" if judged.signed else " (bundle not signed by the worker)")
            return Verdict.create(job_id=commitment.job_id, root=commitment.root, beacon=challenge.beacon,
                                  kernel=spec.kernel_ref, outcomes=outcomes, steps=commitment.steps,
                                  cheat_fraction=challenge.cheat_fraction, key=self.key,
                                  bundle=judged.digest, bundle_signed=judged.signed)

        def note_probe(raw: bytes | BinaryIO, size: int) -> None:
            # a bundle that does not parse: is it still the worker's signed word? (else: transport)
            probe = probe_signature(raw, size)
            if probe is not None:
                judged.digest = probe[0]
                judged.signed = signature_ok(commitment.worker, probe[1], probe[2], probe[0])

        def all_fail(reason: Reason, detail: str) -> Verdict:
            return verdict([Outcome(i, reason, detail) for i in indices])

        if response is None:
            return all_fail(Reason.REFUSED, "no response")
        # (3) parse
        if not isinstance(response, Response):
            # (3) is bounded by this challenge before anything is read: the bundle's size by the
            # largest honest answer, its indices by the challenge's, each opened leaf by the set the
            # challenge opens, each state by the job's state size, the proof by the exact multiproof
            expect = Expected(job_id=commitment.job_id, root=commitment.root, tree_size=commitment.tree_size,
                              state_bytes=encoded_size(kernel.schema(spec)), indices=indices,
                              sample_chunks=spec.sample_chunks if kernel.samples_chunks() else 0)
            raw: bytes | BinaryIO
            if isinstance(response, bytes | bytearray | memoryview):
                raw, size, start = bytes(response), len(response), 0
            elif hasattr(response, "read") and hasattr(response, "seek"):
                raw, start = response, response.tell()
                size = response.seek(0, io.SEEK_END) - start
                response.seek(start)
            else:
                raise InputError(f"a response is a Response, bytes or a seekable binary file object, got "
                                 f"{type(response).__name__} (open the file yourself)")
            try:
                if isinstance(raw, bytes):
                    response = Response.from_bytes(raw, expect=expect)
                else:  # a real file is read in place: its states one at a time (bounded memory)
                    response = Response.read_from(raw, size, expect=expect, lazy=_is_real_file(raw))
            except EvidenceError as e:
                if not isinstance(raw, bytes):
                    raw.seek(start)
                if size <= max(expect.max_bundle_bytes(), 0):  # never hash more than an honest answer
                    note_probe(raw, size)
                reason = (Reason.WRONG_JOB if isinstance(e, MismatchError) else
                          Reason.BAD_PROOF if isinstance(e, ProofError) else Reason.MALFORMED)
                return all_fail(reason, str(e))
        judged.digest = response.digest()
        judged.signed = response.signed_by(commitment.worker, judged.digest)
        # (4) for this job and challenge
        if (response.job_id, response.root, response.tree_size) != (
                commitment.job_id, commitment.root, commitment.tree_size):
            return all_fail(Reason.WRONG_JOB, "response is for another job id, root or tree size")
        if response.indices != indices:
            return all_fail(Reason.WRONG_JOB, "response answers other indices than the challenge")
        # (5) the opened set: every leaf whole or by value, nothing the challenge does not open
        want = set(Response.opened_leaves(list(indices)))
        have = set(response.opened())
        if have - want:
            return all_fail(Reason.MALFORMED,
                            f"response opens leaves that were not asked for: {sorted(have - want)[:8]}")
        if 0 not in have:
            return all_fail(Reason.MISSING, "response does not open s_0")
        sampling = spec.sample_chunks > 0 and kernel.samples_chunks()
        if response.chunks and not sampling:
            return all_fail(Reason.MALFORMED, "response opens chunks, but this job compares whole states")
        # (6) the multiproof over what was opened: whole states by their digest, the rest by value
        digests = response.leaf_values()
        try:
            verify_multiproof(commitment.root, commitment.tree_size, digests, response.proof)
        except EvidenceError as e:  # ProofError, or a proof over a named limit
            return all_fail(Reason.BAD_PROOF, str(e))
        # (7) s_0 re-derived from the spec (the verifier's own s_0 is the one steps start from)
        s0 = kernel.init_state(spec, self.device)
        if state_digest(s0) != digests[0]:
            return all_fail(Reason.BAD_INIT, "opened s_0 is not the state the spec derives")
        exact = kernel.mode == "exact"
        # (8) recompute the challenged steps in ascending order: one step at a time (progress per
        # step), or, for a kernel whose check amortizes over steps (its own verify_steps), all of
        # them at once. s_(i-1) must be opened whole (s_0: the verifier's own; for an exact kernel
        # where i-1 is challenged too, also the verifier's own s_(i-1), recomputed at step i-1
        # and matched bit for bit against the committed leaf i-1); s_i whole, or by its leaf value
        # for an exact kernel: then the verifier's s_i must have the committed digest
        outcomes: dict[int, Outcome] = {}
        batched = type(kernel).verify_steps is not Kernel.verify_steps
        groups = _batches(list(indices), encoded_size(kernel.schema(spec))) if batched else [[i] for i in indices]
        challenged = set(indices)
        # (j, canonical bytes of s_j): the verifier's own s_j from a step j that passed by its leaf
        # value, kept only for the next step j + 1 and only while it is challenged: one state held
        carried: tuple[int, bytes] | None = None
        workers = self._workers(kernel, len(groups))
        # an opened s_i of a kernel that recomputes and compares is judged first by the digest of
        # the verifier's own s_i (_judge_by_digest): the opened bytes are decoded only if needed
        by_digest = not batched and type(kernel).verify_step is Kernel.verify_step
        # groups whose judgment runs on the pool, oldest first: (steps, indices judged, their
        # results); settled in order (outcomes, progress), at most `workers` in flight, so at most
        # that many groups' opened states are held at once
        pending: collections.deque[tuple[int, list[int], Future[list[Outcome]] | None]] = collections.deque()
        done = 0

        def outcome(i: int, r: Comparison) -> Outcome:
            return Outcome(i, Reason.OK, r.detail) if r.ok else Outcome(
                i, Reason.BAD_STATE if r.bad_state else Reason.MISMATCH, r.detail)

        def judge(items: list[tuple[State, State | None, int]]) -> list[Outcome]:
            """The outcomes of ``items``, in order; a claimed state None: judged by digest first."""
            out: dict[int, Outcome] = {}
            rest: list[tuple[State, State, int]] = []
            with np.errstate(all="ignore"):  # a hostile NaN is judged, not printed
                for prev, claimed, i in items:
                    if claimed is None:
                        r, mine = _judge_by_digest(kernel, prev, digests[i], i, spec, self.device)
                        if r is not None:
                            out[i] = outcome(i, r)
                            continue
                        try:
                            claimed = decode_state(response.states[i])
                        except EvidenceError as e:
                            out[i] = Outcome(i, Reason.BAD_STATE, str(e))
                            continue
                        if mine is not None:  # recomputed already: compared, not recomputed again
                            out[i] = outcome(i, kernel.judge_recomputed(prev, claimed, mine, i, spec))
                            continue
                    rest.append((prev, claimed, i))
                results = kernel.judge_many(rest, spec, self.device) if rest else []
            for (_, _, i), r in zip(rest, results, strict=True):
                out[i] = outcome(i, r)
            return [out[i] for _, _, i in items]

        def settle(n: int, steps: list[int], results: list[Outcome]) -> None:
            nonlocal done
            for i, o in zip(steps, results, strict=True):
                outcomes[i] = o
            done += n
            if self.progress is not None:
                self.progress(done, len(indices))

        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", RuntimeWarning)
            pool = (stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="pocv-check"))
                    if workers > 1 else None)
            try:
                for group in groups:
                    items: list[tuple[State, State | None, int]] = []
                    for i in group:
                        own = carried[1] if carried is not None and carried[0] == i - 1 else None
                        carried = None  # used by step i alone: never held past it
                        if (i - 1 not in response.states and i - 1 != 0 and own is None) or i not in have:
                            chained = exact and i - 1 in challenged and i in have
                            outcomes[i] = Outcome(i, Reason.MISSING, (
                                f"{NOT_JUDGED}state {i - 1} is not opened whole and step {i - 1} did not pass, so "
                                f"the verifier's own s_{i - 1} is not known to be the committed one" if chained else
                                f"state {i - 1} must be opened whole and state {i} opened"))
                            continue
                        if i in response.chunks and i not in response.states:
                            outcomes[i] = self._judge_sample(kernel, spec, response, challenge, digests, s0, i)
                            continue
                        if i not in response.states and not exact:
                            outcomes[i] = Outcome(i, Reason.MISSING,
                                                  f"state {i} of a tolerance kernel must be opened whole"
                                                  + (" or by a sample of its chunks" if sampling else ""))
                            continue
                        try:
                            # a state opened whole is judged from its opened bytes (proven by the
                            # multiproof), never replaced by the verifier's own; i - 1 = 0: the verifier's s_0
                            prev = (decode_state(response.states[i - 1]) if i - 1 in response.states else
                                    decode_state(own) if own is not None else s0)
                            own = None
                            if i not in response.states:
                                keep = i + 1 in challenged  # step i + 1 starts from this s_i (not opened whole)
                                with np.errstate(all="ignore"):
                                    r, mine = _recompute_by_leaf(kernel, prev, digests[i], i, spec, self.device,
                                                                 keep=keep)
                                outcomes[i] = outcome(i, r)
                                if r.ok and mine is not None:
                                    carried = (i, mine)
                                continue
                            items.append((prev, None if by_digest else decode_state(response.states[i]), i))
                        except EvidenceError as e:
                            outcomes[i] = Outcome(i, Reason.BAD_STATE, str(e))
                    steps = [i for _, _, i in items]
                    if pool is None:
                        settle(len(group), steps, judge(items) if items else [])
                        continue
                    pending.append((len(group), steps, pool.submit(contextvars.copy_context().run, judge, items)
                                    if items else None))
                    del items  # held by the pool's task alone: freed when it is judged
                    while len(pending) > workers or (pending and pending[0][2] is None):
                        n, steps, fut = pending.popleft()
                        settle(n, steps, fut.result() if fut is not None else [])
                while pending:
                    n, steps, fut = pending.popleft()
                    settle(n, steps, fut.result() if fut is not None else [])
            except BaseException:
                for _, _, fut in pending:
                    if fut is not None:
                        fut.cancel()
                raise
        return verdict([outcomes[i] for i in indices])

    def _workers(self, kernel: Kernel, groups: int) -> int:
        """Groups of challenged steps judged at once (see ``workers`` in :meth:`__init__`)."""
        if self.device != "cpu" or not kernel.step_is_pure():
            return 1
        return max(1, min(groups, self.workers if self.workers is not None else cpu_workers()))

    def _judge_sample(self, kernel: Kernel, spec: JobSpec, response: Response, challenge: Challenge,
                      digests: dict[int, bytes], s0: State, i: int) -> Outcome:
        """Step ``i`` whose ``s_i`` is opened by its leaf value and a sample of its chunks
        (docs/protocol.md §8.1): the chunks must be exactly the ones the beacon draws, each
        proven against that leaf value (which the multiproof proved), and close to the
        verifier's own s_i element by element (Kernel.judge_chunks). The detail states what the
        sample catches."""
        layout = ChunkLayout.from_schema(kernel.schema(spec))
        count = len(layout.chunks)
        want = derive_chunks(challenge.job_id, challenge.root, challenge.beacon, i, count, spec.sample_chunks)
        opened = response.chunks[i]
        got = tuple(c for c, _, _ in opened)
        if got != want:
            return Outcome(i, Reason.MALFORMED, f"state {i}: opens chunks {list(got)[:8]}, the beacon draws "
                                                f"{list(want)[:8]}")
        try:
            for index, data, path in opened:
                verify_chunk(digests[i], layout, index, data, path)
        except EvidenceError as e:
            return Outcome(i, Reason.BAD_PROOF, f"state {i}: {e}")
        try:
            prev = decode_state(response.states[i - 1]) if i - 1 in response.states else s0
        except EvidenceError as e:
            return Outcome(i, Reason.BAD_STATE, str(e))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            r = kernel.judge_chunks(prev, {c: d for c, d, _ in opened}, i, spec, self.device)
        sample = (f"s_{i} compared on {len(want)} of {count} chunks (a step differing in one chunk is caught "
                  f"with probability {chunk_detection(len(want), count):.3f})")
        if r.ok:
            return Outcome(i, Reason.OK, f"{r.detail}; {sample}" if r.detail else sample)
        return Outcome(i, Reason.BAD_STATE if r.bad_state else Reason.MISMATCH, f"{r.detail}; {sample}")

    # -- raising form ----------------------------------------------------------------------

    def verify(self, commitment: Commitment, challenge: Challenge, response: ResponseInput) -> Verdict:
        """Like :meth:`check`, but raise on FAIL: :class:`VerificationFailed` when the verdict is
        evidence against the worker, :class:`UnsignedResponse` (a transient error: fetch the
        bundle again) when the failed bundle was not signed by the committing worker. Both
        carry the signed verdict."""
        v = self.check(commitment, challenge, response)
        if not v.passed and not v.is_evidence:
            raise UnsignedResponse(f"FAIL on a response bundle that {b58encode(commitment.worker)} did not sign: "
                                   f"possibly corrupted in transit; fetch it again", v)
        if not v.passed:
            first = v.failures[0]
            raise VerificationFailed(
                f"FAIL: {len(v.failures)} of {len(v.outcomes)} challenged steps rejected; first: step "
                f"{first.index} {first.reason}: {first.detail}", v)
        return v
