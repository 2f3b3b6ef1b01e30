"""``gemm-fp32``: a float32 matrix-product chain on vendor BLAS, tolerance mode, Freivalds-checked.

State: ``{"x": float32[n, n]}``; ``s_0`` and the fixed weights ``W`` are seeded exact dyadic grids
(as in ``gemm-fp32-exact``, under another context). Step ``i``::

    a = x / (1 + |x|)          (softsign, float32, elementwise: IEEE add and divide)
    x' = a @ W                 (float32 matmul in any order: MKL, OpenBLAS, cuBLAS without TF32)

Bound (per element, see :mod:`pocv.kernels._tolerance`)::

    |x'_ij - e_ij| <= tau * u * s_j + floor,     s_j = sum_k |W_kj|

``s_j`` bounds the classical ``(|a| |W|)_ij`` from above because ``|a| < 1``; it depends on the spec
only, so the bound cannot be widened by the claimed state.

Freivalds check (:meth:`GemmFp32.verify_step`, O(n^2)): draw ``t`` Rademacher vectors
``r_1..r_t`` (+-1, from the verifier's OS randomness, never sent anywhere; one draw serves at
most ``FREIVALDS_REUSE`` checks of a job) and test, per row i::

    |(x' r)_i - (a (W r))_i| <= tau_F * u * ||s||_2 + floor        (float64 arithmetic)

Under the elementwise error model honest errors are independent of r, so ``(e r)_i`` is a
Rademacher sum of size ~ ||e_i||_2 <= ||tau u s||_2; a row with one element off by D gives
exactly D for every r, and a row error that may cancel is caught with probability >= 1/2 per
vector. ``tau_F`` is calibrated on its own (the honest statistic is far below the worst-case
elementwise bound). The check reads ``x'`` and ``x`` once each (``W r`` is reused while ``r``
is): about 2 t n^2 float64 multiply-adds instead of 2 n^3 flops; at n = 1024 (the default) it took
0.5 ms warm / 0.9-1.1 ms cold against 17-23 ms to recompute and compare (``bench/test_bench_kernels.py``).
A single element off by less than ``tau_F u ||s||_2`` (about sqrt(n) times the elementwise
bound) passes Freivalds where a recompute would catch it; :meth:`verify_step_recompute` is the
full check.

Calibration: ``python -m pocv.kernels.calibrate gemm-fp32 --trials 40 --param n=512`` (and ``n=64``,
``n=2048 --trials 5``; the default n is 1024, between the measured sizes).
Honest variants: torch/MKL at 2 and 1 threads, einsum, transposed product, numpy/OpenBLAS, the
numba fixed-order product, a float64 reference; every ordered pair compared elementwise, every
variant Freivalds-checked. Measured 2026-11-25 on a 2-core AMD EPYC, torch 2.13 CPU::

    n     trials  elements  p50    p90   p99   p99.9  p99.99  max   | downgrade min needed tau
    512   40      440 M     0.027  0.12  0.26  0.46   0.68    1.49  | tf32 294  fp16 413  bf16 3,410
    64    40      6.9 M     0      0.14  0.39  0.62   0.92    1.63  | tf32 726  fp16 1,190 bf16 8,440
    2048  5       881 M     0.016  0.09  0.25  0.44   0.65    1.40  | tf32 166  fp16 243  bf16 2,090

    Freivalds (needed tau_F): honest max 0.48 / 0.85 / 0.42; downgrades at least
    tf32 207 / 521 / 129, fp16 248 / 670 / 142, bf16 2,060 / 5,490 / 1,180   (n = 512 / 64 / 2048)

0 false FAILs in 3,570 elementwise and 595 Freivalds honest checks; every downgrade caught.
Chosen ``tau = 16`` (10x the largest honest ratio, 10x below the smallest downgrade; the TF32
margin shrinks like 1/sqrt(n), hence ``MAX_N = 4096``) and ``tau_F = 8`` (9x above honest, 16x
below the smallest downgrade). Not measured here: cuBLAS (the ``gpu`` tests check it).
"""

from __future__ import annotations

import math
import secrets
from typing import Any, ClassVar, Final

import numpy as np
import torch
from numba import njit, prange

