"""``gemm-int8``: an exact chain of int8 matrix products with integer requantization.

State: ``{"x": int8[n, n]}``. ``s_0`` and ``L`` fixed weight matrices ``W_0 .. W_{L-1}``
(int8[n, n]; ``L`` = the ``layers`` parameter) come from BLAKE3's XOF keyed by the seed, ``n``
and ``L``, so anyone re-derives them. Step ``i`` is a forward pass through the L layers; layer
``l`` computes::

    acc  = x.int32 @ W_l.int32                    (exact int32 accumulation, K = n)
    y    = ((acc + 2^(shift-1)) >> shift) + ((i * L + l) mod 251)   shift = 6 + floor(log2 n) // 2
    x    = y mod 256, as two's-complement int8

Only the output of the last layer is the next state, so the work per step (L n^3 multiply-adds)
grows with L while the committed state (n^2 bytes) does not: at the defaults (n = 2048, L = 4)
hashing the 4 MiB state costs under 1% of the step.

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

from pocv.encoding import State, Tensor
from pocv.errors import SpecError
from pocv.jobs import JobSpec
from pocv.kernels import register
from pocv.kernels._util import as_numpy, as_torch, seeded_bytes
from pocv.kernels.base import Kernel, Schema

_CONTEXT = "pocv 2026-11 gemm-int8 v1 init"
MAX_LAYERS = 64
MAX_N = 4096  # far below the int32 overflow bound of K = 131,072


def _shift(n: int) -> int:
    return 6 + int(math.log2(n)) // 2


@register
class GemmInt8(Kernel):
    name: ClassVar[str] = "gemm-int8"
    pure_step = True  # returns new tensors, never touches its input (tests/test_commit_pipeline.py)
    version: ClassVar[int] = 1
    mode = "exact"
    summary: ClassVar[str] = "x <- requant(x @ W): int8 x int8 -> int32 products, exact on any device"
    int_params: ClassVar[dict[str, tuple[int, int, int]]] = {"n": (2048, 16, MAX_N), "layers": (4, 1, MAX_LAYERS)}
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self) -> None:
        self._weights: dict[tuple[int, int, int, str], list[torch.Tensor]] = {}

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().check_params(params)
        if out["n"] % 8:
            raise SpecError(f"gemm-int8 parameter 'n' must be a multiple of 8, got {out['n']}")
        return out

    def _init_bytes(self, spec: JobSpec) -> tuple[np.ndarray[Any, Any], list[np.ndarray[Any, Any]]]:
        n, layers = int(spec.params["n"]), int(spec.params["layers"])
        raw = np.frombuffer(seeded_bytes(_CONTEXT, spec.seed, n, layers, length=(1 + layers) * n * n),
                            dtype=np.int8).reshape(1 + layers, n, n)
        return raw[0], [raw[1 + layer] for layer in range(layers)]

    def weights(self, spec: JobSpec, device: str = "cpu") -> list[torch.Tensor]:
        key = (spec.seed, int(spec.params["n"]), int(spec.params["layers"]), device)
        w = self._weights.get(key)
        if w is None:
            if len(self._weights) >= 8:
                self._weights.clear()
            w = [torch.from_numpy(m.copy()).to(device) for m in self._init_bytes(spec)[1]]
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
        s = _shift(x.shape[0])
        weights = self.weights(spec, device)
        for layer, w in enumerate(weights):
            acc = torch._int_mm(x, w)
            # ((acc + 2^(s-1)) >> s) + c == (acc + 2^(s-1) + c * 2^s) >> s exactly (arithmetic shift
            # is floor division); in place, to spare passes over the int32 buffer.
            acc.add_((1 << (s - 1)) + (((i * len(weights) + layer) % 251) << s))
            acc.bitwise_right_shift_(s)
            acc.bitwise_and_(0xFF)
            x = acc.to(torch.uint8).view(torch.int8)
        return {"x": x}

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
        s = _shift(x.shape[0])
        weights = self._init_bytes(spec)[1]
        for layer, w in enumerate(weights):
            acc = x @ w.astype(np.int64)
            y = ((acc + (1 << (s - 1))) >> s) + ((i * len(weights) + layer) % 251)
            x = (y & 0xFF).astype(np.uint8).view(np.int8).astype(np.int64)
        return {"x": x.astype(np.int8)}
