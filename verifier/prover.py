"""The worker side: run a job, commit to every state, answer challenges.

``Prover.run`` executes ``s_0 -> ... -> s_n`` on the chosen device, hashes every state, keeps
all leaf digests and every c-th state in the trace directory (:mod:`pocv.trace`; c from the
checkpoint policy, ``auto`` by default), and signs the Merkle root. States are hashed and
written by a :class:`~pocv.trace.Committer` while the next step computes. A run that was
killed resumes from its last consistent checkpoint and reaches the same root; a trace computed
with another provider's kernel is refused. ``Prover.respond`` opens the challenged states,
recomputing the ones it did not keep from the nearest checkpoint (at most c-1 steps each,
independent segments on several threads where the kernel allows), with one multiproof for
all (docs/protocol.md §14).
"""

from __future__ import annotations

import collections
import contextvars
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pocv.artifacts import ArtifactStore
from pocv.bundle import BundleSummary, BundleWriter, ChunkOpening, NullSink, Response, Sink, whole_leaves
from pocv.challenge import derive_chunks, derive_indices
from pocv.device import cpu_workers, deterministic, environment, fingerprint, resolve_device
from pocv.dispute import Opening, Query
from pocv.encoding import (
    ChunkLayout,
    State,
    StateTree,
    Tensor,
    decode_state,
    digest_encoded,
    encode_state,
    encoded_size,
)
from pocv.errors import EvidenceError, InputError, MismatchError, ProviderMismatch, StorageError
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.params import ArtifactSource, use_artifacts
from pocv.keys import Signer
from pocv.limits import DEFAULT_MAX_ANSWER, DIGEST_SIZE
from pocv.merkle import IncrementalTree, MerkleTree
from pocv.records import Challenge, Commitment
from pocv.store import atomic_write
from pocv.trace import DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_POLICY, CheckpointPolicy, Committer, TraceStore

if TYPE_CHECKING:
    from pocv.kernels.base import Kernel

log = logging.getLogger(__name__)

#: progress(step_done, steps_total) is called at most this often (in steps) during a run
PROGRESS_EVERY = 64
#: threads that read and check kept states at once when answering (no step recomputed)
MAX_READERS = 8
#: states from this size are hashed on the committer's thread from the start (hashing 1 MiB takes
#: ~0.3 ms, more than a hand-over costs); smaller ones by an adaptive committer: on this thread
#: when that is cheap, else by a forked commit process (pocv._commitproc; where fork is missing,
#: whichever of the thread and this one gives the faster steps: trace.Committer, background=None)
BACKGROUND_MIN_BYTES = 1 << 20
Progress = Callable[[int, int], None]


