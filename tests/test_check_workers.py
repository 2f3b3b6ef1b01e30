"""The verifier judges challenged steps on several threads at once for a kernel whose step is pure
(Verifier(workers=...)): the same verdict, in the same order, whatever the number of workers."""

from __future__ import annotations

import threading

import pytest
from solders.keypair import Keypair

from pocv import Verifier
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
    judge_many = type(kernel).judge_many

    def recording(self, items, spec, device):
        threads.add(threading.current_thread().name)
        return judge_many(self, items, spec, device)

    monkeypatch.setattr(type(kernel), "judge_many", recording)
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
    if commitment.spec.kernel == "mlp-sgd":  # states opened whole: judged on the pool
        assert threads1 == {threading.current_thread().name}
        assert threads3 and all(t.startswith("pocv-check") for t in threads3)
    else:  # an exact kernel's chain of steps opened by their leaf values: here, one after another
        assert threads1 == threads3 == set()
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
    judge_many = type(kernel).judge_many

    def failing(self, items, spec, device):
        if any(i == 9 for _, _, i in items):
            raise SetupError("the verifier's device went away at step 9")
        return judge_many(self, items, spec, device)

    monkeypatch.setattr(type(kernel), "judge_many", failing)
    v = Verifier(key=key, workers=3)
    v.book.issue(challenge)
    with pytest.raises(SetupError, match="at step 9"):
        v.check(commitment, challenge, bundle)
    assert not any(t.name.startswith("pocv-check") for t in threading.enumerate())
