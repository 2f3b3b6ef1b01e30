"""The worker side: run a job, commit to every state, answer challenges.

``Prover.run`` executes ``s_0 -> ... -> s_n`` on the chosen device, hashes every state, keeps
all leaf digests and every c-th state in the trace directory (:mod:`pocv.trace`), and signs
the Merkle root. A run that was killed resumes from its last consistent checkpoint and reaches
the same root. ``Prover.respond`` opens the challenged states, recomputing the ones it did not
keep from the nearest checkpoint (at most c-1 steps each), with one multiproof for all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pocv.artifacts import ArtifactStore
from pocv.bundle import Response
from pocv.challenge import derive_indices
from pocv.device import deterministic, environment, fingerprint, resolve_device
from pocv.dispute import Opening, Query
from pocv.encoding import State, Tensor, decode_state, digest_encoded, encode_state, state_digest
from pocv.errors import EvidenceError, InputError, MismatchError, StorageError
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.params import ArtifactSource, use_artifacts
from pocv.keys import Signer
from pocv.limits import DEFAULT_MAX_ANSWER, DIGEST_SIZE
from pocv.merkle import IncrementalTree, MerkleTree
from pocv.records import Challenge, Commitment
from pocv.store import atomic_write
from pocv.trace import DEFAULT_CHECKPOINT_EVERY, TraceStore

if TYPE_CHECKING:
    from pocv.kernels.base import Kernel

log = logging.getLogger(__name__)

#: progress(step_done, steps_total) is called at most this often (in steps) during a run
PROGRESS_EVERY = 64
Progress = Callable[[int, int], None]


class Prover:
    """A worker with a trace directory and a signing key."""

    def __init__(
        self,
        *,
        trace_dir: str | os.PathLike[str],
        key: Signer,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        progress: Progress | None = None,
        max_answer: int = DEFAULT_MAX_ANSWER,
        artifacts: ArtifactSource | None = None,
    ) -> None:
        """``max_answer``: the most challenged steps this worker answers (the job's terms or the
        worker's offer set it); a challenge asking for more is refused, so a hostile verifier
        cannot make the worker redo the whole job. ``artifacts``: the worker's artifact store
        (default: ``$POCV_ARTIFACTS`` or the user's cache directory, pocv.artifacts)."""
        self.artifacts: ArtifactSource = artifacts if artifacts is not None else ArtifactStore.default()
        if isinstance(max_answer, bool) or not isinstance(max_answer, int) or max_answer < 1:
            raise InputError(f"max_answer must be a positive integer, got {max_answer!r}")
        self.max_answer = max_answer
        self.trace_dir = Path(trace_dir)
        self.key = key
        self.checkpoint_every = checkpoint_every
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
        store = TraceStore.open(self.trace_dir, spec, checkpoint_every=self.checkpoint_every)
        done = self._existing_commitment(store, spec)
        if done is not None:
            return done
        n = spec.steps
        every = store.checkpoint_every
        with deterministic():
            resume = store.resume_point()
            if resume is None:
                log.info("run %s: %d steps on %s, trace %s", spec.kernel_ref, spec.steps, device, self.trace_dir)
                start = 0
                state = kernel.init_state(spec, device)
                encoded = encode_state(state)
                digest = digest_encoded(encoded)
                store.append_leaf(digest)
                store.write_checkpoint(0, encoded)
                tree = IncrementalTree()
                tree.append(digest)
            else:
                start, encoded = resume
                log.info("run %s: resuming after step %d of %d (trace %s)", spec.kernel_ref, start, n, self.trace_dir)
                state = {k: v.to(device) for k, v in decode_state(encoded).items()}
                leaves = store.read_leaves()
                tree = IncrementalTree.from_values(
                    [leaves[j : j + DIGEST_SIZE] for j in range(0, len(leaves), DIGEST_SIZE)])
            for i in range(start + 1, n + 1):
                state = self._step(kernel, state, i, spec, device)
                if i % every == 0:
                    encoded = encode_state(state)
                    digest = digest_encoded(encoded)
                    store.append_leaf(digest)
                    store.write_checkpoint(i, encoded)
                else:
                    digest = state_digest(state)
                    store.append_leaf(digest)
                tree.append(digest)
                if self.progress is not None and (i % PROGRESS_EVERY == 0 or i == n):
                    self.progress(i, n)
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

    def _existing_commitment(self, store: TraceStore, spec: JobSpec) -> Commitment | None:
        path = store.commitment_path
        if not path.exists():
            return None
        try:
            c = Commitment.from_json(path.read_bytes())
        except (OSError, EvidenceError):
            return None  # unreadable or stale: recompute (the trace decides the root)
        if c.job_id != spec.job_id or c.worker != bytes(self.key.pubkey()):
            return None
        return c

    # -- respond ---------------------------------------------------------------------------

    def commitment(self) -> Commitment:
        store = TraceStore.open(self.trace_dir)
        try:
            return Commitment.from_json(store.commitment_path.read_bytes())
        except FileNotFoundError as e:
            raise InputError(f"trace {str(self.trace_dir)!r} has no commitment: the run is not complete") from e

    def respond(self, challenge: Challenge, *, device: str | None = None) -> Response:
        """Open the challenged states with one multiproof."""
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
        states, proof = self.open(Response.opened_leaves(list(challenge.indices)), device=device)
        return Response(job_id=commitment.job_id, root=commitment.root, tree_size=commitment.tree_size,
                        indices=challenge.indices, states=states, proof=tuple(proof)).signed(self.key)

    def open(self, leaves: Sequence[int], *, device: str | None = None) -> tuple[dict[int, bytes], list[bytes]]:
        """Canonical bytes of the states at ``leaves`` and one multiproof for all of them.

        States that were not kept are recomputed from the nearest checkpoint on the device the
        run used (tolerance kernels reproduce their bits only there), and each is checked
        against its committed leaf before it is handed out.
        """
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
        run_device = resolve_device(device or str(commitment.environment.get("device", "cpu")))
        with deterministic(), use_artifacts(self.artifacts):
            states = self._open_states(store, store.spec, wanted, leaf_bytes, run_device)
        return states, tree.multiproof(wanted)

    def _open_states(
        self, store: TraceStore, spec: JobSpec, needed: list[int], leaves: bytes, device: str
    ) -> dict[int, bytes]:
        kernel = kernel_for(spec)
        out: dict[int, bytes] = {}
        segments: dict[int, list[int]] = {}
        for j in needed:
            segments.setdefault(store.nearest_checkpoint(j), []).append(j)
        for base, wanted in sorted(segments.items()):
            encoded = store.read_checkpoint(base)
            state: dict[str, Tensor] = {k: v.to(device) for k, v in decode_state(encoded).items()}
            last = max(wanted)
            for j in range(base, last + 1):
                if j > base:
                    state = self._step(kernel, state, j, spec, device)
                    encoded = encode_state(state) if j in wanted else b""
                if j in wanted:
                    if digest_encoded(encoded) != leaves[j * DIGEST_SIZE : (j + 1) * DIGEST_SIZE]:
                        raise StorageError(f"state {j} recomputed from checkpoint {base} does not match "
                                           "its committed leaf: the trace or the device is not reproducible")
                    out[j] = encoded
                    if self.progress is not None:
                        self.progress(len(out), len(needed))
        return out

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


def answer_query(prover: Prover, query: Query, *, device: str | None = None) -> Opening | Response:
    """``prover.answer(query, device=device)``: a dispute party's answer from its own trace."""
    return prover.answer(query, device=device)


__all__ = ["Prover", "answer_query"]
