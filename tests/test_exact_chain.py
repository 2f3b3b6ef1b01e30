"""An exact kernel's run of consecutive challenged steps opens only the state before the run
(docs/protocol.md §8; issue 11 target "bytes per challenged step <= 1.0 x state size").

For challenged ``i`` whose ``i - 1`` is challenged too, the verifier has recomputed ``s_(i-1)`` at
step ``i - 1`` and matched its digest bit for bit against the committed leaf ``i - 1``, which the
multiproof proves: that state is the committed one, so the worker does not send it. Here: the
honest answer opens exactly ``whole_leaves(..., chain=True)`` and passes (runs of length 1, 2, 3
and a run from step 1), its size is :func:`pocv.bundle.answer_size`; and every way a worker can
bend the rule: omitting a state it must send (MISSING, and the rest of its run is not judged),
sending one it need not (accepted: it is proven by the multiproof, and judged as sent), a wrong
state inside a run (the run's failing step catches it; the next is never judged on the
verifier's own, unverified state, even where that would pass), a wrong whole state at a run's
head (BAD_PROOF). Tolerance kernels, sampled or not, keep every ``s_(i-1)`` whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import Response, answer_size, challenge_runs, whole_leaves
from pocv.challenge import derive_indices
from pocv.encoding import encoded_size
from pocv.errors import InputError
from pocv.kernels import kernel_for, resolve_spec
from pocv.records import Challenge, Commitment, Reason

WORKER = Keypair.from_seed(bytes([1]) * 32)
V = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
EXACT = resolve_spec(JobSpec(kernel="gemm-int8", steps=24, seed=6, params={"n": 32, "layers": 1}))
TOLERANT = resolve_spec(JobSpec(kernel="mlp-sgd", steps=12, seed=4, params={"width": 16, "depth": 1, "batch": 4}))


def shaped(indices: tuple[int, ...]) -> bool:
    """A run from step 1 of length 3, another of length 3, one of length 2 and a single step."""
    lengths = [len(r) for r in challenge_runs(indices)]
    return indices[:3] == (1, 2, 3) and 4 not in indices and lengths.count(3) >= 2 and 2 in lengths and 1 in lengths


def challenge_where(c: Commitment, k: int, pred: Callable[[tuple[int, ...]], bool]) -> Challenge:
    """The verifier's challenge of ``k`` steps for the first beacon whose indices satisfy ``pred``."""
    for b in range(200_000):
        beacon = b.to_bytes(32, "little")
        if pred(derive_indices(c.job_id, c.root, beacon, c.steps, k)):
            return V.challenge(c, beacon=beacon, k=k)
    raise AssertionError("no beacon gives the wanted shape")


def check(c: Commitment, ch: Challenge, r: Any) -> Any:
    """The verdict on ``r``, with ``ch`` made the verifier's current challenge again (the module's
    tests share one verifier, which judges only the challenge it issued last)."""
    V.book.issue(ch)
    return V.check(c, ch, r)


def rebuilt(r: Response, *, states: dict[int, bytes], values: dict[int, bytes]) -> Response:
    """``r`` with other openings of the same leaves (the multiproof is over the same leaf values)."""
    return Response(job_id=r.job_id, root=r.root, tree_size=r.tree_size, indices=r.indices, states=states,
                    values=values, proof=r.proof)


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Prover, Commitment, Challenge, Response]:
    p = Prover(trace_dir=tmp_path_factory.mktemp("chain") / "t", key=WORKER, checkpoint="every:4")
    c = p.run(EXACT)
    ch = challenge_where(c, 12, shaped)
    return p, c, ch, p.respond(ch)


def test_the_rule() -> None:
    idx = (1, 2, 3, 7, 9, 10, 14, 15, 16)
    assert challenge_runs(idx) == [(1, 2, 3), (7,), (9, 10), (14, 15, 16)]
    assert whole_leaves(idx, exact=True, chain=True) == {6, 8, 13}  # the state before each run; s_0 never
    assert whole_leaves(idx, exact=True) == {1, 2, 6, 8, 9, 13, 14, 15}  # chain=False: as before
    assert whole_leaves(idx, exact=False) == {1, 2, 3, 6, 7, 8, 9, 10, 13, 14, 15, 16}
    with pytest.raises(InputError, match="only for states compared bit for bit"):
        whole_leaves(idx, exact=False, chain=True)


