"""gemm-fp32: elementwise bound and Freivalds check; honest implementations pass, downgrades and cheats fail."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pocv.encoding import state_digest
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.gemm_fp32 import GemmFp32


def spec(n: int = 128, seed: int = 4) -> JobSpec:
    return resolve_spec(JobSpec(kernel="gemm-fp32", steps=50, seed=seed, params={"n": n}))


def setup(n: int = 128, seed: int = 4, walk: int = 3) -> tuple[GemmFp32, JobSpec, dict]:
    sp = spec(n, seed)
    k = kernel_for(sp)
    assert isinstance(k, GemmFp32)
    s = k.init_state(sp)
    for i in range(1, walk + 1):
        s = k.step(s, i, sp)
    return k, sp, s


def test_step_is_softsign_then_product() -> None:
    k, sp, s = setup(64)
    out = k.step(s, 4, sp)["x"].double()
    a = s["x"].double() / (1 + s["x"].double().abs())
    want = a @ k.weights(sp).double()
    assert float((out - want).abs().max()) < 1e-5
    assert state_digest(k.init_state(sp)) != state_digest(k.init_state(spec(64, seed=5)))
    assert k.check_schema(s, sp) is None


@pytest.mark.parametrize("n", [16, 300])
def test_honest_variants_pass_compare_and_freivalds(n: int) -> None:
    k, sp, s = setup(n)
    outs = {name: f(s, 4, sp) for name, f in k.honest_variants().items()}
    assert len({state_digest(o) for o in outs.values()}) >= 3  # they really differ in bits
    for a, ea in outs.items():
        for b, eb in outs.items():
            cmp = k.compare(ea, eb, sp)
            assert cmp.ok, f"{a} vs {b}: {cmp.detail}"
            assert cmp.worst_ratio < 0.5
        fr = k.verify_step(s, ea, 4, sp)
        assert fr.ok, f"{a}: {fr.detail}"
        assert fr.worst_ratio < 0.5
        assert k.verify_step_recompute(s, ea, 4, sp).ok


@pytest.mark.parametrize("downgrade", ["tf32", "bf16", "fp16"])
@pytest.mark.parametrize("n", [64, 512])
def test_downgrades_caught_by_compare_and_by_freivalds(downgrade: str, n: int) -> None:
    k, sp, s = setup(n)
    claimed = k.downgrade_variants()[downgrade](s, 4, sp)
    cmp = k.verify_step_recompute(s, claimed, 4, sp)
    assert not cmp.ok
    assert cmp.worst_ratio > 4
    fr = k.verify_step(s, claimed, 4, sp)
    assert not fr.ok
    assert "Freivalds" in fr.detail
    assert fr.worst_ratio > 4


@pytest.mark.parametrize(
    "cheat",
    ["one-element", "one-row-small", "skipped-step", "stale-weights", "nan", "wrong-shape", "float64"],
)
def test_cheats_caught_by_freivalds(cheat: str) -> None:
    k, sp, s = setup(256)
    good = k.step(s, 4, sp)["x"]
    x = good.clone()
    if cheat == "one-element":
        x[17, 200] += 1e-3
    elif cheat == "one-row-small":
        # every element of one row moved by 3e-4 with random signs: each element is within a few
        # elementwise bounds (16 u s_j ~ 3e-5), the row sum ~ 20x the Freivalds bound (~2.4e-4);
        # P(all 4 vectors miss) ~ 1e-6
        signs = torch.from_numpy(np.random.default_rng(0).choice([-1.0, 1.0], 256).astype(np.float32))
        x[5] += signs * 3e-4
    elif cheat == "skipped-step":
        x = s["x"].clone()
    elif cheat == "stale-weights":  # the product with another job's W
        other = resolve_spec(JobSpec(kernel="gemm-fp32", steps=50, seed=99, params={"n": 256}))
        x = k.step(s, 4, other)["x"]
    elif cheat == "nan":
        x[0, 0] = float("nan")
    elif cheat == "wrong-shape":
        x = x[:, :-1]
    elif cheat == "float64":
        x = x.double()
    fr = k.verify_step(s, {"x": x}, 4, sp)
    assert not fr.ok, cheat
    assert k.verify_step(s, {"x": good}, 4, sp).ok


def test_freivalds_vectors_are_fresh_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """r comes from OS randomness: redrawn after freivalds_reuse checks (here 1), never fixed."""
    k, sp, s = setup(64)
    good = k.step(s, 4, sp)
    monkeypatch.setattr(GemmFp32, "freivalds_reuse", 1)
    assert len({k.freivalds_ratio(s, good, sp) for _ in range(5)}) > 1
    monkeypatch.setattr(GemmFp32, "freivalds_reuse", 3)
    k._vectors.clear()
    seq = [k.freivalds_ratio(s, good, sp) for _ in range(6)]
    assert seq[0] == seq[1] == seq[2]
    assert seq[3] == seq[4] == seq[5]
    assert seq[2] != seq[3]


def test_freivalds_vectors_are_never_shared_between_jobs_nor_shown() -> None:
    """Two jobs of the same seed and n (another step count) draw their own r; a FAIL's detail
    carries nothing computed from r (issue 15, class 9)."""
    k, sp, s = setup(64)
    other = dataclasses.replace(sp, steps=sp.steps + 1)
    assert other.seed == sp.seed and other.job_id != sp.job_id
    k._vectors.clear()
    k.freivalds_ratio(s, k.step(s, 4, sp), sp)
    k.freivalds_ratio(s, k.step(s, 4, other), other)
    keys = list(k._vectors)
    assert len(keys) == 2 and k._vectors[keys[0]][0] is not k._vectors[keys[1]][0]
    bad = {"x": k.step(s, 4, sp)["x"] * 1.5}
    fr = k.verify_step(s, bad, 4, sp)
    assert not fr.ok and f"{fr.worst_ratio:.3g}" not in fr.detail and "random r" in fr.detail


def test_freivalds_needs_only_reading_not_recompute() -> None:
    """The check never calls the matmul: it passes even if the product function is broken."""
    k, sp, s = setup(128)
    good = k.step(s, 4, sp)
    original = torch.matmul
    try:
        torch.matmul = None  # type: ignore[assignment]
        assert k.verify_step(s, good, 4, sp).ok
    finally:
        torch.matmul = original


@pytest.mark.slow
def test_zero_false_fail_many_honest_checks() -> None:
    from pocv.kernels.calibrate import calibrate

    report = calibrate("gemm-fp32", trials=144, params={"n": 96}, seed=500)  # 7 checks a trial
    assert report["checks"] >= 1000
    assert report["false_fails"] == 0
    assert report["freivalds"]["false_fails"] == 0
    assert all(d["caught"] == d["of"] for d in report["downgrades"].values())


@pytest.mark.gpu
def test_cuda_step_within_bound_and_freivalds() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    k, sp, s = setup(1024)
    gpu = k.step({"x": s["x"].cuda()}, 4, sp, "cuda")
    cpu = k.step(s, 4, sp)
    assert k.compare(cpu, gpu, sp).ok
    assert k.verify_step(s, {"x": gpu.cpu()}, 4, sp).ok


@pytest.mark.parametrize("n", [3, 64, 257])
def test_fused_freivalds_equals_the_two_pass_sums(n: int) -> None:
    """The 4-vector fused pass gives the same max difference as _rows_dot and _softsign_rows_dot,
    and a NaN or infinity anywhere gives inf (never dropped by the max)."""
    from pocv.kernels.gemm_fp32 import _freivalds4_maxdiff, _rows_dot, _softsign_rows_dot

    rng = np.random.default_rng(n)
    c = rng.standard_normal((n, n)).astype(np.float32)
    x = rng.standard_normal((n, n)).astype(np.float32)
    r = (rng.integers(0, 2, (4, n)) * 2 - 1).astype(np.float64)
    v = rng.standard_normal((4, n))
    two_pass = float(np.abs(_rows_dot(c, r) - _softsign_rows_dot(x, v)).max())
    assert _freivalds4_maxdiff(c, x, r, v) == pytest.approx(two_pass, rel=1e-12, abs=1e-12)
    for bad in (np.nan, np.inf, -np.inf):
        for m in (c, x):
            saved = m[n // 2, n - 1]
            m[n // 2, n - 1] = bad
            assert _freivalds4_maxdiff(c, x, r, v) == np.inf
            m[n // 2, n - 1] = saved
