"""Test helpers: small jobs, and lying provers that cheat in named ways.

A lying prover is a real :class:`Prover` with one seam overridden (``_step``), so it writes a
real trace, signs a real commitment and answers with real Merkle proofs -- of its fake states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pocv.bundle import Response
from pocv.dispute import Opening, Query
from pocv.encoding import digest_encoded
from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.merkle import MerkleTree
from pocv.prover import Prover
from pocv.records import Commitment

SMALL = resolve_spec(JobSpec(kernel="gemm-int8", steps=40, seed=11, params={"n": 32}))


class StepCheater(Prover):
    """A prover whose step ``i`` is replaced by ``fake(state, i)`` when ``when(i)``."""

    def __init__(self, *, when: Callable[[int], bool], fake: Callable[[dict, int], dict], **kw: Any) -> None:
        super().__init__(**kw)
        self.when = when
        self.fake = fake

    def _step(self, kernel, state, i, spec, device):  # type: ignore[no-untyped-def]
        if self.when(i):
            return self.fake(dict(state), i)
        return super()._step(kernel, state, i, spec, device)


def replay(state: dict, i: int) -> dict:
    """Skip the step: claim s_i = s_{i-1}."""
    return state


def flip_one(state: dict, i: int) -> dict:
    x = state["x"].clone()
    x.view(-1)[0] ^= 1
    return {"x": x}


def widen_dtype(state: dict, i: int) -> dict:
    return {"x": state["x"].to(torch.int16)}


def answer_from_memory(commitment: Commitment, tree: MerkleTree, encoded: Sequence[bytes], q: Query
                       ) -> Opening | Response:
    """A dispute party's answer to ``q`` from encoded states kept in memory (every state), as
    ``Prover.answer`` gives it from a trace: a bisect query's leaf with its inclusion proof, or the
    step round's states whole with their multiproof."""
    c = commitment
    if q.kind == "bisect":
        m = q.leaves[0]
        return Opening(job_id=c.job_id, root=c.root, tree_size=c.tree_size, leaf=m,
                       value=tree.leaf_value(m), proof=tuple(tree.inclusion_proof(m)))
    return Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=(q.step,),
                    states={j: encoded[j] for j in q.leaves}, proof=tuple(tree.multiproof(q.leaves)))


class Crash(Exception):
    """What :class:`CrashingProver` raises at its step ``crash_at`` (a killed run)."""


class CrashingProver(Prover):
    """A prover whose run stops with :class:`Crash` at step ``crash_at``."""

    def __init__(self, *, crash_at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.crash_at = crash_at

    def _step(self, kernel: Any, state: Any, i: int, spec: JobSpec, device: str) -> Any:
        if i == self.crash_at:
            raise Crash(i)
        return super()._step(kernel, state, i, spec, device)



def remember_committers(monkeypatch: Any) -> list[Any]:
    """Every :class:`pocv.trace.Committer` made from now on (until ``monkeypatch`` undoes it), in
    the order made: tests that slow a disk down watch the committer the prover made."""
    from pocv.trace import Committer  # reason: only the tests that watch a committer load it here

    made: list[Any] = []
    real_init = Committer.__init__

    def remember(self: Committer, *a: Any, **kw: Any) -> None:
        real_init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(Committer, "__init__", remember)
    return made


def assert_trace_holds(store: Any, want: Sequence[bytes], kept: list[int]) -> None:
    """``store`` (a closed :class:`pocv.trace.TraceStore`) holds the leaves of the canonical states
    ``want``, in order, and exactly the checkpoints ``kept``, each the state it is for."""
    assert store.read_leaves() == b"".join(digest_encoded(w) for w in want)
    assert store.checkpoints() == kept
    for j in kept:
        assert store.read_checkpoint(j) == want[j]
