"""``gemm-int8``: an exact chain of int8 matrix products with integer requantization.

State: ``{"x": int8[n, n]}``. A fixed weight matrix ``W`` (int8[n, n]) and ``s_0`` come from
BLAKE3's XOF keyed by the seed and ``n``, so anyone re-derives them. Step ``i``::

    acc  = x.int32 @ W.int32                      (exact int32 accumulation, K = n)
    y    = ((acc + 2^(shift-1)) >> shift) + (i mod 251)      shift = 6 + floor(log2 n) // 2
    x'   = y mod 256, as two's-complement int8

Integer arithmetic has one answer in any order, so every backend (torch ``_int_mm`` on CPU or
CUDA, the int64 numpy reference) gives the same bits at any thread count. ``int8 @ int8`` in
torch or numpy returns int8 and wraps, which is why the products are formed in int32.
|acc| <= n * 127 * 128 stays below 2^31 for n <= 131,072; the parameter is capped far below.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from kernels import register
from kernels._util import as_numpy, as_torch, seeded_bytes
from kernels.base import Kernel, Schema
from verifier.encoding import State, Tensor
from verifier.jobs import JobSpec

_CONTEXT = "pocv 2026-11 gemm-int8 v1 init"
MAX_N = 4096  # far below the int32 overflow bound of K = 131,072


def _shift(n: int) -> int:
    return 6 + int(math.log2(n)) // 2


@register
class GemmInt8(Kernel):
    name: ClassVar[str] = "gemm-int8"
    version: ClassVar[int] = 1
    mode = "exact"
    summary: ClassVar[str] = "x <- requant(x @ W): int8 x int8 -> int32 products, exact on any device"
    int_params: ClassVar[dict[str, tuple[int, int, int]]] = {"n": (2048, 16, MAX_N)}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self) -> None:
        self._weights: dict[tuple[int, int, str], torch.Tensor] = {}

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().check_params(params)
        if out["n"] % 8:
            from verifier.errors import SpecError

            raise SpecError(f"gemm-int8 parameter 'n' must be a multiple of 8, got {out['n']}")
        return out

    def _init_bytes(self, spec: JobSpec) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        n = int(spec.params["n"])
        raw = np.frombuffer(seeded_bytes(_CONTEXT, spec.seed, n, length=2 * n * n), dtype=np.int8)
        return raw[: n * n].reshape(n, n), raw[n * n :].reshape(n, n)

    def weights(self, spec: JobSpec, device: str = "cpu") -> torch.Tensor:
        key = (spec.seed, int(spec.params["n"]), device)
        w = self._weights.get(key)
        if w is None:
            if len(self._weights) >= 8:
                self._weights.clear()
            w = torch.from_numpy(self._init_bytes(spec)[1].copy()).to(device)
            self._weights[key] = w
        return w

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        return {"x": torch.from_numpy(self._init_bytes(spec)[0].copy()).to(device)}

    def schema(self, spec: JobSpec) -> Schema:
        n = int(spec.params["n"])
        return {"x": ("int8", (n, n))}

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        x = as_torch(state["x"], device)
        acc = torch._int_mm(x, self.weights(spec, device))
        s = _shift(x.shape[0])
        # ((acc + 2^(s-1)) >> s) + (i mod 251) == (acc + 2^(s-1) + (i mod 251) * 2^s) >> s exactly
        # (arithmetic shift is floor division); in place, to spare passes over the int32 buffer.
        acc.add_((1 << (s - 1)) + ((i % 251) << s))
        acc.bitwise_right_shift_(s)
        acc.bitwise_and_(0xFF)
        return {"x": acc.to(torch.uint8).view(torch.int8)}

    def honest_variants(self) -> dict[str, Any]:
        """Implementations that must agree bit for bit (used by ``pocv calibrate`` and the tests)."""

        def threads(n: int) -> Any:
            def fn(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
                old = torch.get_num_threads()
                torch.set_num_threads(n)
                try:
                    return self.step(state, i, spec)
                finally:
                    torch.set_num_threads(old)
            return fn

        return {"int_mm-2threads": threads(2), "int_mm-1thread": threads(1), "numpy-int64": self.reference_step}

    def reference_step(self, state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
        """The definition: numpy with int64 accumulation, no BLAS."""
        x = as_numpy(state["x"]).astype(np.int64)
        w = self._init_bytes(spec)[1].astype(np.int64)
        acc = x @ w
        s = _shift(x.shape[0])
        y = ((acc + (1 << (s - 1))) >> s) + (i % 251)
        return {"x": (y & 0xFF).astype(np.uint8).view(np.int8)}
