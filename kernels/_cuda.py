"""numba-cuda kernels of the exact kernels (imported only for a CUDA device or a test).

Every float operation is an explicitly rounded libdevice call (``fmul_rn``, ``fadd_rn``,
``fdiv_rn``): NVVM contracts a plain ``acc += a * b`` into ``fma.rn.f32`` even with
``fastmath=False`` (docs/protocol.md §3), which would differ from the CPU reference in the last
bit. ``tests/kernels/test_cuda_ptx.py`` compiles these kernels to PTX (no GPU needed) and asserts
no ``fma``, ``.ftz`` or ``.approx`` instruction appears and every f32 add/mul/div carries ``.rn``.

Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) libdevice has no implementation, so the same
kernels run with numpy float32 scalar operations (each correctly rounded, no FMA): the simulator
checks the kernels' indexing, tiling and reduction order against the CPU reference bit for bit;
the PTX test checks the arithmetic the real GPU executes.
"""

from __future__ import annotations

from typing import Any, Final

import numba.cuda
import numpy as np
from numba import config as _config
from numba import float32

cuda: Any = numba.cuda  # numba's CUDA namespace is untyped; say so once
SIM: Final = bool(getattr(_config, "ENABLE_CUDASIM", 0))
TILE: Final = 16  # gemm tile edge (threads per block: TILE x TILE)
STENCIL_BLOCK: Final = (16, 16)

if SIM:

    def fadd(a: Any, b: Any) -> Any:
        return np.float32(a) + np.float32(b)

    def fmul(a: Any, b: Any) -> Any:
        return np.float32(a) * np.float32(b)

    def fdiv(a: Any, b: Any) -> Any:
        return np.float32(a) / np.float32(b)

else:  # pragma: no cover - compiled by NVVM (PTX test) or run on a GPU
    from numba.cuda import libdevice

    fadd = libdevice.fadd_rn
    fmul = libdevice.fmul_rn
    fdiv = libdevice.fdiv_rn


def gemm_softsign_kernel(x: Any, w: Any, out: Any) -> None:
    """``out = (x / (1 + |x|)) @ w``, each output accumulated over k = 0..K-1 in order.

    Tiled through shared memory; the tiles only change where operands are read from, not the
    order in which each ``out[i, j]`` adds its products. Padding is never added (the inner loop
    stops at K), so -0/+0 behave as in the reference.
    """
    sx = cuda.shared.array((TILE, TILE), float32)
    sw = cuda.shared.array((TILE, TILE), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    n = x.shape[0]
    kd = x.shape[1]
    m = w.shape[1]
    acc = float32(0)
    for t in range((kd + TILE - 1) // TILE):
        k0 = t * TILE
        if row < n and k0 + tx < kd:
            v = x[row, k0 + tx]
            sx[ty, tx] = fdiv(v, fadd(float32(1), abs(v)))
        else:
            sx[ty, tx] = float32(0)
        if col < m and k0 + ty < kd:
            sw[ty, tx] = w[k0 + ty, col]
        else:
            sw[ty, tx] = float32(0)
        cuda.syncthreads()
        kmax = min(TILE, kd - k0)
        for kk in range(kmax):
            acc = fadd(acc, fmul(sx[ty, kk], sw[kk, tx]))
        cuda.syncthreads()
    if row < n and col < m:
        out[row, col] = acc


def heat_kernel(u: Any, out: Any, alpha: Any) -> None:
    """One explicit heat step on the interior; the boundary is copied (held at its value).

    ``out = u + alpha * (((n + s) + (w + e)) - 4u)`` in exactly this order.
    """
    i, j = cuda.grid(2)
    n = u.shape[0]
    m = u.shape[1]
    if i >= n or j >= m:
        return
    c = u[i, j]
    if i == 0 or j == 0 or i == n - 1 or j == m - 1:
        out[i, j] = c
        return
    ns = fadd(u[i - 1, j], u[i + 1, j])
    we = fadd(u[i, j - 1], u[i, j + 1])
    lap = fadd(fadd(ns, we), -fmul(float32(4), c))
    out[i, j] = fadd(c, fmul(alpha, lap))


_JITTED: dict[str, Any] = {}


def jitted(name: str) -> Any:
    """The cuda.jit-compiled kernel ``name`` (compiled once per process)."""
    k = _JITTED.get(name)
    if k is None:
        fn = {"gemm_softsign": gemm_softsign_kernel, "heat": heat_kernel}[name]
        k = cuda.jit(fastmath=False)(fn)
        _JITTED[name] = k
    return k


def gemm_softsign(x: Any, w: Any, out: Any) -> None:
    """Launch :func:`gemm_softsign_kernel` on device arrays (anything with the CUDA array interface)."""
    n, m = out.shape
    grid = ((m + TILE - 1) // TILE, (n + TILE - 1) // TILE)
    jitted("gemm_softsign")[grid, (TILE, TILE)](x, w, out)


def heat(u: Any, out: Any, alpha: float) -> None:
    n, m = u.shape
    bx, by = STENCIL_BLOCK
    grid = ((n + bx - 1) // bx, (m + by - 1) // by)
    jitted("heat")[grid, STENCIL_BLOCK](u, out, np.float32(alpha))
