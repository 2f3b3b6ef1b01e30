"""ToleranceKernel.compare: the bound ``|c - e| <= tau u scale + floor`` per float element, decided
the fast way (a claimed tensor with the recomputed one's bytes passes at once, only the others
are bounded in float64) with the result of the rule evaluated element by element in float64,
and TorchTraining's per-tensor scales and caches."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from pocv.encoding import State, Tensor
from pocv.errors import NotCalibrated
from pocv.jobs import JobSpec
from pocv.kernels._tolerance import U32, ToleranceKernel
from pocv.kernels.base import Schema

SPEC = JobSpec(kernel="toy-tolerance", steps=1, seed=0)


class Toy(ToleranceKernel):
    """Scale |e| + rms(e) per tensor, like the training adapter; floor as the test sets it."""

    name = "toy-tolerance"
    version = 1
    summary = "compare() under test"
    tau: ClassVar[float] = 64.0
    floor: ClassVar[float] = 2.0**-100

    def __init__(self, floor: float = 2.0**-100, nan_scale: str | None = None) -> None:
        self.floor_ = floor
        self.nan_scale = nan_scale
        self.asked: list[list[str]] = []

    def bound(self, spec: JobSpec) -> tuple[float, float]:
        return self.tau, self.floor_

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        raise NotImplementedError

    def schema(self, spec: JobSpec) -> Schema:
        raise NotImplementedError

    def scales(self, expected: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        out = {}
        for name, t in expected.items():
            if name == "cursor" or name == "exact":
                continue
            a = np.abs(np.asarray(t, dtype=np.float64))
            out[name] = a + (math.sqrt(float(np.mean(a * a))) if a.size else 0.0)
            if name == self.nan_scale:
                out[name][0] = math.nan
        return out

    def scales_of(self, expected: State, names: Any, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        self.asked.append(list(names))
        return super().scales_of(expected, names, spec)


def reference(k: Toy, expected: State, claimed: State) -> tuple[bool, float]:
    """The rule itself, every element in float64: ok and the largest ratio (0 where c == e; an
    element whose bound is NaN or 0 and c != e is outside it); on a FAIL, the largest ratio of
    the first tensor (in name order) outside the bound, as compare reports it."""
    tau, floor = k.bound(SPEC)
    worst = 0.0
    for name, scale in sorted(k.scales(expected, SPEC).items()):
        e = torch.as_tensor(expected[name]).double().numpy()
        c = torch.as_tensor(claimed[name]).double().numpy()
        if not np.isfinite(c).all():
            return False, math.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.abs(c - e) / (tau * U32 * scale + floor)
        r = np.where(c == e, 0.0, np.where(np.isnan(r), np.inf, r))
        m = float(r.max()) if r.size else 0.0
        if m > 1.0:
            return False, m
        worst = max(worst, m)
    return True, worst


def state(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    return {"cursor": torch.tensor(7, dtype=torch.int64),
            "a": torch.from_numpy(rng.standard_normal((16, 9)).astype(np.float32)),
            "b": torch.from_numpy(rng.standard_normal(5).astype(np.float32) * 1e-3),
            "c": torch.from_numpy(rng.standard_normal((3, 4, 2)).astype(np.float32) * 100)}


def nudged(s: dict[str, torch.Tensor], name: str, index: int, ulps: float) -> dict[str, torch.Tensor]:
    """``s`` with one element of ``name`` moved by ``ulps`` times u * its scale."""
    out = {k: v.clone() for k, v in s.items()}
    flat = out[name].view(-1)
    a = np.abs(s[name].double().numpy().reshape(-1))
    scale = a[index] + math.sqrt(float(np.mean(a * a)))
    flat[index] = float(flat[index]) + ulps * U32 * scale
    return out


def test_identical_states_pass_without_a_single_scale() -> None:
    k = Toy()
    s = state(np.random.default_rng(0))
    claimed = {n: t.clone() for n, t in s.items()}
    r = k.compare(s, claimed, SPEC)
    assert r.ok and r.worst_ratio == 0.0
    assert k.asked == []  # no bound was needed


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_identical_non_finite_tensors_are_refused(bad: float) -> None:
    k = Toy()
    s = state(np.random.default_rng(1))
    s["b"][2] = bad
    claimed = {n: t.clone() for n, t in s.items()}
    r = k.compare(s, claimed, SPEC)
    assert not r.ok and r.detail == "tensor 'b' holds NaN or infinity"


@pytest.mark.parametrize("ulps", [10.0, 60.0, 70.0, 1000.0])
@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_one_element_off_is_judged_by_the_rule_in_float64(name: str, ulps: float) -> None:
    """One tensor differs in one element, the others are identical: the verdict and the worst
    ratio are the rule's, computed for that tensor alone."""
    k = Toy()
    s = state(np.random.default_rng(2))
    claimed = nudged(s, name, 3, ulps)
    want_ok, want_worst = reference(k, s, claimed)
    r = k.compare(s, claimed, SPEC)
    assert r.ok is want_ok
    assert r.worst_ratio == pytest.approx(want_worst, rel=1e-12)
    assert r.ok is (r.worst_ratio <= 1.0)
    assert (ulps < 64) is r.ok  # tau = 64, up to float32 rounding of the nudged element
    assert k.asked == [[name]]  # only the differing tensor was bounded
    if not r.ok:
        assert r.detail.startswith(f"tensor {name!r}[") and "exceeds the bound" in r.detail


