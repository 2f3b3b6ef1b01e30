"""Exact kernels open s_i by its leaf value (bundle format 3, docs/protocol.md §8, issue 11 point 5).

The worker sends s_(i-1) whole and only the committed leaf value of s_i; the verifier recomputes
s_i and compares the digest of its own s_i with that value, which the multiproof proves. A run of
consecutive challenged steps sends only the state before the run (tests/test_exact_chain.py). Bytes
per challenged step are one state or less. A tolerance kernel still opens s_i whole.
"""

from __future__ import annotations

import pytest
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import Response, answer_size, whole_leaves
from pocv.check import _judge_by_leaf
from pocv.encoding import decode_state, encoded_size
from pocv.errors import MalformedError
from pocv.kernels import kernel_for, resolve_spec
from pocv.merkle import MerkleTree, multiproof_size
from pocv.trace import TraceStore

EXACT = resolve_spec(JobSpec(kernel="gemm-int8", steps=60, seed=4, params={"n": 64, "layers": 1}))
TOLERANT = resolve_spec(JobSpec(kernel="mlp-sgd", steps=12, seed=4, params={"width": 16, "depth": 1, "batch": 4}))
V = Verifier(key=Keypair.from_seed(bytes([2]) * 32))


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory):
    p = Prover(trace_dir=tmp_path_factory.mktemp("e") / "t", key=Keypair.from_seed(bytes([1]) * 32))
    return p, p.run(EXACT)


def test_an_exact_kernel_sends_one_state_per_challenged_step(exact) -> None:
    p, c = exact
    ch = V.challenge(c, beacon=bytes([3]) * 32, k=10)
    r = p.respond(ch)
    chained = whole_leaves(ch.indices, exact=True, chain=True)
    assert set(r.states) == chained == {i - 1 for i in ch.indices} - {0} - set(ch.indices)
    assert chained < whole_leaves(ch.indices, exact=True)  # this challenge has a run: 20, 21, 22
    assert set(r.values) == set(Response.opened_leaves(ch.indices)) - set(r.states)
    assert 0 in r.values  # s_0 by value: the verifier derives it
    verdict = V.check(c, ch, r.to_bytes())
    assert verdict.passed, verdict.failures
    state = encoded_size(kernel_for(EXACT).schema(EXACT))
    data = r.to_bytes()
    # one state (+ its 16-byte header) and one 40-byte leaf value per step, the multiproof, the fixed parts
    fixed = 8 + 4 + 64 + 8 + 4 + 8 * ch.k + 4 + 4 + 4 + 4 + 96  # the counts: states, proof, values, chunks
    assert len(data) == (fixed + len(r.states) * (16 + state) + 40 * len(r.values)
                         + 32 * multiproof_size(r.opened(), c.tree_size))
    assert len(data) == answer_size(ch.indices, c.tree_size, state, r.states)
    assert len(data) / ch.k < 1.05 * state  # a 4 KiB state: 1.0x plus ~4% of proof and values
    whole = p.respond(ch, whole=True)
    assert len(whole.to_bytes()) > 1.9 * len(data)  # format 2 sent both states of every step
    assert V.check(c, ch, whole).passed


def test_consecutive_challenged_steps_share_states(exact) -> None:
    p, c = exact
    ch = V.challenge(c, beacon=bytes([4]) * 32, k=c.steps)  # every step: one run from s_0, nothing whole
    r = p.respond(ch)
    assert sorted(r.states) == []
    assert sorted(r.values) == list(range(c.steps + 1))
    assert V.check(c, ch, r).passed


def test_a_wrong_step_opened_by_value_is_a_mismatch(tmp_path) -> None:
    class Cheat(Prover):
        def _step(self, kernel, state, i, spec, device):
            out = super()._step(kernel, state, i, spec, device)
            if i == 30:
                out = {k: v.clone() for k, v in out.items()}
                out["x"].view(-1)[0] += 1
            return out

    p = Cheat(trace_dir=tmp_path / "t", key=Keypair.from_seed(bytes([1]) * 32))
    c = p.run(EXACT)
    ch = V.challenge(c, beacon=bytes([5]) * 32, k=c.steps)
    verdict = V.check(c, ch, p.respond(ch))
    # step 30 recomputes to another digest; step 31 has no proven s_30 to start from (not opened
    # whole, and the verifier's own s_30 is not the committed one): it is not judged on it, nor is
    # the rest of the run (each step's start is unproven); the first failure is the faked step
    assert [(o.index, o.reason) for o in verdict.failures] == [(30, "MISMATCH")] + [
        (j, "MISSING") for j in range(31, c.steps + 1)]
    assert "step 30 did not pass" in verdict.failures[1].detail
    assert [o.index for o in V.check(c, ch, p.respond(ch, whole=True)).failures] == [30]  # s_30 whole: 31 on it
    # a challenge of step 30 alone opens s_30 by value: the verifier's own s_30 has another digest
    tree = MerkleTree(TraceStore.open(tmp_path / "t").read_leaves())
    values = {0: tree.leaf_value(0), 30: tree.leaf_value(30)}
    states, _ = p.open([29])
    one = Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=(30,), states=states,
                   values=values, proof=tuple(tree.multiproof([0, 29, 30])))
    kernel = kernel_for(EXACT)
    assert not _judge_by_leaf(kernel, decode_state(states[29]), values[30], 30, EXACT, "cpu").ok
    assert _judge_by_leaf(kernel, decode_state(states[29]), values[30], 30, EXACT, "cpu").bad_state is False
    assert one.opened() == [0, 29, 30]


def test_a_tolerance_kernel_opens_s_i_whole_and_refuses_it_by_value(tmp_path) -> None:
    p = Prover(trace_dir=tmp_path / "t", key=Keypair.from_seed(bytes([1]) * 32))
    c = p.run(TOLERANT)
    ch = V.challenge(c, beacon=bytes([6]) * 32, k=3)
    r = p.respond(ch)
    assert set(r.states) == whole_leaves(ch.indices, exact=False) and set(ch.indices) <= set(r.states)
    assert V.check(c, ch, r).passed
    tree = MerkleTree(TraceStore.open(tmp_path / "t").read_leaves())
    values = {j: tree.leaf_value(j) for j in r.opened() if j in ch.indices or j == 0}
    states = {j: s for j, s in r.states.items() if j not in values}
    by_value = Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices, states=states,
                        values=values, proof=r.proof)
    verdict = V.check(c, ch, by_value)
    assert {o.reason for o in verdict.outcomes} == {"MISSING"}
    assert "tolerance kernel must be opened whole" in verdict.outcomes[0].detail


def test_a_leaf_opened_both_ways_is_refused(exact) -> None:
    p, c = exact
    ch = V.challenge(c, beacon=bytes([7]) * 32, k=2)
    r = p.respond(ch)
    j = next(iter(r.states))
    with pytest.raises(MalformedError, match="both whole and by value"):
        Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices, states=r.states,
                 values={**r.values, j: bytes(32)}, proof=r.proof)
    with pytest.raises(MalformedError, match="wrong size"):
        Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices, states=r.states,
                 values={0: bytes(31)}, proof=r.proof)
