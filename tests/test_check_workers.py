"""The verifier judges challenged steps on several threads at once for a kernel whose step is pure
(Verifier(workers=...)): the same verdict, in the same order, whatever the number of workers."""

from __future__ import annotations

import threading

import pytest
from solders.keypair import Keypair

from pocv import Verifier
from pocv import check as check_module
from pocv.errors import InputError, SetupError
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from tests.helpers import SMALL, StepCheater, flip_one

BEACON = bytes(range(32))
WORKER = Keypair.from_seed(bytes([5]) * 32)
TOL = resolve_spec(JobSpec(kernel="mlp-sgd", steps=24, seed=3, params={"width": 8, "depth": 1, "batch": 4}))
CHEATED = {5, 6, 13, 21}


def _scaler(spec: JobSpec):
    def scaled(state: dict, i: int) -> dict:
        """The honest s_i with its float tensors scaled: far outside any tolerance."""
        s = kernel_for(spec).step(state, i, spec)
        return {n: t * 1.5 if t.dtype.is_floating_point else t for n, t in s.items()}
    return scaled


def _answer(kind: str, tmp_path_factory):
    spec = TOL if kind == "tolerance" else SMALL
    fake = _scaler(spec) if kind == "tolerance" else flip_one
    prover = StepCheater(when=CHEATED.__contains__, fake=fake, trace_dir=tmp_path_factory.mktemp("t") / "trace",
                         key=WORKER, checkpoint_every=4)
    commitment = prover.run(spec)
    issuer = Verifier(key=Keypair.from_seed(bytes([9]) * 32))
    challenge = issuer.challenge(commitment, beacon=BEACON, k=spec.steps)  # every step
    return issuer.key, commitment, challenge, prover.respond(challenge).to_bytes()


@pytest.fixture(scope="module", params=["tolerance", "exact"])
def answered(request, tmp_path_factory):
    return _answer(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def tolerance_answered(tmp_path_factory):
    """States opened whole: judged on the pool (an exact kernel's steps opened by their leaf values
    are recomputed on the caller's thread, one after another)."""
    return _answer("tolerance", tmp_path_factory)


def _check(key, commitment, challenge, bundle, workers, monkeypatch):
    """The verdict with ``workers``, the progress calls and the threads that judged."""
    calls: list[tuple[int, int]] = []
    threads: set[str] = set()
    kernel = kernel_for(commitment.spec)
    step = type(kernel).step

    def recording(self, state, i, spec, device="cpu"):  # every judged step recomputes s_i
        threads.add(threading.current_thread().name)
        return step(self, state, i, spec, device)

    monkeypatch.setattr(type(kernel), "step", recording)
    v = Verifier(key=key, workers=workers, progress=lambda done, total: calls.append((done, total)))
    v.book.issue(challenge)
    verdict = v.check(commitment, challenge, bundle)
    monkeypatch.undo()
    return verdict, calls, threads


def test_the_verdict_is_the_same_with_any_number_of_workers(answered, monkeypatch) -> None:
    key, commitment, challenge, bundle = answered
    one, calls1, threads1 = _check(key, commitment, challenge, bundle, 1, monkeypatch)
    three, calls3, threads3 = _check(key, commitment, challenge, bundle, 3, monkeypatch)
    assert not one.passed and {o.index for o in one.failures} >= CHEATED
    assert [(o.index, o.reason, o.detail) for o in three.outcomes] == [
        (o.index, o.reason, o.detail) for o in one.outcomes]
    n = len(challenge.indices)
    assert calls1 == calls3 == [(d, n) for d in range(1, n + 1)]  # in order, one a step
    here = {threading.current_thread().name}
    if commitment.spec.kernel == "mlp-sgd":  # states opened whole: judged on the pool
        assert threads1 == here
        assert threads3 and all(t.startswith("pocv-check") for t in threads3)
    else:  # an exact kernel's chain of steps opened by their leaf values: here, one after another
        assert threads1 == threads3 == here
    assert not any(t.name.startswith("pocv-check") for t in threading.enumerate())  # and the pool is gone


def test_only_a_pure_kernel_on_the_cpu_is_judged_at_once() -> None:
    pure = kernel_for(TOL)
    impure = type("Impure", (type(pure),), {})()  # a subclass inherits the step, not the promise
    v = Verifier(key=WORKER, workers=4)
    assert v._workers(pure, 10) == 4 and v._workers(pure, 3) == 3 and v._workers(impure, 10) == 1
    assert Verifier(key=WORKER)._workers(pure, 10) >= 1


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_workers_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(InputError, match="verifier workers must be a positive integer"):
        Verifier(key=WORKER, workers=bad)


def test_an_error_of_the_verifier_on_a_worker_thread_is_raised_and_stops_the_pool(tolerance_answered,
                                                                                 monkeypatch) -> None:
    """The verifier's own errors (not the worker's evidence) pass: raised by check, the pool shut."""
    key, commitment, challenge, bundle = tolerance_answered
    kernel = kernel_for(commitment.spec)
    step = type(kernel).step

    def failing(self, state, i, spec, device="cpu"):
        if i == 9:
            raise SetupError("the verifier's device went away at step 9")
        return step(self, state, i, spec, device)

    monkeypatch.setattr(type(kernel), "step", failing)
    v = Verifier(key=key, workers=3)
    v.book.issue(challenge)
    with pytest.raises(SetupError, match="at step 9"):
        v.check(commitment, challenge, bundle)
    assert not any(t.name.startswith("pocv-check") for t in threading.enumerate())


def test_a_step_judged_by_its_digest_has_the_verdict_of_the_full_judgment(answered, monkeypatch) -> None:
    """An opened s_i whose digest is the verifier's own s_i's is judged without being decoded
    (pocv.check._judge_by_digest); every other goes to judge, from the state already recomputed.
    The outcomes are those of the full judgment of every step, and each step is recomputed once."""
    key, commitment, challenge, bundle = answered
    kernel = kernel_for(commitment.spec)
    step = type(kernel).step
    calls: list[int] = []

    def counting(self, state, i, spec, device="cpu"):
        calls.append(i)
        return step(self, state, i, spec, device)

    monkeypatch.setattr(type(kernel), "step", counting)
    fast = Verifier(key=key, workers=1)
    fast.book.issue(challenge)
    by_digest = fast.check(commitment, challenge, bundle)
    fast_calls = sorted(calls)
    calls.clear()
    monkeypatch.setattr(check_module, "_judge_by_digest", lambda *a: (None, None))  # every step: judge()
    full = Verifier(key=key, workers=1)
    full.book.issue(challenge)
    judged = full.check(commitment, challenge, bundle)
    assert [(o.index, o.reason, o.detail) for o in by_digest.outcomes] == [
        (o.index, o.reason, o.detail) for o in judged.outcomes]
    assert not by_digest.passed and {o.index for o in by_digest.failures} >= CHEATED
    assert fast_calls == sorted(calls)  # one recompute a judged step, cheated ones too
    if commitment.spec.kernel == "mlp-sgd":  # every step opened whole: each judged
        assert fast_calls == list(challenge.indices)
