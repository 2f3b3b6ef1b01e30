"""The catalogue of cheating workers against the real verifier: who is caught, when, and why.

Sampled strategies are caught exactly at their faked steps (so detection is the probability of
challenging one, measured in test_detection.py and bench/detection.py); certain strategies are
caught whatever the beacon. The known limit of tolerance mode (drift below the bound) is shown
to PASS, as the README says it does.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from blake3 import blake3
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import challenge_runs
from pocv.challenge import derive_indices
from pocv.check import NOT_JUDGED
from pocv.dispute import detect_equivocation
from pocv.kernels import resolve_spec
from pocv.merkle import MerkleTree
from pocv.testing import liar as sim

GEMM = resolve_spec(JobSpec(kernel="gemm-int8", steps=30, seed=8, params={"n": 16}))
MLP = resolve_spec(JobSpec(kernel="mlp-sgd", steps=30, seed=8, params={"width": 16, "depth": 2, "batch": 16}))
SPECS = {"gemm-int8": GEMM, "mlp-sgd": MLP}
VERIFIER = Verifier(key=Keypair.from_seed(bytes([12]) * 32))


def beacon(*tag: object) -> bytes:
    return blake3(repr(tag).encode()).digest()


def run_liar(strategy: sim.Strategy, spec: JobSpec, tmp: Path, *, every: int = 1) -> tuple[sim.LyingProver, object]:
    liar = sim.make_liar(strategy, trace_dir=tmp / "trace", checkpoint_every=every)
    return liar, liar.run(spec)


def assert_chain_verdict(verdict: object, indices: tuple[int, ...], faked: set[int], exact: bool) -> None:
    """Failures as :func:`pocv.testing.expected_failures` says (per run of consecutive challenged
    steps, for an exact kernel): each faked step that is judged a MISMATCH, each
    step not judged MISSING and saying so."""
    failures = {o.index: o for o in verdict.failures}  # type: ignore[attr-defined]
    assert set(failures) == sim.expected_failures(indices, faked, exact)
    for run in challenge_runs(indices):
        bad = [i for i in run if i in faked]
        for i in run:
            if i in faked and (not exact or i == bad[0]):
                assert failures[i].reason == "MISMATCH", failures[i]
            elif exact and bad and i > bad[0]:
                assert failures[i].reason == "MISSING" and failures[i].detail.startswith(NOT_JUDGED), failures[i]


SAMPLED_CASES = [(name, kernel) for name, make in sim.SAMPLED.items() for kernel in make(0.1).kernels]


@pytest.mark.parametrize(("name", "kernel"), SAMPLED_CASES)
def test_sampled_strategy_fails_exactly_its_faked_steps(tmp_path, name: str, kernel: str) -> None:
    """Challenge every step: the FAIL set is exactly the faked set, each a MISMATCH. The trace is
    checkpointed every 4th state, so answering recomputes the lies from checkpoints too."""
    liar, c = run_liar(sim.SAMPLED[name](0.2), SPECS[kernel], tmp_path, every=4)
    assert len(liar.faked) == 6
    ch = VERIFIER.challenge(c, beacon=beacon(name), k=SPECS[kernel].steps)
    # every state opened whole: each step is judged on its own
    verdict = VERIFIER.check(c, ch, liar.respond(ch, whole=True))
    assert {o.index for o in verdict.failures} == set(liar.faked)
    assert {o.reason for o in verdict.failures} == {"MISMATCH"}
    # the answer an honest worker gives: an exact kernel's one run (every step challenged) is
    # judged up to its first faked step, the rest is not judged
    verdict = VERIFIER.check(c, ch, liar.respond(ch))
    assert not verdict.passed
    assert_chain_verdict(verdict, ch.indices, liar.faked, exact=kernel == "gemm-int8")


@pytest.mark.parametrize(("name", "kernel"), SAMPLED_CASES)
def test_sampled_strategy_is_caught_iff_a_faked_step_is_challenged(tmp_path, name: str, kernel: str) -> None:
    liar, c = run_liar(sim.SAMPLED[name](0.1), SPECS[kernel], tmp_path)
    hits = 0
    for t in range(16):
        ch = VERIFIER.challenge(c, beacon=beacon(name, t), k=5, cheat_fraction=0.1)
        verdict = VERIFIER.check(c, ch, liar.respond(ch))
        hit = liar.faked.intersection(ch.indices)
        assert_chain_verdict(verdict, ch.indices, liar.faked, exact=kernel == "gemm-int8")
        assert verdict.passed == (not hit)
        hits += bool(hit)
    # 3 faked of 30, k = 5: a hit has probability 0.43, so 16 beacons see both outcomes but with
    # probability 0.57^16 + 0.43^16 < 1e-3 (8 beacons: 1.1%, and a new root draws new indices)
    assert 0 < hits < 16


@pytest.mark.parametrize("precision", ["bf16", "fp16", "tf32"])
def test_every_precision_downgrade_is_outside_the_bound(tmp_path, precision: str) -> None:
    liar, c = run_liar(sim.downgrade(0.2, precision), MLP, tmp_path)
    ch = VERIFIER.challenge(c, beacon=beacon(precision), k=MLP.steps)
    verdict = VERIFIER.check(c, ch, liar.respond(ch))
    assert {o.index for o in verdict.failures} == set(liar.faked)


def test_noise_just_above_the_bound_is_caught_just_below_is_not(tmp_path) -> None:
    """ratio 1.1 of the bound: every noisy step fails; ratio 0.9: PASS at every step -- the
    documented limit of tolerance mode (drift below the bound is not a provable lie)."""
    for ratio, caught in ((1.1, True), (0.9, False)):
        liar, c = run_liar(sim.noise(1.0, ratio), MLP, tmp_path / str(ratio))
        ch = VERIFIER.challenge(c, beacon=beacon(ratio), k=MLP.steps)
        verdict = VERIFIER.check(c, ch, liar.respond(ch))
        assert len(verdict.failures) == (MLP.steps if caught else 0), ratio
        if not caught:
            assert c.root != Prover(trace_dir=tmp_path / "honest", key=Keypair(), checkpoint_every=8).run(MLP).root


CERTAIN_REASONS = {
    "replay-s0": {"MISMATCH"},
    "wrong-version": {"MISMATCH"},
    "answer-differently": {"BAD_PROOF"},
    "partial-answer": {"MISSING"},
    "refuse": {"REFUSED"},
    "forge-wrong-sibling": {"BAD_PROOF"},
    "forge-wrong-index": {"BAD_PROOF"},
    "forge-wrong-tree-size": {"WRONG_JOB"},
    "forge-short-proof": {"BAD_PROOF"},
    "forge-long-proof": {"BAD_PROOF"},
    "forge-swapped-hashes": {"BAD_PROOF"},
    "forge-proof-for-other-leaves": {"BAD_PROOF"},
    "leaf-value-of-previous": {"BAD_PROOF"},
    "leaf-value-flipped": {"BAD_PROOF"},
    "leaf-value-of-recomputed": {"BAD_PROOF"},
}


RUN_TIME_LIES = ("replay-s0", "wrong-version")  # every state computed wrong


@pytest.mark.parametrize("name", sorted(sim.CERTAIN))
def test_certain_strategy_is_caught_every_time(tmp_path, name: str) -> None:
    """10 beacons, k = 5 of 30 steps: FAIL every time, with the strategy's reason."""
    liar, c = run_liar(sim.CERTAIN[name](), GEMM, tmp_path)
    for t in range(10):
        ch = VERIFIER.challenge(c, beacon=beacon(name, t), k=5)
        verdict = VERIFIER.check(c, ch, liar.respond(ch))
        assert not verdict.passed, (name, t)
        reasons = {o.reason for o in verdict.failures}
        if name in RUN_TIME_LIES:  # every step faked: a run's first step MISMATCH, the rest not judged
            assert_chain_verdict(verdict, ch.indices, set(range(1, GEMM.steps + 1)), exact=True)
        assert reasons == CERTAIN_REASONS[name] or (name in RUN_TIME_LIES and reasons == {"MISMATCH", "MISSING"}), (
            name, t, verdict.failures)


