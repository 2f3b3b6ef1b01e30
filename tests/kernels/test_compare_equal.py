"""Kernel._compare_equal: what compare gives a recomputed state against a claimed state equal to
it bit for bit, from the recomputed state alone. The verifier judges a step by it when the
recomputed s_i has the committed digest (pocv.check._judge_by_digest), so it must agree with
compare exactly: the verdict, the detail, the worst ratio, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pocv.errors import NotCalibrated
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.base import Comparison
from tests.helpers import SMALL

TOL = resolve_spec(JobSpec(kernel="mlp-sgd", steps=4, seed=3, params={"width": 8, "depth": 1, "batch": 4}))


def _states(spec: JobSpec) -> list[dict]:
    k = kernel_for(spec)
    s = k.init_state(spec)
    out = [s]
    for i in range(1, 4):
        s = k.step(s, i, spec)
        out.append(s)
    return out


STATES = {"tolerance": _states(TOL), "exact": _states(SMALL)}


def _poisoned(state: dict, where: list[tuple[int, int, float]]) -> dict:
    """A copy of ``state`` with values put into its float tensors: (tensor, element, value) each."""
    out = {n: t.clone() for n, t in state.items()}
    floats = sorted(n for n, t in out.items() if t.dtype.is_floating_point and t.numel())
    for which, at, value in where:
        if floats:
            t = out[floats[which % len(floats)]].view(-1)
            t[at % t.numel()] = value
    return out


@given(step=st.integers(0, 3),
       where=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 10_000),
                                st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e30, 5e-324])),
                      max_size=3))
def test_a_tolerance_kernel_says_what_compare_says_of_an_equal_state(step, where) -> None:
    k = kernel_for(TOL)
    e = _poisoned(STATES["tolerance"][step], where)
    c = {n: t.clone() for n, t in e.items()}  # equal bit for bit, another object
    assert k._compare_equal(e, TOL) == k.compare(e, c, TOL)


@pytest.mark.parametrize("step", range(4))
def test_an_exact_kernel_says_what_compare_says_of_an_equal_state(step) -> None:
    k = kernel_for(SMALL)
    e = STATES["exact"][step]
    assert k._compare_equal(e, SMALL) == k.compare(e, {n: t.clone() for n, t in e.items()}, SMALL) == Comparison(True)


def test_a_kernel_with_its_own_compare_cannot_say() -> None:
    base = type(kernel_for(TOL))
    own = type("OwnCompare", (base,), {"compare": lambda self, e, c, spec: Comparison(False, "never")})()
    assert own._compare_equal(STATES["tolerance"][1], TOL) is None


def test_without_its_bound_it_judges_nothing_as_compare(monkeypatch) -> None:
    """A kernel whose bound comes from a missing calibration record raises NotCalibrated either way."""
    k = kernel_for(TOL)

    def uncalibrated(spec):
        raise NotCalibrated("no calibration record")

    monkeypatch.setattr(k, "bound", uncalibrated)
    e = STATES["tolerance"][2]
    with pytest.raises(NotCalibrated):
        k.compare(e, {n: t.clone() for n, t in e.items()}, TOL)
    with pytest.raises(NotCalibrated):
        k._compare_equal(e, TOL)


def test_a_nan_is_named_as_compare_names_it() -> None:
    k = kernel_for(TOL)
    e = _poisoned(STATES["tolerance"][1], [(0, 0, math.nan), (1, 0, math.inf)])
    r = k._compare_equal(e, TOL)
    assert r == k.compare(e, {n: t.clone() for n, t in e.items()}, TOL)
    assert r is not None and not r.ok and "holds NaN or infinity" in r.detail
    assert np.isfinite(torch.cat([t.view(-1).double() for t in STATES["tolerance"][1].values()]).numpy()).all()