from pocv.encoding import State, Tensor, dtype_name
from pocv.jobs import JobSpec
from pocv.kernels import register
from pocv.kernels._tolerance import U32, StepFn, ToleranceKernel, round_tf32, torch_threads
from pocv.kernels._util import as_numpy, as_torch, strict_fp32
from pocv.kernels.base import Comparison, Schema

_CONTEXT: Final = "pocv 2026-11 gemm-fp32 v1 init"
MAX_N: Final = 4096
TAU: Final = 16.0
TAU_FREIVALDS: Final = 8.0
FLOOR: Final = 2.0**-100
FREIVALDS_VECTORS: Final = 4  # per check; P(miss a cancelling row error) <= 2^-4 per row
#: checks of one job that share one draw of r (the worker never sees r; the verifier saves
#: recomputing W r, a third of the check's cost); then r is drawn afresh
FREIVALDS_REUSE: Final = 16
_CACHE_ENTRIES: Final = 8


@njit(parallel=True, fastmath={"reassoc", "nsz"}, boundscheck=False, cache=True, nogil=True)
def _rows_dot(m: Any, r: Any) -> Any:  # pragma: no cover - compiled
    """``m @ r.T`` for float32 m[n, k] and float64 r[t, k], accumulated in float64.

    ``reassoc`` lets the float64 sums vectorize (their rounding, ~2^-53 relative, is far below
    the bound); no ``arcp``/``contract`` flags, so nothing else changes.
    """
    n, k = m.shape
    t = r.shape[0]
    out = np.zeros((n, t), np.float64)
    for i in prange(n):
        row = m[i]
        for q in range(t):
            rq = r[q]
            acc = 0.0
            for j in range(k):
                acc += np.float64(row[j]) * rq[j]
            out[i, q] = acc
    return out


@njit(parallel=True, fastmath={"reassoc", "nsz"}, boundscheck=False, cache=True, nogil=True)
def _softsign_rows_dot(x: Any, v: Any) -> Any:  # pragma: no cover - compiled
    """``softsign(x) @ v.T`` with softsign in float32 (IEEE add and divide, as the worker) and
    the dot products in float64; x float32[n, k], v float64[t, k]."""
    n, k = x.shape
    t = v.shape[0]
    out = np.zeros((n, t), np.float64)
    one = np.float32(1)
    for i in prange(n):
        row = x[i]
        a = np.empty(k, np.float64)
        for j in range(k):
            e = row[j]
            a[j] = np.float64(e / (one + abs(e)))
        for q in range(t):
            vq = v[q]
            acc = 0.0
            for j in range(k):
                acc += a[j] * vq[j]
            out[i, q] = acc
    return out


@njit(parallel=True, fastmath={"reassoc", "nsz"}, boundscheck=False, cache=True, nogil=True)
def _freivalds4_maxdiff(c: Any, x: Any, r: Any, v: Any) -> float:  # pragma: no cover - compiled
    """``max_{i,q} |(c r_q)_i - (softsign(x) v_q)_i|`` for exactly 4 vectors, in one pass over the rows.

    The same sums as :func:`_rows_dot` and :func:`_softsign_rows_dot` (float32 entries, float64
    products and sums, softsign in float32), with the 4 dot products of a row accumulated side by
    side so each matrix row is read once: measured 30% faster than the two calls at 1024^3. Any NaN
    or infinity in a row's sums gives ``inf`` (never dropped by the max).
    """
    n, k = c.shape
    out = np.zeros(n, np.float64)
    one = np.float32(1)
    r0, r1, r2, r3 = r[0], r[1], r[2], r[3]
    v0, v1, v2, v3 = v[0], v[1], v[2], v[3]
    for i in prange(n):
        crow = c[i]
        xrow = x[i]
        a0 = a1 = a2 = a3 = 0.0
        for j in range(k):
            e = np.float64(crow[j])
            a0 += e * r0[j]
            a1 += e * r1[j]
            a2 += e * r2[j]
            a3 += e * r3[j]
        b0 = b1 = b2 = b3 = 0.0
        for j in range(k):
            xe = xrow[j]
            a = np.float64(xe / (one + abs(xe)))
            b0 += a * v0[j]
            b1 += a * v1[j]
            b2 += a * v2[j]
            b3 += a * v3[j]
        d0, d1, d2, d3 = abs(a0 - b0), abs(a1 - b1), abs(a2 - b2), abs(a3 - b3)
        if d0 + d1 + d2 + d3 < np.inf:
            out[i] = max(max(d0, d1), max(d2, d3))
        else:  # NaN or infinity: comparisons would drop a NaN
            out[i] = np.inf
    return float(out.max())