@pytest.mark.parametrize("name", ["replay-s0", "wrong-version"])
def test_certain_run_time_lies_on_the_tolerance_kernel(tmp_path, name: str) -> None:
    liar, c = run_liar(sim.CERTAIN[name](), MLP, tmp_path)
    ch = VERIFIER.challenge(c, beacon=beacon(name), k=3)
    verdict = VERIFIER.check(c, ch, liar.respond(ch))
    assert len(verdict.failures) == 3


def test_timeout_is_a_refusal(tmp_path) -> None:
    liar, c = run_liar(sim.timeout(30.0), GEMM, tmp_path)
    ch = VERIFIER.challenge(c, beacon=beacon("timeout"), k=4)
    answer = sim.answer_within(liar, ch, deadline_s=0.5)
    assert answer is None
    verdict = VERIFIER.check(c, ch, answer)
    assert {o.reason for o in verdict.outcomes} == {"REFUSED"}
    honest = Prover(trace_dir=tmp_path / "h", key=Keypair(), checkpoint_every=8)
    hc = honest.run(GEMM)
    hch = VERIFIER.challenge(hc, beacon=beacon("timeout"), k=4)
    assert VERIFIER.check(hc, hch, sim.answer_within(honest, hch, deadline_s=30.0)).passed


def test_equivocation_is_caught_by_its_two_signatures(tmp_path) -> None:
    """Two roots for one job by one worker: the honest one passes any spot check, so sampling
    alone cannot see the equivocation; the two valid signatures are the evidence."""
    key = Keypair()
    c1, c2 = sim.equivocate(GEMM, key, tmp_path)
    honest = Prover(trace_dir=tmp_path / "equivocate-1", key=key)
    ch = VERIFIER.challenge(c1, beacon=beacon("equivocate"), k=GEMM.steps)
    assert VERIFIER.check(c1, ch, honest.respond(ch)).passed
    ev = detect_equivocation(c1, c2)
    assert ev.job_id == GEMM.job_id and c1.root != c2.root and c1.worker == c2.worker == bytes(key.pubkey())


