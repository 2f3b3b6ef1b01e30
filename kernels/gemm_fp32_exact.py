"""``gemm-fp32-exact``: a float32 matrix-product chain with one canonical order, exact mode.

State: ``{"x": float32[n, n]}``. ``s_0`` and the fixed weights ``W`` (float32[n, n]) are exact
dyadic grids drawn from BLAKE3's XOF keyed by the seed and ``n``. Step ``i``::

    a_ik = x_ik / (1 + |x_ik|)                            (softsign: one add, one divide)
    x'_ij = (((0 + a_i0*w_0j) + a_i1*w_1j) + ...) + a_i,n-1*w_n-1,j

Every multiply and every add is rounded to float32 (round to nearest even) on its own, in
exactly this order: k runs 0..n-1 for each output, starting from +0. No FMA, no flush to zero,
no reassociation. IEEE 754 then gives one answer, so the CPU (numba, ``fastmath=False``, any
thread count, any CPU target) and the GPU (numba-cuda with ``fmul_rn``/``fadd_rn``/``fdiv_rn``)
compute the same bits, and a CPU verifier checks a GPU worker bit for bit.

Implementations:

* :meth:`GemmFp32Exact.reference_step` -- the definition: numpy float32 array operations, one
  rank-1 update per k (``c = c + a[:, k] * w[k]``), which is this order by construction;
* the CPU step -- numba ``parallel=True, fastmath=False``: blocks of 4 rows x 512 columns, k
  unrolled by 4 inside the (vectorized) column loop; the per-element order is unchanged;
* the CUDA step -- :func:`pocv.kernels._cuda.gemm_softsign_kernel`, 16 x 16 shared-memory tiles.

The weights' scale (uniform(-1, 1) * 2^-e, e ~ log2(sqrt(n)) - 1.8) makes the chain neither
explode (softsign bounds its input to (-1, 1)) nor die out (the linearization at 0 has gain > 1).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Final

import numpy as np
import torch
from numba import njit, prange

from pocv.encoding import State, Tensor
from pocv.jobs import JobSpec
from pocv.kernels import register
from pocv.kernels._util import as_numpy, as_torch, numba_thread_variants, seeded_bytes
from pocv.kernels.base import Kernel, Schema

_CONTEXT: Final = "pocv 2026-11 gemm-fp32-exact v1 init"
MAX_N: Final = 4096  # 2 * 4096^3 flops = 137 Gflop a step: minutes on a CPU verifier
_ROWS: Final = 4  # rows of x per block: each row of W is loaded once per 4 rows
_COLS: Final = 512  # columns per block: 4 x 512 float32 accumulators = 8 KiB, in L1
_CACHE_ENTRIES: Final = 8


@njit(parallel=True, fastmath=False, boundscheck=False, cache=True, nogil=True)
def _softsign_cpu(x: Any) -> Any:  # pragma: no cover - compiled
    n, m = x.shape
    out = np.empty((n, m), np.float32)
    one = np.float32(1)
    for i in prange(n):
        for j in range(m):
            v = x[i, j]
            out[i, j] = v / (one + abs(v))
    return out


@njit(parallel=True, fastmath=False, boundscheck=False, cache=True, nogil=True)
def gemm_f32_ordered(a: Any, w: Any) -> Any:  # pragma: no cover - compiled
    """``a @ w`` in float32 with each output summed over k in order from +0, no FMA."""
    n, kd = a.shape
    m = w.shape[1]
    out = np.empty((n, m), np.float32)
    nb = (n + _ROWS - 1) // _ROWS
    for bi in prange(nb):
        i0 = bi * _ROWS
        rows = min(_ROWS, n - i0)
        acc = np.empty((_ROWS, _COLS), np.float32)
        for j0 in range(0, m, _COLS):
            cols = min(_COLS, m - j0)
            for r in range(rows):
                for j in range(cols):
                    acc[r, j] = np.float32(0)
            k = 0
            while k + 4 <= kd:
                w0 = w[k, j0 : j0 + cols]
                w1 = w[k + 1, j0 : j0 + cols]
                w2 = w[k + 2, j0 : j0 + cols]
                w3 = w[k + 3, j0 : j0 + cols]
                for r in range(rows):
                    ai = a[i0 + r]
                    a0 = ai[k]
                    a1 = ai[k + 1]
                    a2 = ai[k + 2]
                    a3 = ai[k + 3]
                    ar = acc[r]
                    for j in range(cols):
                        ar[j] = (((ar[j] + a0 * w0[j]) + a1 * w1[j]) + a2 * w2[j]) + a3 * w3[j]
                k += 4
            while k < kd:
                wk = w[k, j0 : j0 + cols]
                for r in range(rows):
                    av = a[i0 + r, k]
                    ar = acc[r]
                    for j in range(cols):
                        ar[j] = ar[j] + av * wk[j]
                k += 1
            for r in range(rows):
                for j in range(cols):
                    out[i0 + r, j0 + j] = acc[r, j]
    return out


def gemm_f32_reference(a: np.ndarray[Any, Any], w: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The definition of the ordered product: numpy float32, one rank-1 update per k."""
    a = np.asarray(a, np.float32)
    w = np.asarray(w, np.float32)
    c: np.ndarray[Any, Any] = np.zeros((a.shape[0], w.shape[1]), np.float32)
    for k in range(a.shape[1]):
        c = np.add(c, a[:, k : k + 1] * w[k : k + 1, :])
    return c