def _softsign(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + x.abs())


@register
class GemmFp32(ToleranceKernel):
    name: ClassVar[str] = "gemm-fp32"
    pure_step = True  # returns new tensors, never touches its input (tests/test_commit_pipeline.py)
    chunk_sampling = True  # Freivalds checks compare()'s rule: a chunk sample is judged by compare itself
    version: ClassVar[int] = 1
    summary: ClassVar[str] = "x <- softsign(x) @ W on vendor float32 BLAS; tolerance bound, Freivalds check"
    int_params: ClassVar[dict[str, tuple[int, int, int]]] = {"n": (1024, 2, MAX_N)}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    tau: ClassVar[float] = TAU
    floor: ClassVar[float] = FLOOR
    tau_freivalds: ClassVar[float] = TAU_FREIVALDS
    freivalds_vectors: ClassVar[int] = FREIVALDS_VECTORS
    freivalds_reuse: ClassVar[int] = FREIVALDS_REUSE

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, str], Any] = {}
        self._vectors: dict[tuple[bytes, int], list[Any]] = {}

    # -- data -----------------------------------------------------------------------------------

    def _init_arrays(self, spec: JobSpec) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        from pocv.kernels.gemm_fp32_exact import chain_init  # its numba kernels compile on import: load on use

        return chain_init(_CONTEXT, spec)

    def _cached(self, spec: JobSpec, what: str) -> Any:
        key = (spec.seed, int(spec.params["n"]), what)
        v = self._cache.get(key)
        if v is None:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            w = self._init_arrays(spec)[1]
            if what == "w":
                v = torch.from_numpy(w.copy())
            elif what == "w32":  # W as a contiguous float32 numpy array, for _rows_dot
                v = np.ascontiguousarray(w)
            elif what == "colsum":
                v = np.abs(w.astype(np.float64)).sum(axis=0)
            else:  # a device name
                v = torch.from_numpy(w.copy()).to(what)
            self._cache[key] = v
        return v

    def weights(self, spec: JobSpec, device: str = "cpu") -> torch.Tensor:
        w: torch.Tensor = self._cached(spec, "w" if device == "cpu" else device)
        return w

    # -- kernel interface -----------------------------------------------------------------------

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        return {"x": torch.from_numpy(self._init_arrays(spec)[0].copy()).to(device)}

    def schema(self, spec: JobSpec) -> Schema:
        n = int(spec.params["n"])
        return {"x": ("float32", (n, n))}

    def _run(self, state: State, spec: JobSpec, device: str, mm: Any = None) -> dict[str, Tensor]:
        x = as_torch(state["x"], device)
        a = _softsign(x)
        w = self.weights(spec, device)
        return {"x": (mm or torch.matmul)(a, w)}

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        if device.startswith("cuda"):
            with strict_fp32():
                return self._run(state, spec, device)
        return self._run(state, spec, device)

    def reference_step(self, state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
        """The definition: softsign in float32 (IEEE), the product in float64, rounded once."""
        a = _softsign(as_torch(state["x"])).double()
        return {"x": (a @ self.weights(spec).double()).float()}

    # -- tolerance ------------------------------------------------------------------------------

    def scales(self, expected: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        n = int(spec.params["n"])
        return {"x": np.broadcast_to(self._cached(spec, "colsum"), (n, n))}

    def freivalds_ratio(
        self, prev: State, claimed: State, spec: JobSpec, vectors: int | None = None
    ) -> float:
        """max over rows and vectors of |(x' r)_i - (a W r)_i| / (tau_F u ||s||_2 + floor)."""
        r, wr_t = self._freivalds_vectors(spec, vectors or self.freivalds_vectors)
        c = np.ascontiguousarray(as_numpy(claimed["x"]), np.float32)
        x = np.ascontiguousarray(as_numpy(prev["x"]), np.float32)
        if r.shape[0] == 4:  # the default: one fused pass
            diff = _freivalds4_maxdiff(c, x, r, wr_t)
        else:
            diff = float(np.abs(_rows_dot(c, r) - _softsign_rows_dot(x, wr_t)).max())
        s2 = math.sqrt(float(np.square(self._cached(spec, "colsum")).sum()))
        bound = self.tau_freivalds * U32 * s2 + self.floor
        return diff / bound

    def _freivalds_vectors(self, spec: JobSpec, t: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """(r float64[t, n] of +-1, (W r)^T float64[t, n]): fresh OS randomness, never shared
        between jobs (the cache is keyed by the job id) and reused for at most
        ``freivalds_reuse`` checks of the same job, so W r is not recomputed for every step of
        one verification. The vectors never leave this process: no record or message holds
        them or anything computed from them."""
        n = int(spec.params["n"])
        key = (spec.job_id, t)
        entry = self._vectors.get(key)
        if entry is None or entry[2] >= self.freivalds_reuse:
            bits = np.frombuffer(secrets.token_bytes(t * n), np.uint8) & 1
            r = (bits.astype(np.float64) * 2 - 1).reshape(t, n)
            wr_t = np.ascontiguousarray(_rows_dot(self._cached(spec, "w32"), r).T)  # (W r_q)_k
            if len(self._vectors) >= _CACHE_ENTRIES:
                self._vectors.clear()
            entry = [r, wr_t, 0]
            self._vectors[key] = entry
        entry[2] += 1
        return entry[0], entry[1]

    def verify_step(
        self, prev: State, claimed: State, i: int, spec: JobSpec, device: str = "cpu"
    ) -> Comparison:
        """Freivalds' check in O(n^2) (see the module docstring); never recomputes the product."""
        why = self.check_schemas(prev, claimed, spec)
        if why is not None:
            return Comparison(False, why)
        if dtype_name(claimed["x"]) != "float32":  # pragma: no cover - schema checked it
            return Comparison(False, "claimed state is not float32")
        ratio = self.freivalds_ratio(prev, claimed, spec)
        if not math.isfinite(ratio):  # a NaN or infinity anywhere in x' reaches x' r (r = +-1)
            return Comparison(False, "tensor 'x' holds NaN or infinity", worst_ratio=math.inf)
        if not ratio <= 1.0:
            # the ratio depends on the secret vectors: it stays out of the detail (and the verdict)
            return Comparison(False, f"Freivalds check: x' r differs from a (W r) beyond the bound "
                                     f"(tau_F={self.tau_freivalds:g}) for a random r", worst_ratio=ratio)
        return Comparison(True, worst_ratio=ratio)

    def verify_step_recompute(
        self, prev: State, claimed: State, i: int, spec: JobSpec, device: str = "cpu"
    ) -> Comparison:
        """The full check: recompute the step and apply the elementwise bound."""
        return self.compare(self.step(prev, i, spec, device), claimed, spec)

    # -- calibration hooks ----------------------------------------------------------------------

    def honest_variants(self) -> dict[str, StepFn]:
        from pocv.kernels.gemm_fp32_exact import gemm_f32_ordered  # compiles numba on import: calibration only

        def torch_mm(threads: int | None, mm: Any = None) -> StepFn:
            def fn(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
                with torch_threads(threads):
                    return self._run(state, spec, "cpu", mm)
            return fn

        def numpy_mm(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
            a = _softsign(as_torch(state["x"])).numpy()
            return {"x": torch.from_numpy(a @ self.weights(spec).numpy())}

        def numba_ordered(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
            a = _softsign(as_torch(state["x"])).numpy()
            return {"x": torch.from_numpy(gemm_f32_ordered(a, self.weights(spec).numpy()))}

        return {
            "torch-2threads": torch_mm(2),
            "torch-1thread": torch_mm(1),
            "einsum": torch_mm(None, lambda a, b: torch.einsum("ik,kj->ij", a, b)),
            "transposed": torch_mm(None, lambda a, b: (b.t().contiguous() @ a.t().contiguous()).t()),
            "numpy-openblas": numpy_mm,
            "numba-sequential": numba_ordered,
            "reference-f64": self.reference_step,
        }

    def downgrade_variants(self) -> dict[str, StepFn]:
        def variant(mm: Any) -> StepFn:
            return lambda s, i, spec: self._run(s, spec, "cpu", mm)

        return {
            "tf32": variant(lambda a, b: round_tf32(a) @ round_tf32(b)),
            "bf16": variant(lambda a, b: (a.bfloat16() @ b.bfloat16()).float()),
            "fp16": variant(lambda a, b: (a.half() @ b.half()).float()),
        }
