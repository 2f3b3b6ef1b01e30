"""The numba-cuda kernels without a GPU: PTX inspection and the simulator.

* PTX (``cuda.compile_ptx`` needs NVVM and NVRTC -- ``pip install 'numba-cuda[cu13]'`` -- but no
  GPU): the exact kernels contain no ``fma``, no ``.ftz``, no ``.approx``, and every float32
  add/mul/div is explicitly ``.rn``. A control kernel written as plain ``acc += a * b`` must
  show ``fma.rn.f32``, which proves the grep looks at real contraction.
* Simulator (``NUMBA_ENABLE_CUDASIM=1``, in a subprocess because the switch is read at import):
  the kernels' indexing, tiling and reduction order equal the CPU reference bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
F32_OPS = re.compile(r"\b(add|sub|mul|div|fma|rcp|sqrt)((?:\.[a-z0-9]+)*)\.f32\b")


def _ptx(fn, sig: str, cc: tuple[int, int] = (9, 0)) -> str:
    from numba import cuda

    try:
        ptx, _ = cuda.compile_ptx(fn, sig, cc=cc, fastmath=False)
    except Exception as e:  # NVVM / NVRTC libraries missing
        if "nvrtc" in str(e).lower() or "nvvm" in str(e).lower() or "libnvvm" in str(e).lower():
            pytest.skip(f"NVVM/NVRTC not installed (pip install 'numba-cuda[cu13]'): {e}")
        raise
    return ptx


def _f32_ops(ptx: str) -> list[str]:
    return [m.group(0) for m in F32_OPS.finditer(ptx)]


def _assert_no_contraction(ptx: str) -> None:
    ops = _f32_ops(ptx)
    assert ops, "no float32 arithmetic found: the grep is broken"
    assert "fma" not in ptx.replace("fma.rn.f64", "")  # no fused multiply-add at all
    assert ".ftz" not in ptx
    assert ".approx" not in ptx
    for op in ops:
        assert ".rn" in op, f"{op}: float32 arithmetic without an explicit rounding mode may be contracted"


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
def test_gemm_kernel_ptx_has_no_fma_ftz_approx(cc: tuple[int, int]) -> None:
    from pocv.kernels import _cuda

    ptx = _ptx(_cuda.gemm_softsign_kernel, "(float32[:,::1], float32[:,::1], float32[:,::1])", cc)
    _assert_no_contraction(ptx)
    ops = set(_f32_ops(ptx))
    assert {"mul.rn.f32", "add.rn.f32", "div.rn.f32"} <= ops


def test_heat_kernel_ptx_has_no_fma_ftz_approx() -> None:
    from pocv.kernels import _cuda

    ptx = _ptx(_cuda.heat_kernel, "(float32[:,::1], float32[:,::1], float32)")
    _assert_no_contraction(ptx)
    assert {"mul.rn.f32", "add.rn.f32"} <= set(_f32_ops(ptx))


def test_control_plain_multiply_add_is_contracted_to_fma() -> None:
    """What the exact kernels avoid: NVVM fuses ``acc + a*b`` even with fastmath=False."""
    from numba import float32

    def plain(x, w, out):
        acc = float32(0)
        for k in range(x.shape[0]):
            acc += x[k] * w[k]
        out[0] = acc

    ptx = _ptx(plain, "(float32[::1], float32[::1], float32[::1])")
    assert "fma.rn.f32" in ptx


SIM_JOBS = ["gemm:17:1", "gemm:33:2", "heat:19:21:3:3"]  # sizes not multiples of the tiles


def test_kernels_in_simulator_equal_cpu_reference_bit_for_bit() -> None:
    env = dict(os.environ)
    env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([*sys.path, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "kernels" / "_sim_check.py"), *SIM_JOBS],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == set(SIM_JOBS)
    for job, r in out.items():
        assert r["equal"], job
        assert r["sim"] == r["cpu"], job
