"""``heat2d``: an explicit 2-D heat-equation stencil in float32 with a canonical order, exact mode.

State: ``{"u": float32[n, n]}``. ``s_0`` is a seeded field on an exact dyadic grid in [0, 1).
Step ``i`` runs ``substeps`` stencil sweeps, then drops one unit of heat on a seeded cell::

    u'_ij = u_ij + alpha * (((u_i-1,j + u_i+1,j) + (u_i,j-1 + u_i,j+1)) - 4 u_ij)    interior
    u'_ij = u_ij                                                                       boundary
    after the sweeps: u[r_i, c_i] += 1,  (r_i, c_i) = 1 + (BLAKE3-XOF(seed, n, i) mod (n - 2))

with ``alpha = 1/8`` (stable for alpha <= 1/4). Multiplying by 4 and by 1/8 is exact (powers of
two; subnormals aside, which both backends keep), every add is rounded to float32 on its own in
the written order, no FMA: numba on the CPU (``fastmath=False``, any thread count and CPU target)
and numba-cuda on the GPU (``fadd_rn``/``fmul_rn``) give the same bits. Only +, - and x are used
(no transcendental), so nothing depends on a math library.

:meth:`Heat2d.reference_step` (numpy float32 slices, the same expression) is the definition.
``substeps`` lets a step carry enough work that hashing the state is a small fraction of it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import numpy as np
import torch
from numba import njit, prange

from pocv.encoding import State, Tensor
from pocv.jobs import JobSpec
from pocv.kernels import register
from pocv.kernels._util import as_numpy, as_torch, numba_thread_variants, seeded_bytes
from pocv.kernels.base import Kernel, Schema

_INIT_CONTEXT: Final = "pocv 2026-11 heat2d v1 init"
_PULSE_CONTEXT: Final = "pocv 2026-11 heat2d v1 pulse"
ALPHA: Final = 0.125
MAX_N: Final = 8192  # 256 MiB state
MAX_SUBSTEPS: Final = 1024


@njit(parallel=True, fastmath=False, boundscheck=False, cache=True, nogil=True)
def _heat_cpu(u: Any, steps: int, alpha: Any) -> Any:  # pragma: no cover - compiled
    n, m = u.shape
    a = u.copy()
    b = np.empty_like(u)
    four = np.float32(4)
    for _ in range(steps):
        for i in prange(n):
            if i == 0 or i == n - 1:
                for j in range(m):
                    b[i, j] = a[i, j]
                continue
            b[i, 0] = a[i, 0]
            b[i, m - 1] = a[i, m - 1]
            for j in range(1, m - 1):
                c = a[i, j]
                b[i, j] = c + alpha * (((a[i - 1, j] + a[i + 1, j]) + (a[i, j - 1] + a[i, j + 1])) - four * c)
        a, b = b, a
    return a


def heat_reference(u: np.ndarray[Any, Any], steps: int, alpha: float = ALPHA) -> np.ndarray[Any, Any]:
    """The definition: numpy float32 slices, the same expression and order."""
    a = np.array(u, dtype=np.float32, copy=True)
    al, four = np.float32(alpha), np.float32(4)
    for _ in range(steps):
        b = a.copy()
        c = a[1:-1, 1:-1]
        ns = a[:-2, 1:-1] + a[2:, 1:-1]
        we = a[1:-1, :-2] + a[1:-1, 2:]
        b[1:-1, 1:-1] = c + al * ((ns + we) - four * c)
        a = b
    return a


@register
class Heat2d(Kernel):
    name: ClassVar[str] = "heat2d"
    pure_step = True  # returns new tensors, never touches its input (tests/test_commit_pipeline.py)
    version: ClassVar[int] = 1
    mode = "exact"
    summary: ClassVar[str] = "explicit float32 heat stencil with seeded heat pulses, same bits on CPU and GPU"
    int_params: ClassVar[dict[str, tuple[int, int, int]]] = {
        "n": (512, 3, MAX_N),
        "substeps": (256, 1, MAX_SUBSTEPS),
    }
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        n = int(spec.params["n"])
        raw = np.frombuffer(seeded_bytes(_INIT_CONTEXT, spec.seed, n, length=2 * n * n), "<u2")
        u = (raw.astype(np.float32) * np.float32(2.0**-16)).reshape(n, n)
        return {"u": torch.from_numpy(u.copy()).to(device)}

    def schema(self, spec: JobSpec) -> Schema:
        n = int(spec.params["n"])
        return {"u": ("float32", (n, n))}

    def pulse(self, spec: JobSpec, i: int) -> tuple[int, int]:
        n = int(spec.params["n"])
        r, c = np.frombuffer(seeded_bytes(_PULSE_CONTEXT, spec.seed, n, i, length=16), "<u8")
        return 1 + int(r) % (n - 2), 1 + int(c) % (n - 2)

    def _add_pulse(self, u: Any, spec: JobSpec, i: int) -> None:
        if int(spec.params["n"]) > 2:
            r, c = self.pulse(spec, i)
            u[r, c] = u[r, c] + 1  # float32 + 1 -> float32 (numpy and torch alike)

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        steps = int(spec.params["substeps"])
        if device.startswith("cuda"):
            return {"u": self._step_cuda(state["u"], i, spec, device)}
        u = np.ascontiguousarray(as_numpy(state["u"]), dtype=np.float32)
        out = _heat_cpu(u, steps, np.float32(ALPHA))
        self._add_pulse(out, spec, i)
        return {"u": torch.from_numpy(out)}

    def _step_cuda(self, u: Tensor, i: int, spec: JobSpec, device: str) -> torch.Tensor:
        from pocv.kernels import _cuda  # numba.cuda loads only when a step runs on a GPU

        a = as_torch(u, device).contiguous().clone()
        b = torch.empty_like(a)
        with torch.cuda.device(a.device):
            for _ in range(int(spec.params["substeps"])):
                _cuda.heat(a, b, ALPHA)
                a, b = b, a
            torch.cuda.synchronize(a.device)
        self._add_pulse(a, spec, i)
        return a

    def reference_step(self, state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
        """The definition: numpy float32 (see :func:`heat_reference`)."""
        out = heat_reference(as_numpy(state["u"]), int(spec.params["substeps"]))
        self._add_pulse(out, spec, i)
        return {"u": torch.from_numpy(out)}

    def honest_variants(self) -> dict[str, Any]:
        """Implementations that must agree bit for bit (used by calibrate and the tests)."""
        return numba_thread_variants(self.step, self.reference_step)
