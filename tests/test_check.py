"""Prover + Verifier through the library: honest PASS, each cheat a FAIL with its reason."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from solders.keypair import Keypair

from pocv import Prover, VerificationFailed, Verifier
from pocv.bundle import Response
from pocv.errors import MalformedError, MismatchError, SignatureError, UnsignedResponse
from pocv.kernels import kernel_for
from pocv.records import Commitment
from tests.helpers import SMALL, StepCheater, flip_one, replay, widen_dtype

BEACON = bytes(range(32))


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    key = Keypair.from_seed(bytes([3]) * 32)
    prover = Prover(trace_dir=tmp_path_factory.mktemp("h") / "trace", key=key, checkpoint_every=8)
    return prover, prover.run(SMALL)


def _round(prover, commitment, verifier_key, k=None):
    v = Verifier(key=verifier_key)
    ch = v.challenge(commitment, beacon=BEACON, k=k)
    return v, ch, prover.respond(ch)


def test_honest_worker_passes(honest, verifier_key) -> None:
    prover, c = honest
    v, ch, resp = _round(prover, c, verifier_key)
    verdict = v.check(c, ch, resp)
    assert verdict.passed, verdict.failures
    assert verdict.indices == ch.indices
    assert len(verdict.outcomes) == min(66, SMALL.steps)
    verdict.verify_signature(expected_verifier=bytes(verifier_key.pubkey()))
    assert v.verify(c, ch, resp.to_bytes()) == verdict  # raising form agrees on PASS (bytes accepted)


def test_every_step_checked_when_k_covers_all(honest, verifier_key) -> None:
    prover, c = honest
    v, ch, resp = _round(prover, c, verifier_key, k=SMALL.steps)
    assert ch.indices == tuple(range(1, SMALL.steps + 1))
    assert v.check(c, ch, resp).passed


@pytest.mark.parametrize(("name", "fake", "at", "reason"), [
    ("replay", replay, 17, "MISMATCH"),
    ("flip-one-byte", flip_one, 17, "MISMATCH"),
    # last step: the kernel cannot go on from int16. Opened by its leaf value (s_40 of an exact
    # kernel), the verifier sees only that its own s_40 has another digest; opened whole, that the
    # state is not one of this job's schema
    ("wrong-dtype", widen_dtype, SMALL.steps, "MISMATCH"),
])
def test_one_cheated_step_is_caught_when_challenged(tmp_path, verifier_key, name, fake, at, reason) -> None:
    cheat = StepCheater(trace_dir=tmp_path / "t", key=Keypair(), checkpoint_every=8,
                        when=lambda i: i == at, fake=fake)
    c = cheat.run(SMALL)
    v, ch, resp = _round(cheat, c, verifier_key, k=SMALL.steps)
    verdict = v.check(c, ch, resp)
    assert not verdict.passed
    assert [o.index for o in verdict.failures][0] == at
    assert verdict.failures[0].reason == reason
    with pytest.raises(VerificationFailed, match="FAIL") as e:
        v.verify(c, ch, resp)
    assert e.value.verdict == verdict
    if name == "wrong-dtype":
        whole = v.check(c, ch, cheat.respond(ch, whole=True))
        assert [(o.index, o.reason) for o in whole.failures][:1] == [(at, "BAD_STATE")]


def test_refusal_is_a_fail(honest, verifier_key) -> None:
    prover, c = honest
    v, ch, _ = _round(prover, c, verifier_key)
    verdict = v.check(c, ch, None)
    assert not verdict.passed and {o.reason for o in verdict.outcomes} == {"REFUSED"}


def test_partial_answer_marks_missing_steps(honest, verifier_key) -> None:
    prover, c = honest
    v, ch, _ = _round(prover, c, verifier_key, k=5)
    resp = prover.respond(ch, whole=True)  # every state whole: no step relies on the dropped one
    dropped = ch.indices[2]
    keep = set(Response.opened_leaves([i for i in ch.indices if i != dropped]))
    from pocv.merkle import MerkleTree
    from pocv.trace import TraceStore

    store = TraceStore.open(prover.trace_dir)
    leaves = store.read_leaves()
    states = {j: s for j, s in resp.states.items() if j in keep}
    values = {j: s for j, s in resp.values.items() if j in keep}
    r2 = Response(job_id=resp.job_id, root=resp.root, tree_size=resp.tree_size, indices=resp.indices,
                  states=states, values=values, proof=tuple(MerkleTree(leaves).multiproof(sorted({*states, *values}))))
    verdict = v.check(c, ch, r2)
    reasons = {o.index: o.reason for o in verdict.outcomes}
    assert reasons[dropped] == "MISSING"
    assert all(r == "OK" for i, r in reasons.items() if i != dropped)


def test_response_to_another_job_is_wrong_job(tmp_path, honest, verifier_key) -> None:
    prover, c = honest
    other_spec = type(SMALL)(kernel="gemm-int8", steps=SMALL.steps, seed=12, params={"n": 32})
    other = Prover(trace_dir=tmp_path / "o", key=prover.key, checkpoint_every=8)
    oc = other.run(other_spec)
    v = Verifier(key=verifier_key)
    ch = v.challenge(c, beacon=BEACON)
    och = v.challenge(oc, beacon=BEACON)
    verdict = v.check(c, ch, other.respond(och))
    assert {o.reason for o in verdict.outcomes} == {"WRONG_JOB"}


def test_challenge_must_belong_to_commitment(honest, verifier_key) -> None:
    prover, c = honest
    v = Verifier(key=verifier_key)
    ch = v.challenge(c, beacon=BEACON, k=5)
    assert ch.indices != (1, 2, 3, 4, 5)
    forged = dataclasses.replace(ch, indices=(1, 2, 3, 4, 5)).signed(verifier_key)
    with pytest.raises(MismatchError, match="beacon derives"):
        v.check(c, forged, None)
    with pytest.raises(MismatchError, match="beacon derives"):
        prover.respond(forged)


def test_only_this_verifiers_challenges_are_checked(honest, verifier_key) -> None:
    """A worker that brings its own challenge (a beacon it ground) is refused (REVIEW R2)."""
    prover, c = honest
    worker_made = Verifier(key=prover.key).challenge(c, beacon=bytes(32), k=5)
    with pytest.raises(SignatureError, match="not by this verifier"):
        Verifier(key=verifier_key).check(c, worker_made, prover.respond(worker_made))
    unsigned = dataclasses.replace(Verifier(key=verifier_key).challenge(c, beacon=BEACON, k=5),
                                   signature=bytes(64))
    with pytest.raises(SignatureError):
        Verifier(key=verifier_key).check(c, unsigned, None)


def test_challenge_cannot_promise_more_than_its_k(honest, verifier_key) -> None:
    prover, c = honest
    v = Verifier(key=verifier_key)
    weak = dataclasses.replace(v.challenge(c, beacon=BEACON, k=1), confidence=0.999).signed(verifier_key)
    with pytest.raises(MismatchError, match="give only"):
        v.check(c, weak, prover.respond(weak))
    ok = v.challenge(c, beacon=BEACON, k=3)
    # an explicit k records what it achieves: the exact chance that 3 distinct steps of n hit one of
    # the ceil(0.1 n) faked ones, at least the with-replacement bound 1 - 0.9^3
    n = c.steps
    m = math.ceil(0.1 * n - 1e-9)
    assert ok.confidence == pytest.approx(1 - math.comb(n - m, 3) / math.comb(n, 3))
    assert ok.confidence >= 1 - 0.9**3


def test_unsigned_commitment_is_refused(honest, verifier_key) -> None:
    _, c = honest
    forged = Commitment(spec=c.spec, root=c.root, worker=c.worker)
    with pytest.raises(SignatureError):
        Verifier(key=verifier_key).challenge(forged, beacon=BEACON)


def test_wrong_initial_state_is_bad_init(tmp_path, verifier_key) -> None:
    class BadStart(Prover):
        def run(self, spec, *, device="cpu"):  # type: ignore[no-untyped-def]
            k = kernel_for(spec)
            orig = k.init_state
            k.init_state = lambda s, d="cpu": flip_one(orig(s, d), 0)  # type: ignore[method-assign]
            try:
                return super().run(spec, device=device)
            finally:
                del k.init_state

    p = BadStart(trace_dir=tmp_path / "t", key=Keypair(), checkpoint_every=8)
    c = p.run(SMALL)
    v, ch, resp = _round(p, c, verifier_key)
    assert {o.reason for o in v.check(c, ch, resp).outcomes} == {"BAD_INIT"}


# -- who answered: signed bundles (issue 15, class 6) ---------------------------------------------


def test_a_relay_that_corrupts_a_signed_bundle_cannot_make_evidence(honest, verifier_key, tmp_path) -> None:
    prover, c = honest
    v, ch, resp = _round(prover, c, verifier_key, k=5)
    assert resp.signed_by(c.worker)
    good = v.check(c, ch, resp.to_bytes())
    assert good.passed and good.bundle_signed and good.bundle == resp.digest()
    data = bytearray(resp.to_bytes())
    data[200] ^= 1  # one bit of a state, flipped in transit
    verdict = v.check(c, ch, bytes(data))
    assert not verdict.passed and not verdict.bundle_signed and not verdict.is_evidence
    assert verdict.bundle != good.bundle  # the verdict names the bytes it judged
    with pytest.raises(UnsignedResponse, match="did not sign") as e:
        v.verify(c, ch, bytes(data))
    assert e.value.verdict == verdict
    path = tmp_path / "r.pocv"  # the same through a file object
    path.write_bytes(bytes(data[:-40]))  # truncated as well: does not parse, no valid trailer
    with path.open("rb") as f:
        cut = v.check(c, ch, f)
    assert {o.reason for o in cut.outcomes} == {"MALFORMED"} and not cut.is_evidence


def test_a_cheater_signs_its_cheat_and_the_verdict_is_evidence(tmp_path, verifier_key) -> None:
    cheat = StepCheater(trace_dir=tmp_path / "t", key=Keypair(), checkpoint_every=8, when=lambda i: True,
                        fake=flip_one)
    c = cheat.run(SMALL)
    v = Verifier(key=verifier_key)
    ch = v.challenge(c, beacon=BEACON, k=4)
    verdict = v.check(c, ch, cheat.respond(ch))
    assert not verdict.passed and verdict.bundle_signed and verdict.is_evidence
    with pytest.raises(VerificationFailed):
        v.verify(c, ch, cheat.respond(ch))
    # a bundle the worker signed that does not even parse is still its signed word
    body = Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices, states={},
                    proof=())
    garbage = body.signed(cheat.key)
    malformed = v.check(c, ch, garbage.to_bytes())
    assert {o.reason for o in malformed.outcomes} == {"MALFORMED"}
    assert malformed.bundle_signed and malformed.is_evidence


def test_a_bundle_signed_by_someone_else_is_not_the_workers(honest, verifier_key) -> None:
    prover, c = honest
    v, ch, resp = _round(prover, c, verifier_key, k=5)
    other = dataclasses.replace(resp, worker=bytes(32), signature=bytes(64)).signed(Keypair())
    verdict = v.check(c, ch, other.to_bytes())
    assert verdict.passed and not verdict.bundle_signed  # a PASS stands; the states proved themselves


# -- only the current challenge (issue 15, class 5) -----------------------------------------------


def test_a_verifier_judges_only_its_current_challenge(honest, verifier_key) -> None:
    prover, c = honest
    v = Verifier(key=verifier_key)
    first = v.challenge(c, beacon=BEACON, k=3)
    second = v.challenge(c, beacon=bytes(reversed(BEACON)), k=3)  # re-issued: the first is retired
    assert first.indices != second.indices
    with pytest.raises(MismatchError, match="retired"):
        v.check(c, first, prover.respond(first))  # an old challenge that may miss the faked steps
    assert v.check(c, second, prover.respond(second)).passed
    again = Verifier(key=verifier_key)  # another book (another process): knows no challenge yet
    assert again.check(c, first, prover.respond(first)).passed


@pytest.mark.parametrize("source", ["verifier nonce", "drand round 7", "slot:10:after:10", "slot:9:after:10",
                                    "nonce:", "dispute:xyz", "nonce:1 ", ""])
def test_a_beacon_says_where_it_came_from_checkably(honest, verifier_key, source: str) -> None:
    _, c = honest
    with pytest.raises(MalformedError, match="beacon"):
        Verifier(key=verifier_key).challenge(c, beacon=BEACON, k=2, beacon_source=source)


def test_default_and_chain_beacon_sources(honest, verifier_key) -> None:
    _, c = honest
    v = Verifier(key=verifier_key)
    assert re.fullmatch(r"nonce:[0-9]+", v.challenge(c, beacon=BEACON, k=2).beacon_source)
    assert v.challenge(c, beacon=BEACON, k=2, beacon_source="slot:11:after:10").beacon_source == "slot:11:after:10"
    assert v.challenge(c, beacon=BEACON, k=2, beacon_source="dispute:" + "ab" * 32).k == 2


def test_the_challenge_book_on_disk_is_shared_between_verifiers(honest, verifier_key, tmp_path) -> None:
    from pocv.store import ChallengeFile

    prover, c = honest
    book = tmp_path / "book"
    issuer = Verifier(key=verifier_key, book=ChallengeFile(book))
    first = issuer.challenge(c, beacon=BEACON, k=3)
    second = issuer.challenge(c, beacon=bytes(reversed(BEACON)), k=3)
    later = Verifier(key=verifier_key, book=ChallengeFile(book))  # `pocv verify`, another process
    with pytest.raises(MismatchError, match="retired"):
        later.check(c, first, prover.respond(first))
    assert later.check(c, second, prover.respond(second)).passed
