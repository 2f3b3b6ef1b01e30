"""Small helpers shared by kernels: seeded bytes, tensor conversion, device choice."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from blake3 import blake3

from pocv.encoding import Tensor


def seeded_bytes(context: str, *fields: int, length: int) -> bytes:
    """``length`` pseudo-random bytes from BLAKE3's XOF keyed by ``context`` and integer fields.

    Portable by construction (no library RNG whose stream could change between versions).
    """
    material = struct.pack(f"<{len(fields)}q", *fields)
    return bytes(blake3(material, derive_key_context=context).digest(length=length))


def as_torch(t: Tensor, device: str = "cpu") -> torch.Tensor:
    out = t if isinstance(t, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(t))
    return out.to(device) if out.device.type != torch.device(device).type else out


def as_numpy(t: Tensor) -> np.ndarray[Any, Any]:
    if isinstance(t, np.ndarray):
        return t
    return t.detach().cpu().numpy()


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Run the block with every float32 shortcut of torch's CUDA backend off, then restore.

    TF32 tensor-core products (matmul and cuDNN) and reduced-precision fp16/bf16 reductions
    would change a float32 kernel's result far beyond its tolerance bound.
    """
    cm = torch.backends.cuda.matmul
    saved = (
        cm.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        cm.allow_fp16_reduced_precision_reduction,
        cm.allow_bf16_reduced_precision_reduction,
        torch.get_float32_matmul_precision(),
    )
    cm.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cm.allow_fp16_reduced_precision_reduction = False
    cm.allow_bf16_reduced_precision_reduction = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        (cm.allow_tf32, torch.backends.cudnn.allow_tf32, cm.allow_fp16_reduced_precision_reduction,
         cm.allow_bf16_reduced_precision_reduction) = saved[:4]
        torch.set_float32_matmul_precision(saved[4])


def numba_thread_variants(step: Any, reference: Any) -> dict[str, Any]:
    """Honest implementations of a numba kernel that must agree bit for bit: its step at all
    threads and at one thread, and its numpy reference (used by ``pocv calibrate`` and tests)."""
    import numba  # numba loads only for the thread variants of calibration and tests

    def threads(n: int) -> Any:
        def fn(state: Any, i: int, spec: Any) -> Any:
            old = numba.get_num_threads()
            cfg: Any = numba.config
            numba.set_num_threads(min(n, int(cfg.NUMBA_NUM_THREADS)))
            try:
                return step(state, i, spec)
            finally:
                numba.set_num_threads(old)
        return fn

    return {"numba-all-threads": threads(1 << 30), "numba-1thread": threads(1), "reference-numpy": reference}
