"""Small helpers shared by kernels: seeded bytes, tensor conversion, device choice."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from blake3 import blake3

from verifier.encoding import Tensor


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