def softsign_reference(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    x = np.asarray(x, np.float32)
    out: np.ndarray[Any, Any] = x / (np.float32(1) + np.abs(x))
    return out


def weight_exponent(n: int) -> int:
    """e such that uniform(-1, 1) * 2^-e has std ~ 2 / sqrt(n)."""
    return max(0, round(math.log2(n) / 2 - math.log2(2 * math.sqrt(3))))


def chain_init(context: str, spec: JobSpec) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(x_0, W), float32 n x n, from the job's seed under ``context``: 16-bit grid values, x_0 in
    (-1, 1) and W scaled by 2^-weight_exponent(n). Shared by gemm-fp32 and gemm-fp32-exact."""
    n = int(spec.params["n"])
    raw = np.frombuffer(seeded_bytes(context, spec.seed, n, length=4 * n * n), "<u2")
    grid = raw.astype(np.float32) - np.float32(32768)
    x0 = grid[: n * n].reshape(n, n) * np.float32(2.0**-15)
    w = grid[n * n :].reshape(n, n) * np.float32(2.0 ** -(15 + weight_exponent(n)))
    return x0, w


@register
class GemmFp32Exact(Kernel):
    name: ClassVar[str] = "gemm-fp32-exact"
    pure_step = True  # returns new tensors, never touches its input (tests/test_commit_pipeline.py)
    version: ClassVar[int] = 1
    mode = "exact"
    summary: ClassVar[str] = "x <- softsign(x) @ W in float32 with one canonical order: same bits on CPU and GPU"
    int_params: ClassVar[dict[str, tuple[int, int, int]]] = {"n": (1024, 1, MAX_N)}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self) -> None:
        self._weights: dict[tuple[int, int, str], Any] = {}

    def _init_arrays(self, spec: JobSpec) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        return chain_init(_CONTEXT, spec)

    def weights(self, spec: JobSpec, device: str = "cpu") -> Any:
        """W as a numpy array (CPU) or a torch CUDA tensor, cached per (seed, n, device)."""
        key = (spec.seed, int(spec.params["n"]), device)
        w = self._weights.get(key)
        if w is None:
            if len(self._weights) >= _CACHE_ENTRIES:
                self._weights.clear()
            host = self._init_arrays(spec)[1]
            w = host if device == "cpu" else torch.from_numpy(host.copy()).to(device)
            self._weights[key] = w
        return w

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        return {"x": torch.from_numpy(self._init_arrays(spec)[0].copy()).to(device)}

    def schema(self, spec: JobSpec) -> Schema:
        n = int(spec.params["n"])
        return {"x": ("float32", (n, n))}

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        if device.startswith("cuda"):
            return {"x": self._step_cuda(state["x"], spec, device)}
        x = np.ascontiguousarray(as_numpy(state["x"]), dtype=np.float32)
        out = gemm_f32_ordered(_softsign_cpu(x), self.weights(spec))
        return {"x": torch.from_numpy(out)}

    def _step_cuda(self, x: Tensor, spec: JobSpec, device: str) -> torch.Tensor:
        from pocv.kernels import _cuda  # numba.cuda loads only when a step runs on a GPU

        xt = as_torch(x, device).contiguous()
        if xt.device.type != "cuda":  # pragma: no cover - as_torch moved it
            xt = xt.to(device)
        w = self.weights(spec, device)
        out = torch.empty_like(xt)
        with torch.cuda.device(xt.device):
            _cuda.gemm_softsign(xt, w, out)
            torch.cuda.synchronize(xt.device)
        return out

    def reference_step(self, state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
        """The definition (numpy float32, one rank-1 update per k); slow: for tests and disputes."""
        x = as_numpy(state["x"])
        return {"x": torch.from_numpy(gemm_f32_reference(softsign_reference(x), self._init_arrays(spec)[1]))}

    def honest_variants(self) -> dict[str, Any]:
        """Implementations that must agree bit for bit (used by calibrate and the tests)."""
        return numba_thread_variants(self.step, self.reference_step)