class Prover:
    """A worker with a trace directory and a signing key."""

    def __init__(
        self,
        *,
        trace_dir: str | os.PathLike[str],
        key: Signer,
        checkpoint_every: int | None = None,
        progress: Progress | None = None,
        max_answer: int = DEFAULT_MAX_ANSWER,
        artifacts: ArtifactSource | None = None,
        checkpoint: CheckpointPolicy | str | int | None = None,
        background: bool | None = None,
        respond_workers: int | None = None,
    ) -> None:
        """``max_answer``: the most challenged steps this worker answers (the job's terms or the
        worker's offer set it); a challenge asking for more is refused, so a hostile verifier
        cannot make the worker redo the whole job. ``artifacts``: the worker's artifact store
        (default: ``$POCV_ARTIFACTS`` or the user's cache directory, pocv.artifacts).

        ``checkpoint``: which states the trace keeps (:class:`~pocv.trace.CheckpointPolicy`:
        ``"auto"`` by default, ``"all"``, ``"every:C"``, ``"budget:SIZE"``); ``checkpoint_every=C``
        is the same as ``checkpoint="every:C"``. ``background``: hash states on a committer
        thread while the next step computes (True), or on this thread (False; checkpoint writes
        are then synchronous too); None (the default): a thread for states of
        :data:`BACKGROUND_MIN_BYTES` and more; below it, this thread (checkpoints through the page
        cache written here too) when one state's commit takes less than
        :data:`~pocv.trace.BACKGROUND_MIN_COMMIT_S`, else a commit process forked from this one
        (Linux: the state copied into a shared ring, hashed and written outside this process's
        GIL; :mod:`pocv._commitproc`), or where fork is missing whichever of the thread and this
        one the committer measures to give the faster steps, measured again now and then
        (:class:`~pocv.trace.Committer`). The root and the files are the same either way.
        ``respond_workers``: segments recomputed at once when answering (default 1 on a CPU
        whose cores the kernel's own threads already use)."""
        self.artifacts: ArtifactSource = artifacts if artifacts is not None else ArtifactStore.default()
        if isinstance(max_answer, bool) or not isinstance(max_answer, int) or max_answer < 1:
            raise InputError(f"max_answer must be a positive integer, got {max_answer!r}")
        self.max_answer = max_answer
        self.trace_dir = Path(trace_dir)
        self.key = key
        if checkpoint_every is not None and checkpoint is not None:
            raise InputError("give checkpoint_every or checkpoint, not both")
        self.checkpoint_every = checkpoint_every
        self.checkpoint = (CheckpointPolicy.parse(checkpoint_every) if checkpoint_every is not None
                           else CheckpointPolicy.parse(checkpoint) if checkpoint is not None
                           else DEFAULT_CHECKPOINT_POLICY)
        self.background = background
        if respond_workers is not None and (isinstance(respond_workers, bool) or respond_workers < 1):
            raise InputError(f"respond_workers must be a positive integer, got {respond_workers!r}")
        self.respond_workers = respond_workers
        self.progress = progress

    # -- run -------------------------------------------------------------------------------

    def run(self, spec: JobSpec, *, device: str = "cpu") -> Commitment:
        """Run ``spec`` (or resume it), write ``commitment.json``, return the commitment."""
        with use_artifacts(self.artifacts):
            return self._run(spec, device)

    def _run(self, spec: JobSpec, device: str) -> Commitment:
        device = resolve_device(device)
        spec = resolve_spec(spec)
        kernel = kernel_for(spec)
        kernel.check_device(device)
        kernel.require(spec)  # every artifact the job references, hash-checked, before any work
        store = TraceStore.open(self.trace_dir, spec, checkpoint_every=self._interval(kernel, spec),
                                provider=kernel.provider)
        _check_provider(store.provider, kernel, f"trace {str(self.trace_dir)!r} was computed")
        done = self._existing_commitment(store, spec, kernel)
        if done is not None:
            return done
        n = spec.steps
        every = store.checkpoint_every
        with deterministic():
            resume = store.resume_point()
            if resume is None:
                log.info("run %s: %d steps on %s, trace %s", spec.kernel_ref, spec.steps, device, self.trace_dir)
                start = -1  # s_0 goes through the committer like every other state
                state = kernel.init_state(spec, device)
                tree = IncrementalTree()
            else:
                start, encoded = resume
                log.info("run %s: resuming after step %d of %d (trace %s)", spec.kernel_ref, start, n, self.trace_dir)
                state = {k: v.to(device) for k, v in decode_state(encoded).items()}
                leaves = store.read_leaves()
                tree = IncrementalTree.from_values(
                    [leaves[j : j + DIGEST_SIZE] for j in range(0, len(leaves), DIGEST_SIZE)])
            # s_i is hashed and written on the committer's thread while s_(i+1) computes; states
            # are shared with it when the step is the kernel's own (the built-ins never modify
            # their input), copied when a subclass or a plugin kernel might
            committer = self._committer(store, tree, kernel, spec)
            try:
                if start < 0:
                    committer.submit(0, state)
                    start = 0
                for i in range(start + 1, n + 1):
                    state = self._step(kernel, state, i, spec, device)
                    committer.submit(i, state)
                    if self.progress is not None and (i % PROGRESS_EVERY == 0 or i == n):
                        self.progress(i, n)
                committer.close()
                if committer.skipped:
                    log.info("run %s: %d of the states due kept were not (the disk was behind); answers "
                             "recompute them from the nearest earlier one", spec.kernel_ref, len(committer.skipped))
            except BaseException:
                committer.abort()
                raise
            store.sync()
            store.close()
            env = environment()
        env = {**env, "device": device, "checkpoint_every": every}
        commitment = Commitment.create(spec=spec, root=tree.root(), key=self.key,
                                       fingerprint=fingerprint(), environment=env, provider=kernel.provider)
        atomic_write(store.commitment_path, commitment.to_json().encode())
        log.info("run %s: committed root %s", spec.kernel_ref, commitment.root.hex())
        return commitment

    def _step(self, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        """One step of the job (the seam a simulated cheating worker overrides)."""
        return kernel.step(state, i, spec, device)

    def _committer(self, store: TraceStore, tree: IncrementalTree, kernel: Kernel, spec: JobSpec) -> Committer:
        """The committer for this run: hashing on its own thread for states of
        BACKGROUND_MIN_BYTES and more, adaptive below (this thread, else a commit process or the
        committer's thread) unless ``background`` says otherwise; checkpoint writes on writer
        threads unless ``background`` is False."""
        copy = not self._pure_steps(kernel)
        skip = self.checkpoint.best_effort  # auto and budgets: never wait for the disk (trace.Committer)
        if self.background is not None:
            return Committer(store, tree, background=self.background, copy=copy, skip_behind=skip)
        try:
            size = encoded_size(kernel.schema(spec))
        except Exception:  # a plugin's schema that cannot be sized: hash in the background
            size = BACKGROUND_MIN_BYTES
        return Committer(store, tree, background=True if size >= BACKGROUND_MIN_BYTES else None, async_writes=True,
                         copy=copy, skip_behind=skip)

    def _pure_steps(self, kernel: Kernel) -> bool:
        """Whether this prover's step is the kernel's own and the kernel declares it pure
        (:attr:`~pocv.kernels.base.Kernel.pure_step`): then the committer reads ``s_i`` while
        ``s_(i+1)`` computes without a copy, and respond may recompute segments at once."""
        return type(self)._step is Prover._step and kernel.step_is_pure()

    def _interval(self, kernel: Kernel, spec: JobSpec) -> int:
        """The checkpoint interval this prover's policy gives ``spec`` (used for a new trace)."""
        try:
            state_bytes = encoded_size(kernel.schema(spec))
        except Exception:  # a plugin's schema that cannot be sized: the policy's fallback interval
            state_bytes = 0
        if state_bytes <= 0:
            return self.checkpoint.every or DEFAULT_CHECKPOINT_EVERY
        return self.checkpoint.interval(spec.steps, state_bytes, k=None)

    def _existing_commitment(self, store: TraceStore, spec: JobSpec, kernel: Kernel) -> Commitment | None:
        """The commitment a finished run of this trace left, if it is this job's, signed by this
        worker's key; ProviderMismatch if it was computed with another provider's kernel (its
        root is that kernel's, and this one could not answer a challenge for it)."""
        path = store.commitment_path
        if not path.exists():
            return None
        try:
            c = Commitment.from_json(path.read_bytes())
        except (OSError, EvidenceError):
            return None  # unreadable or stale: recompute (the trace decides the root)
        if c.job_id != spec.job_id or c.worker != bytes(self.key.pubkey()):
            return None
        _check_provider(c.provider, kernel, f"trace {str(self.trace_dir)!r} holds a commitment computed")
        return c

    # -- respond ---------------------------------------------------------------------------

    def commitment(self) -> Commitment:
        store = TraceStore.open(self.trace_dir)
        try:
            return Commitment.from_json(store.commitment_path.read_bytes())
        except FileNotFoundError as e:
            raise InputError(f"trace {str(self.trace_dir)!r} has no commitment: the run is not complete") from e

    def respond(self, challenge: Challenge, *, device: str | None = None, whole: bool = False) -> Response:
        """Open the challenged states with one multiproof (docs/protocol.md §8): ``s_(i-1)`` whole
        and, for an exact kernel, ``s_i`` by its leaf value alone (the verifier recomputes it),
        for a tolerance kernel whole; ``s_0`` by value (the verifier derives it). For an exact
        kernel a run of consecutive challenged steps opens only the state before the run whole
        (the verifier carries its own recomputed, leaf-checked state along the run), so a step
        costs one state or less. ``whole=True`` opens every leaf whole (a larger answer that
        verifies the same).

        The bundle is built in memory (every opened state at once); :meth:`respond_to` writes
        it to a file as the states come, holding a bounded number of them. Both come from one
        writer (:meth:`_answer`): this response's ``to_bytes()`` is the bundle ``respond_to``
        writes, byte for byte, without serializing it and parsing it back (which copied and
        hashed every state twice more: 80% of an answer of 100 states of 4 MiB)."""
        response = self._answer(challenge, NullSink(), device=device, whole=whole, keep=True)[1]
        assert response is not None  # keep=True
        return response

    def respond_to(self, challenge: Challenge, f: Sink, *, device: str | None = None,
                   whole: bool = False) -> BundleSummary:
        """:meth:`respond`, streamed: the signed bundle is written to ``f`` (any binary sink, a
        pipe included) state by state as each is read or recomputed, in leaf order, so the
        worker holds at most a few segments' states at once (:meth:`workers` of them in flight),
        however large the answer. On an error part of a bundle may have been written: write to
        a temporary file and rename it (pocv.store.atomic_writer) where that matters."""
        return self._answer(challenge, f, device=device, whole=whole, keep=False)[0]

    def _answer(self, challenge: Challenge, f: Sink, *, device: str | None, whole: bool,
                keep: bool) -> tuple[BundleSummary, Response | None]:
        """Write the signed bundle answering ``challenge`` to ``f``; with ``keep``, also return it
        as a :class:`Response` made of what was written (the whole states held: :meth:`respond`)."""
        commitment, opened, whole_set, sampled = self._plan(challenge, whole)
        store, leaf_bytes, tree, full, values, run_device = self._open_plan(opened, whole_set, device)
        w = BundleWriter(f, job_id=commitment.job_id, root=commitment.root, tree_size=commitment.tree_size,
                         indices=challenge.indices, whole=full)
        chunks: dict[int, tuple[ChunkOpening, ...]] = {}  # sampled chunks: at most sample_chunks per step
        states: dict[int, bytes] = {}  # the whole states, held only with ``keep``
        with deterministic(), use_artifacts(self.artifacts):
            for j, data in self._iter_states(store, store.spec, sorted({*full, *sampled}), leaf_bytes, run_device):
                if j in sampled:
                    chunks[j] = _chunk_openings(data, sampled[j])
                if j in whole_set:
                    w.state(j, data)
                    if keep:
                        states[j] = data
        proof = tuple(tree.multiproof(opened))
        w.end_body(proof, values, chunks)
        summary = w.sign(self.key)
        if not keep:
            return summary, None
        return summary, Response(job_id=summary.job_id, root=summary.root, tree_size=summary.tree_size,
                                 indices=summary.indices, states=states, proof=proof, values=values,
                                 chunks=chunks, worker=summary.worker, signature=summary.signature)

    def _plan(self, challenge: Challenge,
              whole: bool) -> tuple[Commitment, list[int], set[int], dict[int, tuple[int, ...]]]:
        """(the commitment, the leaves a response to ``challenge`` opens, those opened whole,
        the chunks opened of each s_i compared by sample), after checking the challenge is for
        this trace, within max_answer, with derived indices."""
        commitment = self.commitment()
        if challenge.job_id != commitment.job_id or challenge.root != commitment.root:
            raise MismatchError(
                f"challenge is for job {challenge.job_id.hex()[:16]}... root {challenge.root.hex()[:16]}..., "
                f"this trace holds job {commitment.job_id.hex()[:16]}... root {commitment.root.hex()[:16]}...")
        if challenge.steps != commitment.steps:
            raise MismatchError(f"challenge says {challenge.steps} steps, the job has {commitment.steps}")
        if challenge.k > self.max_answer:
            raise InputError(f"the challenge asks for {challenge.k} steps; this worker answers at most "
                             f"{self.max_answer} (max_answer, set by the job's terms)")
        expected = derive_indices(challenge.job_id, challenge.root, challenge.beacon, commitment.steps, challenge.k)
        if challenge.indices != expected:
            raise MismatchError("challenge indices are not the ones its beacon derives")
        opened = Response.opened_leaves(list(challenge.indices))
        sampled: dict[int, tuple[int, ...]] = {}
        if whole:
            return commitment, opened, set(opened), sampled
        spec = TraceStore.open(self.trace_dir).spec
        kernel = kernel_for(spec)
        by_sample = spec.sample_chunks > 0 and kernel.samples_chunks()
        exact = kernel.mode == "exact"  # a sampled s_i is by value too, but its s_(i-1) is always whole
        keep = whole_leaves(challenge.indices, exact or by_sample, chain=exact and not by_sample)
        if by_sample:  # s_i by value and a beacon-drawn sample of its chunks (§8.1)
            count = len(ChunkLayout.from_schema(kernel.schema(spec)).chunks)
            for i in challenge.indices:
                if i not in keep:
                    sampled[i] = derive_chunks(challenge.job_id, challenge.root, challenge.beacon, i, count,
                                               spec.sample_chunks)
        return commitment, opened, keep, sampled

    def open(self, leaves: Sequence[int], *, device: str | None = None) -> tuple[dict[int, bytes], list[bytes]]:
        """Canonical bytes of the states at ``leaves`` and one multiproof for all of them.

        States that were not kept are recomputed from the nearest checkpoint on the device the
        run used (tolerance kernels reproduce their bits only there), and each is checked
        against its committed leaf before it is handed out.
        """
        states, _, proof = self.open_parts(leaves, whole=set(leaves), device=device)
        return states, proof

    def open_parts(self, leaves: Sequence[int], *, whole: set[int],
                   device: str | None = None) -> tuple[dict[int, bytes], dict[int, bytes], list[bytes]]:
        """(canonical bytes of the states at ``leaves`` that are in ``whole``, the committed leaf
        values of the others, one multiproof over all ``leaves``). A leaf opened by value is read
        from the trace's leaves: nothing is recomputed for it."""
        store, leaf_bytes, tree, full, values, run_device = self._open_plan(leaves, whole, device)
        states: dict[int, bytes] = {}
        if full:
            with deterministic(), use_artifacts(self.artifacts):
                states = dict(self._iter_states(store, store.spec, full, leaf_bytes, run_device))
        return states, values, tree.multiproof(sorted(set(leaves)))

    def _open_plan(self, leaves: Sequence[int], whole: set[int], device: str | None
                   ) -> tuple[TraceStore, bytes, MerkleTree, list[int], dict[int, bytes], str]:
        """(the trace, its leaves, their tree, the leaves to open whole, the values of the
        others, the device to recompute on), after checking the trace gives the committed root."""
        commitment = self.commitment()
        store = TraceStore.open(self.trace_dir)
        leaf_bytes = store.read_leaves()
        if len(leaf_bytes) != DIGEST_SIZE * commitment.tree_size:
            raise StorageError(f"trace holds {len(leaf_bytes) // DIGEST_SIZE} leaves, the commitment "
                               f"{commitment.tree_size}")
        wanted = sorted(set(leaves))
        if not wanted or wanted[0] < 0 or wanted[-1] >= commitment.tree_size:
            raise InputError(f"leaves to open must be in 0..{commitment.tree_size - 1}")
        tree = MerkleTree(leaf_bytes)
        if tree.root != commitment.root:
            raise StorageError("trace leaves do not give the committed root: the trace is corrupt")
        _check_provider(commitment.provider, kernel_for(store.spec), "this trace's commitment was computed")
        run_device = resolve_device(device or str(commitment.environment.get("device", "cpu")))
        full = [j for j in wanted if j in whole]
        values = {j: leaf_bytes[j * DIGEST_SIZE : (j + 1) * DIGEST_SIZE] for j in wanted if j not in whole}
        return store, leaf_bytes, tree, full, values, run_device

    def _iter_states(
        self, store: TraceStore, spec: JobSpec, needed: list[int], leaves: bytes, device: str
    ) -> Iterator[tuple[int, bytes]]:
        """(j, canonical bytes of s_j) for each j in ``needed``, ascending: read where kept,
        recomputed from the nearest checkpoint otherwise, each checked against its leaf.
        Segments (one checkpoint and the states recomputed from it) are independent: up to
        :meth:`workers` of them are recomputed at once on threads (torch and numba release the
        GIL) and handed out in order, so at most that many segments' states are held."""
        kernel = kernel_for(spec)
        segments: dict[int, list[int]] = {}
        for j in needed:
            segments.setdefault(store.nearest_checkpoint(j), []).append(j)
        total = len(needed)
        done = 0

        def segment(base: int, wanted: list[int]) -> list[tuple[int, bytes]]:
            encoded = store.read_checkpoint(base)
            last = max(wanted)
            out: list[tuple[int, bytes]] = []
            state: dict[str, Tensor] = {}
            if last > base:  # only decode a checkpoint that steps start from
                state = {k: v.to(device) for k, v in decode_state(encoded).items()}
            for j in range(base, last + 1):
                if j > base:
                    state = self._step(kernel, state, j, spec, device)
                    encoded = encode_state(state) if j in wanted else b""
                if j in wanted:
                    if digest_encoded(encoded) != leaves[j * DIGEST_SIZE : (j + 1) * DIGEST_SIZE]:
                        raise StorageError(f"state {j} recomputed from checkpoint {base} does not match "
                                           "its committed leaf: the trace or the device is not reproducible")
                    out.append((j, encoded))
            return out

        work = sorted(segments.items())
        # reading a kept state (the disk) and checking it (BLAKE3, which releases the GIL) overlap too
        workers = min(self.workers(kernel, device, reads_only=all(max(w) == base for base, w in work)), len(work))
        if workers <= 1:
            for base, wanted in work:
                for item in segment(base, wanted):
                    done += 1
                    yield item
                    if self.progress is not None:
                        self.progress(done, total)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pocv-respond") as pool:
            # a window of `workers` segments in flight, handed out in order; each in a copy of
            # this context (the artifact store in use is a context variable)
            pending: collections.deque[Future[list[tuple[int, bytes]]]] = collections.deque()
            todo = iter(work)
            try:
                for base, wanted in itertools.islice(todo, workers):
                    pending.append(pool.submit(contextvars.copy_context().run, segment, base, wanted))
                while pending:
                    items = pending.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append(pool.submit(contextvars.copy_context().run, segment, nxt[0], nxt[1]))
                    for item in items:
                        done += 1
                        yield item
                        if self.progress is not None:
                            self.progress(done, total)
            finally:  # the first error (or a consumer that stopped) drops the segments not started
                for fut in pending:
                    fut.cancel()

    def workers(self, kernel: Kernel, device: str, *, reads_only: bool = False) -> int:
        """Segments opened at once when answering on ``device``: ``respond_workers`` if set, else
        the CPU cores the kernel's own threads leave free (1 where torch already uses every core),
        or every core when no step is recomputed (``reads_only``: kept states are read and
        hashed, never stepped). Recomputation is one segment at a time for a kernel whose step is
        not pure (it may change process-wide settings or its input) and on an accelerator (one
        device runs one segment at a time; its strict-FP32 switches are process-wide)."""
        if self.respond_workers is not None and (reads_only or self._pure_steps(kernel)):
            return self.respond_workers if reads_only or resolve_device(device) == "cpu" else 1
        if reads_only:
            return min(MAX_READERS, os.cpu_count() or 1)
        if not self._pure_steps(kernel) or resolve_device(device) != "cpu":
            return 1
        return cpu_workers()

    # -- dispute queries -------------------------------------------------------------------

    def answer(self, query: Query, *, device: str | None = None) -> Opening | Response:
        """Answer a dispute referee's ``query`` from this trace (:mod:`pocv.dispute`).

        A bisect query gets an :class:`~pocv.dispute.Opening` (one leaf value and its inclusion
        proof), a step query a response bundle opening ``s_0``, ``s_(i-1)`` and ``s_i`` with one
        multiproof. Refuses (:class:`MismatchError`) a query for another job, for neither of
        this trace's roots, or of another tree size.
        """
        c = self.commitment()
        if query.job_id != c.job_id or c.root not in (query.root_a, query.root_b):
            raise MismatchError(f"query is for job {query.job_id.hex()[:16]}... roots {query.root_a.hex()[:16]}.../"
                                f"{query.root_b.hex()[:16]}...; this trace holds root {c.root.hex()[:16]}...")
        if query.tree_size != c.tree_size:
            raise MismatchError(f"query says {query.tree_size} leaves, this trace has {c.tree_size}")
        if query.kind == "step":
            states, proof = self.open(list(query.leaves), device=device)
            return Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=(query.step,),
                            states=states, proof=tuple(proof))
        leaves = TraceStore.open(self.trace_dir).read_leaves()
        if len(leaves) != DIGEST_SIZE * c.tree_size:
            raise StorageError(f"trace holds {len(leaves) // DIGEST_SIZE} leaves, the commitment {c.tree_size}")
        tree = MerkleTree(leaves)
        if tree.root != c.root:
            raise StorageError("trace leaves do not give the committed root: the trace is corrupt")
        m = query.leaves[0]
        return Opening(job_id=c.job_id, root=c.root, tree_size=c.tree_size, leaf=m, value=tree.leaf_value(m),
                       proof=tuple(tree.inclusion_proof(m)))


def _chunk_openings(data: bytes, indices: tuple[int, ...]) -> tuple[ChunkOpening, ...]:
    """The chunks ``indices`` of the state ``data`` with their audit paths in its subtree."""
    tree = StateTree(data)
    return tuple((c, tree.layout.chunk_of(data, c), tuple(tree.chunk_proof(c))) for c in indices)


def _check_provider(recorded: str | None, kernel: Kernel, what: str) -> None:
    """ProviderMismatch unless ``recorded`` (None: not recorded, an older trace) is the provider
    of the installed ``kernel``: states recomputed by another distribution's code (or another
    version of it) need not match the leaves the recorded one committed to."""
    if recorded is not None and recorded != kernel.provider:
        raise ProviderMismatch(
            f"{what} with kernel {kernel.name}@{kernel.version} from {recorded}, but {kernel.provider} is installed "
            f"here: install {recorded} to resume or answer it, or run the job again in a new trace directory")


def answer_query(prover: Prover, query: Query, *, device: str | None = None) -> Opening | Response:
    """``prover.answer(query, device=device)``: a dispute party's answer from its own trace."""
    return prover.answer(query, device=device)


__all__ = ["Prover", "answer_query"]