def test_an_honest_answer_opens_the_state_before_each_run_and_passes(honest, tmp_path: Path) -> None:
    p, c, ch, r = honest
    heads = [run[0] for run in challenge_runs(ch.indices)]
    assert set(r.states) == whole_leaves(ch.indices, exact=True, chain=True) == {h - 1 for h in heads} - {0}
    assert set(r.values) == set(Response.opened_leaves(ch.indices)) - set(r.states)
    state = encoded_size(kernel_for(EXACT).schema(EXACT))
    data = r.to_bytes()
    assert len(data) == answer_size(ch.indices, c.tree_size, state, r.states)
    # one state per run not starting at step 1: fewer states than steps
    assert len(r.states) == len(heads) - 1 < ch.k
    verdict = check(c, ch, data)
    assert verdict.passed, verdict.failures
    path = tmp_path / "r.pocv"  # the streamed answer, read in place, is the same and passes the same
    with path.open("wb") as f:
        p.respond_to(ch, f)
    assert path.read_bytes() == data
    with path.open("rb") as f:
        assert check(c, ch, f).outcomes == verdict.outcomes


def test_every_step_challenged_is_one_run_from_s0(honest) -> None:
    p, c, _, _ = honest
    ch = V.challenge(c, beacon=bytes([4]) * 32, k=c.steps)
    r = p.respond(ch)
    assert dict(r.states) == {} and sorted(r.values) == list(range(c.tree_size))
    assert check(c, ch, r).passed


@pytest.mark.parametrize("length", [2, 3])
def test_omitting_a_state_the_rule_requires_is_missing_and_stops_the_run(honest, length: int) -> None:
    p, c, ch, r = honest
    run = next(run for run in challenge_runs(ch.indices) if len(run) == length and run[0] > 1)
    head = run[0] - 1
    states = {j: s for j, s in r.states.items() if j != head}
    tree_values = r.leaf_values()
    omitted = rebuilt(r, states=states, values={**r.values, head: tree_values[head]})  # by value instead
    verdict = check(c, ch, omitted.to_bytes())
    assert [(o.index, o.reason) for o in verdict.failures] == [(j, Reason.MISSING) for j in run]
    assert f"state {head} must be opened whole" in verdict.failures[0].detail
    assert "did not pass" in verdict.failures[1].detail  # the run's next steps are never judged
    # not opened at all: the same steps are MISSING (the multiproof is over the leaves sent)
    leaves = sorted(set(Response.opened_leaves(ch.indices)) - {head})
    proof = tuple(p.open_parts(leaves, whole=set())[2])
    gone = Response(job_id=r.job_id, root=r.root, tree_size=r.tree_size, indices=r.indices, states=states,
                    values={j: v for j, v in r.values.items()}, proof=proof)
    assert [(o.index, o.reason) for o in check(c, ch, gone).failures] == [(j, Reason.MISSING) for j in run]


def test_a_state_sent_that_the_rule_does_not_need_is_harmless(honest) -> None:
    p, c, ch, r = honest
    inner = [j for run in challenge_runs(ch.indices) for j in run[:-1]]  # s_j of each run but its last step
    extra, _ = p.open(inner)
    values = {j: v for j, v in r.values.items() if j not in extra}
    more = rebuilt(r, states={**r.states, **extra}, values=values)  # as the answers before this rule
    assert set(more.states) == whole_leaves(ch.indices, exact=True)
    verdict = check(c, ch, more.to_bytes())
    assert verdict.passed and verdict.outcomes == check(c, ch, r).outcomes
    state = len(next(iter(extra.values())))  # each extra state: its 16-byte header and bytes, less a value
    assert len(more.to_bytes()) == len(r.to_bytes()) + len(inner) * (16 + state - 40)
    assert check(c, ch, p.respond(ch, whole=True)).passed  # every leaf whole: still valid


