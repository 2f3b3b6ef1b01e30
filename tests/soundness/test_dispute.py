"""Bisection disputes (pocv.dispute): round counts, who is named, every way to lose, files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import Response
from pocv.dispute import (
    MAX_DISPUTE_ROUNDS,
    Dispute,
    DisputeOutcome,
    DisputeResult,
    Equivocation,
    Opening,
    Query,
    detect_equivocation,
    max_rounds,
    run_dispute,
)
from pocv.encoding import digest_encoded, encode_state
from pocv.errors import MalformedError, MismatchError, PocvError, SignatureError
from pocv.kernels import kernel_for, resolve_spec
from pocv.merkle import MerkleTree
from pocv.prover import answer_query
from pocv.records import Commitment, Verdict
from pocv.store import atomic_write, save_keypair
from pocv.testing import LyingProver, VariantProver, fabricate, make_liar, noise, skip
from tests.helpers import answer_from_memory

REFEREE = Keypair.from_seed(bytes([9]) * 32)
GEMM = {"kernel": "gemm-int8", "seed": 4, "params": {"n": 16}}


def gemm(steps: int) -> JobSpec:
    return resolve_spec(JobSpec(steps=steps, **GEMM))  # type: ignore[arg-type]


def run_local(a: Prover, b: Prover, *, key: Keypair, device: str = "cpu", workdir: Path | None = None,
              beacon: bytes | None = None) -> DisputeResult:
    """Both parties local: what ``pocv dispute run`` does. With ``workdir`` every record goes
    through a file there and is parsed back (run_dispute's exchange hook); with ``beacon`` a
    both-within-bound dispute spot-checks each party on its own trace."""

    def through_file(name: str, data: bytes) -> bytes:
        assert workdir is not None
        atomic_write(workdir / name, data, durable=False)
        return (workdir / name).read_bytes()

    provers = {a.commitment().root: a, b.commitment().root: b}

    def spot_check(c: Commitment) -> Verdict:
        v = Verifier(key=key, device=device)
        ch = v.challenge(c, beacon=beacon)  # type: ignore[arg-type]
        return v.check(c, ch, provers[c.root].respond(ch))

    return run_dispute(a.commitment(), b.commitment(), a.answer, b.answer, key=key, device=device,
                       exchange=through_file if workdir is not None else None,
                       spot_check=spot_check if beacon is not None else None)


# -- in-memory parties: the exhaustive round counts ----------------------------------------------


class MemParty:
    """A party that keeps its encoded states in memory and answers queries like answer_query."""

    def __init__(self, spec: JobSpec, states: list[bytes], key: Keypair) -> None:
        self.states = states
        self.tree = MerkleTree(b"".join(digest_encoded(s) for s in states))
        self.commitment = Commitment.create(spec=spec, root=self.tree.root, key=key)

    def answer(self, q: Query) -> Opening | Response:
        return answer_from_memory(self.commitment, self.tree, self.states, q)


@pytest.fixture(scope="module")
def chain() -> list[bytes]:
    """The honest encoded states of gemm(130)."""
    spec = gemm(130)
    k = kernel_for(spec)
    s = k.init_state(spec)
    out = [encode_state(s)]
    for i in range(1, 131):
        s = k.step(s, i, spec)
        out.append(encode_state(s))
    return out


def _garbage(enc: bytes, salt: int) -> bytes:
    """Same header (names, dtypes, shapes), other data: a wrong state of the right schema."""
    body = bytes((b + salt + 1) % 256 for b in enc[-256:])
    return enc[:-256] + body


def _liar_states(chain: list[bytes], n: int, bad: int) -> list[bytes]:
    """Honest up to bad-1, wrong from bad on (what comes after the first lie is never opened)."""
    return chain[:bad] + [_garbage(chain[j], j) for j in range(bad, n + 1)]


def _resolve(a: MemParty, b: MemParty) -> tuple[DisputeOutcome, tuple[Verdict, ...]]:
    d = Dispute.open(a.commitment, b.commitment)
    while not d.done:
        q = d.query()
        d.submit(a.answer(q), b.answer(q))
    return d.finish(REFEREE)


def test_round_count_is_at_most_ceil_log2_n_for_every_n_and_every_divergence(chain) -> None:
    """Every n in 1..40 and every divergent step: the right step, the liar named, and the rounds
    between floor(log2 n) and ceil(log2 n), the worst case exactly ceil(log2 n)."""
    honest_key, liar_key = Keypair.from_seed(bytes([1]) * 32), Keypair.from_seed(bytes([2]) * 32)
    for n in range(1, 41):
        spec = gemm(n)
        honest = MemParty(spec, chain[: n + 1], honest_key)
        counts = []
        for bad in range(1, n + 1):
            liar = MemParty(spec, _liar_states(chain, n, bad), liar_key)
            outcome, verdicts = _resolve(honest, liar)
            assert (outcome.step, outcome.case, outcome.liars) == (bad, "exact-mismatch", ("B",)), (n, bad)
            assert [v.root for v in verdicts] == [liar.commitment.root]
            counts.append(len(outcome.rounds))
        assert max(counts) == max_rounds(n) == math.ceil(math.log2(n)), n
        assert min(counts) >= math.floor(math.log2(n)), n
        if n & (n - 1) == 0:  # a power of two: every path takes exactly log2 n rounds
            assert set(counts) == {max_rounds(n)}, n


@pytest.mark.parametrize("n", [64, 100, 127, 128, 129])
def test_round_count_larger_n(chain, n: int) -> None:
    spec = gemm(n)
    honest = MemParty(spec, chain[: n + 1], Keypair())
    for bad in sorted({1, 2, n // 3, n // 2, n // 2 + 1, n - 1, n}):
        outcome, _ = _resolve(MemParty(spec, _liar_states(chain, n, bad), Keypair()), honest)
        assert outcome.step == bad and outcome.liars == ("A",)
        assert math.floor(math.log2(n)) <= len(outcome.rounds) <= math.ceil(math.log2(n))


def test_max_rounds_of_the_largest_job() -> None:
    assert max_rounds(1) == 0 and max_rounds(2) == 1 and max_rounds(1 << 32) == 32 == MAX_DISPUTE_ROUNDS
    with pytest.raises(PocvError):
        max_rounds(0)


def test_first_divergence_is_found_even_when_the_liar_rejoins(chain) -> None:
    """A liar that fakes step 7 and then copies the honest states again: leaves agree after 7,
    so a search on single leaves could be fooled; the prefix predicate is not."""
    n = 40
    spec = gemm(n)
    states = list(chain[: n + 1])
    states[7] = _garbage(states[7], 1)
    outcome, _ = _resolve(MemParty(spec, chain[: n + 1], Keypair()), MemParty(spec, states, Keypair()))
    assert (outcome.step, outcome.liars) == (7, ("B",))


def test_both_wrong_names_both(chain) -> None:
    n = 20
    spec = gemm(n)
    a = MemParty(spec, _liar_states(chain, n, 9), Keypair())
    b_states = _liar_states(chain, n, 9)
    b_states[9] = _garbage(chain[9], 77)
    outcome, verdicts = _resolve(a, MemParty(spec, b_states, Keypair()))
    assert outcome.liars == ("A", "B") and outcome.step == 9
    assert len(verdicts) == 2 and all(not v.passed for v in verdicts)


def test_wrong_initial_state_is_bad_init(chain) -> None:
    n = 10
    spec = gemm(n)
    outcome, verdicts = _resolve(MemParty(spec, chain[: n + 1], Keypair()),
                                 MemParty(spec, _liar_states(chain, n, 0), Keypair()))
    assert (outcome.case, outcome.liars, outcome.step) == ("bad-init", ("B",), 1)
    assert verdicts[0].outcomes[0].reason == "BAD_INIT"


# -- losing by not answering or answering badly -------------------------------------------------


@pytest.fixture
def pair(chain) -> tuple[MemParty, MemParty]:
    spec = gemm(16)
    return MemParty(spec, chain[:17], Keypair()), MemParty(spec, _liar_states(chain, 16, 11), Keypair())


@pytest.mark.parametrize("who", ["A", "B", "both"])
def test_no_answer_loses(pair, who: str) -> None:
    a, b = pair
    d = Dispute.open(a.commitment, b.commitment)
    q = d.query()
    d.submit(a.answer(q), b.answer(q))  # one honest round first
    q = d.query()
    d.submit(None if who in ("A", "both") else a.answer(q), None if who in ("B", "both") else b.answer(q))
    outcome, verdicts = d.finish(REFEREE)
    assert outcome.case == "refused" and len(outcome.rounds) == 1
    assert outcome.liars == {"A": ("A",), "B": ("B",), "both": ("A", "B")}[who]
    assert {v.outcomes[0].reason for v in verdicts} == {"REFUSED"}


@pytest.mark.parametrize("forgery", ["flipped-sibling", "other-leaf", "other-root", "short-proof", "garbage-json"])
def test_an_opening_that_does_not_verify_loses(pair, forgery: str) -> None:
    a, b = pair
    d = Dispute.open(a.commitment, b.commitment)
    q = d.query()
    good = a.answer(q)
    assert isinstance(good, Opening)
    bad: Opening | bytes
    if forgery == "flipped-sibling":
        bad = Opening(job_id=good.job_id, root=good.root, tree_size=good.tree_size, leaf=good.leaf, value=good.value,
                      proof=(bytes([good.proof[0][0] ^ 1]) + good.proof[0][1:], *good.proof[1:]))
    elif forgery == "other-leaf":
        m = good.leaf + 1
        bad = Opening(job_id=good.job_id, root=good.root, tree_size=good.tree_size, leaf=m,
                      value=a.tree.leaf_value(m), proof=tuple(a.tree.inclusion_proof(m)))
    elif forgery == "other-root":
        bad = b.answer(q)  # the opponent's (valid) opening
    elif forgery == "short-proof":
        bad = Opening(job_id=good.job_id, root=good.root, tree_size=good.tree_size, leaf=good.leaf, value=good.value,
                      proof=good.proof[:-1])
    else:
        bad = b"{not json"
    d.submit(bad, b.answer(q))
    outcome, _ = d.finish(REFEREE)
    assert (outcome.case, outcome.liars) == ("bad-opening", ("A",))


def test_a_step_bundle_that_does_not_verify_loses(pair) -> None:
    a, b = pair
    d = Dispute.open(a.commitment, b.commitment)
    while d.query().kind == "bisect":
        q = d.query()
        d.submit(a.answer(q), b.answer(q))
    q = d.query()
    good = b.answer(q)
    assert isinstance(good, Response)
    honest_looking = {**good.states, q.step: a.states[q.step]}  # the liar shows the honest s_i
    forged = Response(job_id=good.job_id, root=good.root, tree_size=good.tree_size, indices=good.indices,
                      states=honest_looking, proof=good.proof)
    d.submit(a.answer(q).to_bytes(), forged.to_bytes())  # type: ignore[union-attr]
    outcome, _ = d.finish(REFEREE)
    assert (outcome.case, outcome.liars, outcome.step) == ("bad-opening", ("B",), 11)


def test_nothing_to_dispute(pair, tmp_path) -> None:
    a, b = pair
    with pytest.raises(MismatchError, match="nothing to dispute"):
        Dispute.open(a.commitment, Commitment.create(spec=a.commitment.spec, root=a.commitment.root, key=Keypair()))
    other = Commitment.create(spec=gemm(17), root=bytes(32), key=Keypair())
    with pytest.raises(MismatchError, match="different jobs"):
        Dispute.open(a.commitment, other)
    unsigned = Commitment(spec=b.commitment.spec, root=b.commitment.root, worker=b.commitment.worker)
    with pytest.raises(SignatureError):
        Dispute.open(a.commitment, unsigned)


def test_honest_workers_agree_so_there_is_no_dispute(tmp_path) -> None:
    spec = gemm(12)
    c1 = Prover(trace_dir=tmp_path / "1", key=Keypair(), checkpoint_every=4).run(spec)
    c2 = VariantProver(impl="reference", trace_dir=tmp_path / "2", key=Keypair(), checkpoint_every=5).run(spec)
    assert c1.root == c2.root  # torch _int_mm and the numpy int64 reference give one root
    with pytest.raises(MismatchError, match="nothing to dispute"):
        Dispute.open(c1, c2)


# -- records ------------------------------------------------------------------------------------


def test_outcome_and_verdicts_are_signed_and_round_trip(pair) -> None:
    a, b = pair
    outcome, verdicts = _resolve(a, b)
    again = DisputeOutcome.from_json(outcome.to_json())
    assert again == outcome
    again.verify_signature(expected_referee=bytes(REFEREE.pubkey()))
    with pytest.raises(SignatureError):
        again.verify_signature(expected_referee=bytes(Keypair().pubkey()))
    (v,) = verdicts
    assert Verdict.from_json(v.to_json()) == v
    assert not v.passed and v.root == b.commitment.root and v.job_id == b.commitment.job_id
    assert v.beacon == outcome.dispute_id and v.detection == 1.0
    assert v.outcomes[0].index == 11 and v.outcomes[0].reason == "MISMATCH"
    doc = json.loads(outcome.to_json())
    doc["liars"] = ["A"]  # blame the other party: the signature no longer verifies
    with pytest.raises(SignatureError):
        DisputeOutcome.from_json(json.dumps(doc))


def test_session_survives_a_file_and_refuses_an_edited_history(pair) -> None:
    a, b = pair
    d = Dispute.open(a.commitment, b.commitment)
    for _ in range(2):
        q = d.query()
        d.submit(a.answer(q), b.answer(q))
    d2 = Dispute.from_json(d.to_json())
    assert d2.query() == d.query() and d2.rounds == d.rounds
    doc = json.loads(d.to_json())
    doc["rounds"][0]["leaf"] += 1
    with pytest.raises(MalformedError, match="expected leaf"):
        Dispute.from_json(json.dumps(doc))
    doc = json.loads(d.to_json())
    doc["rounds"] = doc["rounds"][:1]
    doc["rounds"][0]["agree"] = not doc["rounds"][0]["agree"]
    doc["rounds"][0]["value_a"] = doc["rounds"][0]["value_b"] = "00" * 32
    d3 = Dispute.from_json(json.dumps(doc))  # a forged history moves the search ...
    while d3.query().kind == "bisect":
        q = d3.query()
        d3.submit(a.answer(q), b.answer(q))
    q = d3.query()
    with pytest.raises(MalformedError, match="session was altered"):  # ... and is caught, nobody blamed
        d3.submit(a.answer(q), b.answer(q))


# -- real provers, through files ------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "liar_is"), [(1, "A"), (13, "B"), (25, "A")])
def test_real_provers_through_files(tmp_path, bad: int, liar_is: str) -> None:
    spec = gemm(25)
    honest = Prover(trace_dir=tmp_path / "h", key=Keypair(), checkpoint_every=4)
    honest.run(spec)
    liar = make_liar(fabricate(0).at(bad), trace_dir=tmp_path / "l", checkpoint_every=4)
    liar.run(spec)
    a, b = (liar, honest) if liar_is == "A" else (honest, liar)
    result = run_local(a, b, key=REFEREE, workdir=tmp_path / "files")
    o = result.outcome
    assert (o.step, o.case, o.liars) == (bad, "exact-mismatch", (liar_is,))
    assert len(o.rounds) <= max_rounds(25)
    files = sorted(p.name for p in (tmp_path / "files").iterdir())
    assert "outcome.json" in files and f"answer-{len(o.rounds):02d}-A.pocv" in files
    assert DisputeOutcome.from_json((tmp_path / "files" / "outcome.json").read_bytes()) == o


def test_answer_query_refuses_a_query_for_another_trace(tmp_path, pair) -> None:
    a, b = pair
    p = make_liar(skip(0).at(3), trace_dir=tmp_path / "t", checkpoint_every=4)
    p.run(gemm(16))  # the same job, a third root
    q = Dispute.open(a.commitment, b.commitment).query()
    with pytest.raises(MismatchError, match="this trace holds root"):
        answer_query(p, q)
    other = Prover(trace_dir=tmp_path / "o", key=Keypair(), checkpoint_every=4)
    other.run(gemm(15))
    with pytest.raises(MismatchError, match="query is for job"):
        answer_query(other, q)


# -- tolerance mode -----------------------------------------------------------------------------

MLP = resolve_spec(JobSpec(kernel="mlp-sgd", steps=12, seed=3, params={"width": 16, "depth": 2, "batch": 16}))


def test_tolerance_two_honest_implementations_are_both_within_bound(tmp_path) -> None:
    a = Prover(trace_dir=tmp_path / "a", key=Keypair(), checkpoint_every=1)
    b = VariantProver(impl="reference-f64", trace_dir=tmp_path / "b", key=Keypair(), checkpoint_every=1)
    a.run(MLP)
    b.run(MLP)
    result = run_local(a, b, key=REFEREE, beacon=bytes(range(32)))
    o = result.outcome
    assert (o.case, o.liars, o.step) == ("both-within-bound", (), 1)  # they differ bitwise from step 1
    assert "spot-check" in o.detail and not result.verdicts
    assert [v.passed for v in result.spot_checks] == [True, True]


def test_tolerance_liar_outside_the_bound_is_named(tmp_path) -> None:
    a = Prover(trace_dir=tmp_path / "a", key=Keypair(), checkpoint_every=1)
    b = make_liar(noise(0, 3.0).at(8), trace_dir=tmp_path / "b")
    a.run(MLP)
    b.run(MLP)
    o = run_local(a, b, key=REFEREE).outcome
    assert (o.case, o.liars, o.step) == ("outside-bound", ("B",), 8)


def test_tolerance_liar_within_the_bound_falls_back_to_spot_checks(tmp_path) -> None:
    """The documented limit: drift below the bound at a step is not a provable lie."""
    a = Prover(trace_dir=tmp_path / "a", key=Keypair(), checkpoint_every=1)
    b = make_liar(noise(0, 0.5).at(*range(1, 13)), trace_dir=tmp_path / "b")
    a.run(MLP)
    b.run(MLP)
    result = run_local(a, b, key=REFEREE, beacon=bytes(32))
    assert (result.outcome.case, result.outcome.step) == ("both-within-bound", 1)
    assert all(v.passed for v in result.spot_checks)


def test_tolerance_downgrade_is_outside_the_bound(tmp_path) -> None:
    from pocv.testing import downgrade

    a = Prover(trace_dir=tmp_path / "a", key=Keypair(), checkpoint_every=1)
    b = make_liar(downgrade(0, "bf16").at(5), trace_dir=tmp_path / "b")
    a.run(MLP)
    b.run(MLP)
    o = run_local(b, a, key=REFEREE).outcome
    assert (o.case, o.liars, o.step) == ("outside-bound", ("A",), 5)


# -- equivocation -------------------------------------------------------------------------------


def test_equivocation_is_evidence(tmp_path) -> None:
    key = Keypair()
    spec = gemm(20)
    c1 = Prover(trace_dir=tmp_path / "1", key=key, checkpoint_every=4).run(spec)
    c2 = make_liar(skip(0).at(5), trace_dir=tmp_path / "2", key=key, checkpoint_every=4).run(spec)
    ev = detect_equivocation(c1, c2)
    assert ev.worker == bytes(key.pubkey())
    assert Equivocation.from_json(ev.to_json()) == ev
    v1, v2 = ev.verdicts(REFEREE)
    assert {v1.root, v2.root} == {c1.root, c2.root} and not v1.passed and not v2.passed
    c3 = make_liar(skip(0).at(5), trace_dir=tmp_path / "3", key=Keypair(), checkpoint_every=4).run(spec)
    with pytest.raises(MismatchError, match="different workers"):
        detect_equivocation(c1, c3)
    with pytest.raises(MismatchError, match="same root"):
        detect_equivocation(c1, c1)
    forged = Commitment(spec=c2.spec, root=c2.root, worker=c2.worker, signature=bytes(64))
    with pytest.raises(SignatureError):
        detect_equivocation(c1, forged)


# -- the CLI, each role its own process -----------------------------------------------------------


def pocv(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pocv", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def _cli_setup(tmp_path: Path, steps: int, bad: int) -> tuple[Path, Path]:
    spec = gemm(steps)
    h = Prover(trace_dir=tmp_path / "ta", key=Keypair(), checkpoint_every=1)
    ca = h.run(spec)
    liar: LyingProver = make_liar(fabricate(0).at(bad), trace_dir=tmp_path / "tb")  # every state kept
    cb = liar.run(spec)
    (tmp_path / "a.json").write_text(ca.to_json())
    (tmp_path / "b.json").write_text(cb.to_json())
    save_keypair(REFEREE, tmp_path / "referee.json")
    return tmp_path / "a.json", tmp_path / "b.json"


def _cli_dispute(tmp_path: Path, steps: int, bad: int) -> dict[str, object]:
    ca, cb = _cli_setup(tmp_path, steps, bad)
    s, q = tmp_path / "session.json", tmp_path / "query.json"
    r = pocv("dispute", "open", ca, cb, "-s", s, "-q", q)
    assert r.returncode == 0, r.stderr
    for rnd in range(MAX_DISPUTE_ROUNDS + 1):
        procs = [subprocess.Popen([sys.executable, "-m", "pocv", "dispute", "answer", str(tmp_path / f"t{p}"),
                                   str(q), "-o", str(tmp_path / f"ans-{rnd}-{p}")], stderr=subprocess.PIPE)
                 for p in "ab"]
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
        r = pocv("dispute", "submit", s, tmp_path / f"ans-{rnd}-a", tmp_path / f"ans-{rnd}-b", "-q", q,
                 "-k", tmp_path / "referee.json", "-o", tmp_path / "outcome.json", "--verdicts", tmp_path / "v")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        if doc.get("type") == "dispute-outcome":
            return doc
    raise AssertionError("the dispute did not end")


def test_cli_dispute_across_processes(tmp_path) -> None:
    doc = _cli_dispute(tmp_path, steps=2, bad=2)
    assert (doc["step"], doc["case"], doc["liars"], doc["bisection_rounds"]) == (2, "exact-mismatch", ["B"], 1)
    outcome = DisputeOutcome.from_json((tmp_path / "outcome.json").read_bytes())
    verdict = Verdict.from_json((tmp_path / "v" / "verdict-B.json").read_bytes())
    assert verdict.root == outcome.root_b and not verdict.passed
    assert not (tmp_path / "v" / "verdict-A.json").exists()


@pytest.mark.slow
def test_cli_dispute_across_processes_many_rounds(tmp_path) -> None:
    doc = _cli_dispute(tmp_path, steps=20, bad=13)
    assert (doc["step"], doc["liars"]) == (13, ["B"]) and doc["bisection_rounds"] <= 5


def test_cli_dispute_run(tmp_path) -> None:
    ca, cb = _cli_setup(tmp_path, 9, 6)
    r = pocv("dispute", "run", ca, cb, "--trace-a", tmp_path / "ta", "--trace-b", tmp_path / "tb",
             "-k", tmp_path / "referee.json", "--workdir", tmp_path / "w", "--output", "text")
    assert r.returncode == 0, r.stderr
    assert "first divergent step 6" in r.stdout and "liar: B" in r.stdout
    assert (tmp_path / "w" / "outcome.json").exists()


@pytest.mark.slow
def test_cli_equivocation_and_errors(tmp_path) -> None:
    ca, cb = _cli_setup(tmp_path, 9, 6)
    r = pocv("dispute", "equivocation", ca, cb)
    assert r.returncode == 1 and "different workers" in r.stderr
    r = pocv("dispute", "submit", tmp_path / "missing.json", "-", "-")
    assert r.returncode == 3 and "does not exist" in r.stderr
    r = pocv("dispute")
    assert r.returncode == 2


def test_the_liars_verdict_is_one_the_market_settles_on(pair) -> None:
    """escrow.check_verdict accepts the referee's FAIL verdict for the liar's committed root (the
    referee being the job's registered verifier), and no verdict for the honest party's root."""
    escrow = pytest.importorskip("pocv.market.escrow")
    from solders.pubkey import Pubkey

    a, b = pair
    _, (verdict,) = _resolve(a, b)
    spec = a.commitment.spec
    terms = escrow.JobTerms(job_id=spec.job_id, spec_hash=bytes(32), mint=Pubkey.default(),
                            consumer=Keypair().pubkey(), worker=Pubkey.from_bytes(b.commitment.worker),
                            verifier=REFEREE.pubkey(), price=1, bond=1, commit_deadline=10,
                            verdict_deadline=20)
    escrow.check_verdict(terms, b.commitment.root, verdict)  # the liar's bond can be slashed on this
    assert not verdict.passed
    with pytest.raises(PocvError):
        escrow.check_verdict(terms, a.commitment.root, verdict)