# -- grinding: why the beacon must come after the commitment ---------------------------------------


def test_fabricated_leaves_are_what_the_liar_commits(tmp_path) -> None:
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=40, seed=8, params={"n": 16}))
    for salt in (0, 5):
        liar = sim.make_liar(sim.fabricate(0.1, seed=2).with_salt(salt), trace_dir=tmp_path / str(salt))
        c = liar.run(spec)
        assert MerkleTree(sim.fabricated_leaves(spec, 0.1, 2, salt)).root == c.root


def test_grinding_root_only_challenges_takes_few_rolls(tmp_path) -> None:
    """f = 2 of 100 steps, k = 30: each roll of the commitment escapes root-only challenges with
    probability C(98,30)/C(100,30) = 0.487. Measured over 80 rolls, then a ground commitment
    PASSES a real check under the root-only variant, and is caught under a fresh beacon as
    often as any other (not asserted per beacon: it is a 51% event)."""
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=100, seed=8, params={"n": 16}))
    f, k = 0.02, 30
    faked = sim.pick_steps(spec.steps, f, 0)
    wins = []
    for salt in range(80):
        root = MerkleTree(sim.fabricated_leaves(spec, f, 0, salt)).root
        if not faked.intersection(derive_indices(spec.job_id, root, sim.root_only_beacon(root), spec.steps, k)):
            wins.append(salt)
    p = math.comb(98, k) / math.comb(100, k)
    assert abs(len(wins) / 80 - p) < 3.3 * math.sqrt(p * (1 - p) / 80)  # within 99.9%
    g = sim.grind_root_only(spec, f, k, max_rolls=50)
    assert g.success and g.rolls == wins[0] + 1
    liar = sim.make_liar(sim.fabricate(f, seed=0).with_salt(wins[0]), trace_dir=tmp_path / "ground")
    c = liar.run(spec)
    ch = VERIFIER.challenge(c, beacon=sim.root_only_beacon(c.root), k=k, cheat_fraction=f)
    assert VERIFIER.check(c, ch, liar.respond(ch)).passed  # the cheater is paid
    caught = 0
    for t in range(20):  # with a beacon it cannot grind against, it is caught ~51% of the time
        fresh = VERIFIER.challenge(c, beacon=beacon("fresh", t), k=k, cheat_fraction=f)
        caught += not VERIFIER.check(c, fresh, liar.respond(fresh)).passed
    assert 2 <= caught <= 18


def test_a_commitment_naming_another_kernel_version_is_refused(tmp_path) -> None:
    """The verifier recomputes with the kernel the commitment names, so a worker cannot claim a
    version it made up (SpecError), nor pass one job's commitment off as another's (MismatchError)."""
    import dataclasses
    import json

    from pocv.errors import MismatchError, SpecError
    from pocv.records import Commitment

    key = Keypair()
    prover = Prover(trace_dir=tmp_path / "t", key=key, checkpoint_every=8)
    c = prover.run(GEMM)
    # records parse without loading kernels: a made-up version is refused as soon as the verifier
    # needs the kernel, when it challenges (and again when it checks)
    made_up = Commitment.create(spec=dataclasses.replace(c.spec, version=2), root=c.root, key=key)
    assert Commitment.from_json(made_up.to_json()) == made_up
    v = Verifier(key=Keypair())
    with pytest.raises(SpecError, match="no version 2"):
        v.challenge(made_up, beacon=bytes(32), k=2)
    ch = v.challenge(c, beacon=bytes(32), k=2)
    with pytest.raises(SpecError, match="no version 2"):
        v.check(made_up, ch, None)
    doc = json.loads(c.to_json())
    doc["spec"]["seed"] += 1
    with pytest.raises(MismatchError, match="not the id of its spec"):
        Commitment.from_json(json.dumps(doc))