class Mender(Prover):
    """Commits a wrong s_j, then steps on from the HONEST s_j: the committed s_(j+1) is step(honest
    s_j), not step(committed s_j). A verifier that judged step j + 1 from its own recomputed s_j
    (the honest one, which is not the committed one) would pass it."""

    def __init__(self, *, bad: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.bad = bad
        self.honest: Any = None

    def _step(self, kernel, state, i, spec, device):  # type: ignore[no-untyped-def]
        if i == self.bad + 1 and self.honest is not None:
            state = self.honest
        out = super()._step(kernel, state, i, spec, device)
        if i == self.bad:
            self.honest = out
            x = out["x"].clone()
            x.view(-1)[0] ^= 1
            return {"x": x}
        return out


@pytest.mark.parametrize("where", ["start", "middle"])
def test_a_wrong_state_inside_a_run_is_caught_and_never_stepped_from(honest, tmp_path: Path, where: str) -> None:
    ch0 = honest[2]
    run = next(r for r in challenge_runs(ch0.indices) if len(r) == 3 and (r[0] == 1) == (where == "start"))
    bad = run[1] - 1 if where == "start" else run[1]  # start: s_1 (the run 1, 2, 3); middle: the run's 2nd
    p = Mender(bad=bad, trace_dir=tmp_path / "t", key=WORKER, checkpoint="all")
    c = p.run(EXACT)
    ch = challenge_where(c, 12, lambda idx: bad in idx and bad + 1 in idx and bad + 2 in idx)
    r = p.respond(ch)
    assert bad not in r.states  # by value: the run goes on from the verifier's own s_bad
    verdict = check(c, ch, r)
    fails = [(o.index, o.reason) for o in verdict.failures]
    tail = [j for j in next(run for run in challenge_runs(ch.indices) if bad in run) if j > bad]
    assert fails == [(bad, Reason.MISMATCH)] + [(j, Reason.MISSING) for j in tail]
    # the committed s_(bad+1) IS step(honest s_bad): judged from the verifier's own s_bad it would
    # have passed; judged from the committed s_bad sent whole it is a MISMATCH
    sent, _ = p.open([bad])
    values = {j: v for j, v in r.values.items() if j != bad}
    whole = check(c, ch, rebuilt(r, states={**r.states, **sent}, values=values))
    assert [(o.index, o.reason) for o in whole.failures][:2] == [(bad, Reason.MISMATCH), (bad + 1, Reason.MISMATCH)]


def test_a_wrong_state_at_a_runs_head_breaks_the_proof(honest) -> None:
    _, c, ch, r = honest
    head = max(r.states)
    forged = bytearray(r.states[head])
    forged[-1] ^= 1
    verdict = check(c, ch, rebuilt(r, states={**r.states, head: bytes(forged)}, values=dict(r.values)))
    assert {o.reason for o in verdict.outcomes} == {Reason.BAD_PROOF}


@pytest.mark.parametrize("sample", [0, 2], ids=["whole", "sampled"])
def test_tolerance_kernels_keep_every_previous_state_whole(tmp_path: Path, sample: int) -> None:
    spec = resolve_spec(dataclasses.replace(TOLERANT, sample_chunks=sample))
    p = Prover(trace_dir=tmp_path / "t", key=WORKER)
    c = p.run(spec)
    ch = challenge_where(c, 5, lambda idx: any(len(run) >= 2 for run in challenge_runs(idx)))
    r = p.respond(ch)
    prev = {i - 1 for i in ch.indices} - {0}
    assert set(r.states) == (prev if sample else prev | set(ch.indices))  # sampled: byte for byte as before
    assert check(c, ch, r).passed
    # leaving out an s_(i-1) whose step i-1 is challenged is MISSING for a tolerance kernel
    i = next(run[1] for run in challenge_runs(ch.indices) if len(run) >= 2)
    leaf = r.leaf_values()[i - 1]
    states = {j: s for j, s in r.states.items() if j != i - 1}
    if sample:
        values = {**r.values, i - 1: leaf}
        short = Response(job_id=r.job_id, root=r.root, tree_size=r.tree_size, indices=r.indices, states=states,
                         values=values, proof=r.proof, chunks={j: v for j, v in r.chunks.items()})
    else:
        short = rebuilt(r, states=states, values={**r.values, i - 1: leaf})
    verdict = check(c, ch, short)
    assert (i, Reason.MISSING) in [(o.index, o.reason) for o in verdict.failures]