def test_random_states_agree_with_the_rule() -> None:
    """Many random claimed states, every tensor nudged by random amounts around the bound: the
    verdict and the worst ratio are the reference's."""
    rng = np.random.default_rng(3)
    k = Toy()
    outcomes = set()
    for _ in range(200):
        s = state(rng)
        claimed = {n: t.clone() for n, t in s.items()}
        for name in rng.choice(["a", "b", "c"], size=rng.integers(0, 4)):
            flat = claimed[name].view(-1)
            j = int(rng.integers(flat.numel()))
            claimed = nudged(claimed, str(name), j, float(rng.uniform(-100, 100)))
        want_ok, want_worst = reference(k, s, claimed)
        r = k.compare(s, claimed, SPEC)
        assert (r.ok, r.worst_ratio) == (want_ok, pytest.approx(want_worst, rel=1e-12, abs=0))
        outcomes.add(r.ok)
    assert outcomes == {True, False}


def test_signed_zeros_are_equal_elements() -> None:
    k = Toy(floor=0.0)
    s = {"a": torch.tensor([0.0, 1.0, 0.0])}
    c = {"a": torch.tensor([-0.0, 1.0, 0.0])}  # other bits, same values
    r = k.compare(s, c, SPEC)
    assert r.ok and r.worst_ratio == 0.0


def test_zero_bound_elements_do_not_hide_another_element_outside_the_bound() -> None:
    """With no floor, an element whose scale is 0 and that is equal gives 0 / 0: it is an equal
    element, not a NaN that wins the max and lets the tensor's real excess through."""
    k = Toy(floor=0.0)
    s = {"a": torch.zeros(4)}  # every scale is 0: the bound is 0
    c = {"a": torch.tensor([0.0, 0.0, 1e-30, 0.0])}
    r = k.compare(s, c, SPEC)
    assert not r.ok and r.worst_ratio == math.inf and "tensor 'a'[2]" in r.detail
    ok = k.compare(s, {"a": torch.zeros(4)}, SPEC)
    assert ok.ok


def test_a_nan_scale_bounds_nothing() -> None:
    """A kernel whose scale is NaN (its bug) cannot pass a differing element."""
    k = Toy(nan_scale="a")
    s = state(np.random.default_rng(4))
    c = nudged(s, "a", 0, 1.0)
    r = k.compare(s, c, SPEC)
    assert not r.ok and "tensor 'a'[0, 0]" in r.detail
    assert k.compare(s, {n: t.clone() for n, t in s.items()}, SPEC).ok  # equal: no bound needed


def test_mixed_float_dtypes_and_numpy_states() -> None:
    k = Toy()
    rng = np.random.default_rng(5)
    s: dict[str, Tensor] = {"a": rng.standard_normal(6), "b": rng.standard_normal(3).astype(np.float32)}
    assert k.compare(s, {n: np.array(v) for n, v in s.items()}, SPEC).ok
    c = {n: np.array(v) for n, v in s.items()}
    c["a"][1] += 1e-3
    r = k.compare(s, c, SPEC)
    assert not r.ok and "tensor 'a'[1]" in r.detail


def test_a_recomputed_non_finite_tensor_is_a_diverged_job() -> None:
    k = Toy()
    s = {"a": torch.tensor([1.0, math.inf])}
    r = k.compare(s, {"a": torch.tensor([1.0, 2.0])}, SPEC)
    assert not r.ok and "not finite (diverged job)" in r.detail


def test_a_tensor_without_a_scale_must_be_equal() -> None:
    k = Toy()
    s = {"a": torch.ones(2), "exact": torch.ones(3)}
    assert k.compare(s, {n: t.clone() for n, t in s.items()}, SPEC).ok
    c = {"a": torch.ones(2), "exact": torch.tensor([1.0, 1.0, 1.0 + 2**-20])}
    r = k.compare(s, c, SPEC)
    assert not r.ok and r.detail == "tensor 'exact' differs (no tolerance declared for it)"


def test_integer_tensors_are_compared_exactly() -> None:
    k = Toy()
    s = state(np.random.default_rng(6))
    c = {n: t.clone() for n, t in s.items()}
    c["cursor"] = torch.tensor(8, dtype=torch.int64)
    r = k.compare(s, c, SPEC)
    assert not r.ok and r.detail == "integer tensor 'cursor' differs from the recomputed one"


class Grouped(Toy):
    """tau per tensor, and none for tensor 'b' (a bound it cannot give: NotCalibrated)."""

    def tau_for(self, name: str, spec: JobSpec) -> float:
        if name == "b":
            raise NotCalibrated("no bound for 'b'")
        return 64.0


def test_a_missing_bound_refuses_to_judge_even_equal_states() -> None:
    k = Grouped()
    s = state(np.random.default_rng(7))
    with pytest.raises(NotCalibrated):
        k.compare(s, {n: t.clone() for n, t in s.items()}, SPEC)
