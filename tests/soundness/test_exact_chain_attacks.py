"""Run-time lies against an exact kernel whose answer opens one state per run of consecutive
challenged steps (docs/protocol.md §8, §9 (8)): who is caught, where, and what is left unjudged.

An honest-looking answer of a worker that faked the steps F sends, for each run of challenged
steps, only the state before the run; the verifier carries its own recomputed state along the
run while each step matches its committed leaf. So in each run the first faked step is a
MISMATCH and every later step of that run is MISSING, "not judged" (its s_(i-1) is neither
opened whole nor the verifier's own proven state); the steps before it are OK; a run without a
faked step passes. The verdict FAILs exactly when a faked step is challenged, as before. A worker
that opens every state whole is judged step by step: its FAIL set is exactly the faked steps
challenged (test_attacks.py's invariant).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from blake3 import blake3
from solders.keypair import Keypair

from pocv import JobSpec, Verifier
from pocv.bundle import challenge_runs
from pocv.check import NOT_JUDGED
from pocv.kernels import resolve_spec
from pocv.records import Reason, Verdict
from pocv.testing import liar as sim

GEMM = resolve_spec(JobSpec(kernel="gemm-int8", steps=30, seed=8, params={"n": 16}))
VERIFIER = Verifier(key=Keypair.from_seed(bytes([13]) * 32))


def expected(indices: tuple[int, ...], faked: frozenset[int]) -> dict[int, Reason]:
    """Step -> reason of every failure an honest-shaped answer of a worker faking ``faked`` gets."""
    out: dict[int, Reason] = {}
    for run in challenge_runs(indices):
        bad = [i for i in run if i in faked]
        if bad:
            out[bad[0]] = Reason.MISMATCH
            out.update({i: Reason.MISSING for i in run if i > bad[0]})
    return out


def failures(verdict: Verdict) -> dict[int, Reason]:
    return {o.index: Reason(o.reason) for o in verdict.failures}


def check(liar: sim.LyingProver, c: object, k: int, tag: object) -> None:
    ch = VERIFIER.challenge(c, beacon=blake3(repr(tag).encode()).digest(), k=k)  # type: ignore[arg-type]
    verdict = VERIFIER.check(c, ch, liar.respond(ch))  # type: ignore[arg-type]
    hit = liar.faked.intersection(ch.indices)
    assert failures(verdict) == expected(ch.indices, liar.faked), (tag, ch.indices, sorted(liar.faked))
    assert set(expected(ch.indices, liar.faked)) == sim.expected_failures(ch.indices, liar.faked, exact=True)
    assert verdict.passed == (not hit)
    assert all(o.detail.startswith(NOT_JUDGED) for o in verdict.failures if o.reason == "MISSING")
    whole = VERIFIER.check(c, ch, liar.respond(ch, whole=True))  # type: ignore[arg-type]
    assert failures(whole) == {i: Reason.MISMATCH for i in hit}  # every s_(i-1) whole: judged step by step


@pytest.mark.parametrize("name", ["fabricate", "skip", "replay-earlier", "stop-early"])
def test_a_run_fails_from_its_first_faked_step(tmp_path: Path, name: str) -> None:
    liar = sim.make_liar(sim.SAMPLED[name](0.2), trace_dir=tmp_path / "t", checkpoint_every=4)
    c = liar.run(GEMM)
    assert liar.faked
    check(liar, c, GEMM.steps, (name, "all"))  # one run from step 1: it fails from the first faked step on
    for t in range(4):
        check(liar, c, 12, (name, t))


@pytest.mark.parametrize("name", ["replay-s0", "wrong-version"])
def test_every_step_faked_fails_every_challenged_step(tmp_path: Path, name: str) -> None:
    liar = sim.make_liar(sim.CERTAIN[name](), trace_dir=tmp_path / "t", checkpoint_every=1)
    c = liar.run(GEMM)
    for t in range(4):
        check(liar, c, 8, (name, t))
