"""Kernel.judge_many: the batched form of the one rule keeps judge's guarantees, and the verifier
uses it for a kernel that judges a response's steps at once (hf-causal-lm's one forward pass)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.base import Comparison
from pocv.kernels.gemm_int8 import GemmInt8

SPEC = resolve_spec(JobSpec(kernel="gemm-int8", steps=8, seed=5, params={"n": 16, "layers": 1}))


def _chain(k: Any, n: int) -> list[Any]:
    states = [k.init_state(SPEC)]
    for i in range(1, n + 1):
        states.append(k.step(states[-1], i, SPEC))
    return states


class _Batched(GemmInt8):
    """gemm-int8 with a batched verify_steps that counts its calls (and can misbehave)."""

    calls = 0
    mode_of_failure: str | None = None

    def verify_steps(self, items: Any, spec: JobSpec, device: str = "cpu") -> list[Comparison]:
        type(self).calls += 1
        if self.mode_of_failure == "raise":
            raise RuntimeError("a kernel bug")
        got = [self.verify_step(p, c, i, spec, device) for p, c, i in items]
        return got[:-1] if self.mode_of_failure == "short" else got


@pytest.fixture
def batched() -> _Batched:
    _Batched.calls, _Batched.mode_of_failure = 0, None
    return _Batched()


def test_judge_many_equals_judge_one_by_one() -> None:
    k = kernel_for(SPEC)
    s = _chain(k, 4)
    bad = {name: t.clone() for name, t in s[3].items()}
    name = next(iter(bad))
    bad[name].reshape(-1)[0] ^= 1
    items = [(s[0], s[1], 1), (s[1], s[2], 2), (s[2], bad, 3), (s[3], {"x": s[3][name][:1]}, 4)]
    many = k.judge_many(items, SPEC)
    one = [k.judge(p, c, i, SPEC) for p, c, i in items]
    assert [(c.ok, c.bad_state) for c in many] == [(c.ok, c.bad_state) for c in one]
    assert [c.ok for c in many] == [True, True, False, False] and many[3].bad_state


def test_a_batched_kernel_is_called_once_for_the_steps_that_pass_the_schema(batched: _Batched) -> None:
    s = _chain(batched, 3)
    wrong_shape = {"x": s[2][next(iter(s[2]))][:1]}
    out = batched.judge_many([(s[0], s[1], 1), (s[1], wrong_shape, 2), (s[2], s[3], 3)], SPEC)
    assert _Batched.calls == 1
    assert [c.ok for c in out] == [True, False, True] and out[1].bad_state


@pytest.mark.parametrize("failure", ["raise", "short"])
def test_a_failing_batch_is_judged_again_step_by_step(batched: _Batched, failure: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    s = _chain(batched, 3)
    batched.mode_of_failure = failure
    bad = {name: t.clone() for name, t in s[2].items()}
    bad[next(iter(bad))].reshape(-1)[0] ^= 1
    with caplog.at_level(logging.WARNING, logger="pocv.kernels.base"):
        out = batched.judge_many([(s[0], s[1], 1), (s[1], bad, 2), (s[2], s[3], 3)], SPEC)
    assert [c.ok for c in out] == [True, False, True]  # one hostile state does not turn the others
    assert "judging one step at a time" in caplog.text
