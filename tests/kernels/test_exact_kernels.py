"""gemm-fp32-exact and heat2d: bit-for-bit agreement across implementations, threads, CPU targets.

The references (numpy float32 array operations) are written independently of the numba kernels;
a fixed-order float32 computation has one IEEE answer, so every implementation must give the
same bytes, not merely close ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from pocv.encoding import state_digest
from pocv.errors import SpecError
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.gemm_fp32_exact import GemmFp32Exact, gemm_f32_ordered, gemm_f32_reference
from pocv.kernels.heat2d import Heat2d

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "gemm-fp32-exact": [{"n": 1}, {"n": 5}, {"n": 64}, {"n": 131}],
    "heat2d": [{"n": 3, "substeps": 1}, {"n": 17, "substeps": 5}, {"n": 130, "substeps": 9}],
}


def spec(kernel: str, seed: int = 3, **params: int) -> JobSpec:
    return resolve_spec(JobSpec(kernel=kernel, steps=100, seed=seed, params=params))


def walk(sp: JobSpec, n: int) -> dict:
    k = kernel_for(sp)
    s = k.init_state(sp)
    for i in range(1, n + 1):
        s = k.step(s, i, sp)
    return s


@pytest.mark.parametrize(("kernel", "params"), [(k, p) for k, ps in CASES.items() for p in ps])
def test_fast_path_equals_reference_bit_for_bit(kernel: str, params: dict[str, int]) -> None:
    sp = spec(kernel, **params)
    k = kernel_for(sp)
    s = k.init_state(sp)
    for i in range(1, 4):
        fast = k.step(s, i, sp)
        ref = k.reference_step(s, i, sp)
        assert state_digest(fast) == state_digest(ref), f"step {i}"
        assert state_digest(fast) != state_digest(s)
        s = fast


def test_ordered_gemm_equals_sequential_sum_and_differs_from_blas() -> None:
    rng = np.random.default_rng(0)
    for n, kd, m in [(7, 9, 530), (33, 64, 17), (128, 128, 128)]:
        a = rng.standard_normal((n, kd)).astype(np.float32)
        w = rng.standard_normal((kd, m)).astype(np.float32)
        got = gemm_f32_ordered(a, w)
        np.testing.assert_array_equal(got, gemm_f32_reference(a, w))
        # one element by hand: sequential float32 sum of float32 products, from +0
        acc = np.float32(0)
        for k in range(kd):
            acc = np.float32(acc + np.float32(a[2, k] * w[k, 3]))
        assert got[2, 3] == acc
    # the point of the kernel: BLAS does not give these bits
    a = rng.standard_normal((256, 256)).astype(np.float32)
    assert not np.array_equal(gemm_f32_ordered(a, a), (torch.from_numpy(a) @ torch.from_numpy(a)).numpy())


@pytest.mark.parametrize("kernel", list(CASES))
def test_run_to_run_and_seeded_init(kernel: str) -> None:
    params = CASES[kernel][2]
    a, b = walk(spec(kernel, **params), 3), walk(spec(kernel, **params), 3)
    assert state_digest(a) == state_digest(b)
    k = kernel_for(spec(kernel, **params))
    s1, s2 = k.init_state(spec(kernel, 1, **params)), k.init_state(spec(kernel, 2, **params))
    assert state_digest(s1) != state_digest(s2)
    assert k.check_schema(s1, spec(kernel, 1, **params)) is None


@pytest.mark.parametrize("kernel", list(CASES))
def test_thread_count_invariance(kernel: str) -> None:
    params = CASES[kernel][-1]
    sp = spec(kernel, **params)
    k = kernel_for(sp)
    s = walk(sp, 1)
    outs = {name: state_digest(f(s, 2, sp)) for name, f in k.honest_variants().items()}
    assert len(set(outs.values())) == 1, outs
    assert numba.config.NUMBA_NUM_THREADS >= 1


@pytest.mark.parametrize("kernel", list(CASES))
def test_one_ulp_change_fails_exact_compare(kernel: str) -> None:
    params = CASES[kernel][2]
    sp = spec(kernel, **params)
    k = kernel_for(sp)
    s = walk(sp, 1)
    good = k.step(s, 2, sp)
    (name, t), = good.items()
    bad = t.clone()
    flat = bad.view(-1)
    flat[7] = torch.from_numpy(np.nextafter(flat[7:8].numpy(), np.float32(np.inf)))
    assert k.verify_step(s, good, 2, sp).ok
    assert not k.verify_step(s, {name: bad}, 2, sp).ok
    assert not k.verify_step(s, s, 2, sp).ok  # skipped step


def test_gemm_chain_neither_explodes_nor_dies() -> None:
    s = walk(spec("gemm-fp32-exact", n=128), 25)
    sd = float(s["x"].std())
    assert 0.1 < sd < 3.0
    assert bool(torch.isfinite(s["x"]).all())


def test_heat_boundary_held_and_pulses_move() -> None:
    sp = spec("heat2d", n=40, substeps=3)
    k = kernel_for(sp)
    assert isinstance(k, Heat2d)
    s0 = k.init_state(sp)
    s1 = k.step(s0, 1, sp)
    u0, u1 = s0["u"], s1["u"]
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        assert torch.equal(u0[edge], u1[edge])
    pulses = {k.pulse(sp, i) for i in range(1, 30)}
    assert len(pulses) > 20
    assert all(1 <= r <= 38 and 1 <= c <= 38 for r, c in pulses)
    # the pulse is one unit of heat on top of the diffused field
    r, c = k.pulse(sp, 1)
    no_pulse = torch.from_numpy(k.reference_step(s0, 1, sp)["u"].numpy().copy())
    no_pulse[r, c] -= 1
    assert abs(float(u1.sum() - no_pulse.sum()) - 1.0) < 1e-3


@pytest.mark.parametrize(
    ("kernel", "params"), [("gemm-fp32-exact", {"n": 0}), ("gemm-fp32-exact", {"n": 8192}),
                           ("heat2d", {"n": 2}), ("heat2d", {"substeps": 0})]
)
def test_bad_params(kernel: str, params: dict[str, int]) -> None:
    with pytest.raises(SpecError, match="must be an integer"):
        spec(kernel, **params)


def _digests_in_subprocess(env_extra: dict[str, str], cache_dir: Path) -> dict[str, str]:
    code = (
        "import json, sys\n"
        "from pocv.jobs import JobSpec\nfrom pocv.kernels import kernel_for, resolve_spec\n"
        "from pocv.encoding import state_digest\n"
        "out = {}\n"
        "for kernel, params in [('gemm-fp32-exact', {'n': 96}), ('heat2d', {'n': 70, 'substeps': 7})]:\n"
        "    sp = resolve_spec(JobSpec(kernel=kernel, steps=9, seed=5, params=params))\n"
        "    k = kernel_for(sp); s = k.init_state(sp)\n"
        "    for i in range(1, 3): s = k.step(s, i, sp)\n"
        "    out[kernel] = state_digest(s).hex()\n"
        "import numba; out['cpu_name'] = str(numba.config.CPU_NAME)\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ)
    env.update(env_extra)
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join([*sys.path, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cpu_target_invariance_generic_vs_host(tmp_path: Path) -> None:
    """NUMBA_CPU_NAME=generic (no AVX) computes the same bits as the host's AVX-512 code."""
    here = {}
    for kernel, params in [("gemm-fp32-exact", {"n": 96}), ("heat2d", {"n": 70, "substeps": 7})]:
        here[kernel] = state_digest(walk(resolve_spec(JobSpec(kernel=kernel, steps=9, seed=5, params=params)), 2)).hex()
    generic = _digests_in_subprocess({"NUMBA_CPU_NAME": "generic", "NUMBA_NUM_THREADS": "1"},
                                     tmp_path / "generic")
    assert generic["cpu_name"] == "generic"
    assert generic["gemm-fp32-exact"] == here["gemm-fp32-exact"]
    assert generic["heat2d"] == here["heat2d"]


def test_exact_kernels_calibrate_with_zero_mismatches() -> None:
    from pocv.kernels.calibrate import calibrate

    for kernel, params in [("gemm-fp32-exact", {"n": 48}), ("heat2d", {"n": 33, "substeps": 4})]:
        report = calibrate(kernel, trials=3, params=params, max_walk=2)
        assert report["mode"] == "exact"
        assert report["checks"] == 3 * (len(report["variants"]) - 1)
        assert sum(report["digest_mismatches"].values()) == 0


@pytest.mark.gpu
@pytest.mark.parametrize(("kernel", "params"), [("gemm-fp32-exact", {"n": 512}), ("gemm-fp32-exact", {"n": 333}),
                                                ("heat2d", {"n": 1000, "substeps": 64})])
def test_gpu_equals_cpu_bit_for_bit(kernel: str, params: dict[str, int]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    sp = spec(kernel, **params)
    k = kernel_for(sp)
    s = walk(sp, 2)
    gpu = k.step({n: t.cuda() for n, t in s.items()}, 3, sp, "cuda")
    cpu = k.step(s, 3, sp)
    assert state_digest(gpu) == state_digest(cpu)
    assert isinstance(k, (GemmFp32Exact, Heat2d))
