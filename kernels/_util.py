"""Small helpers shared by kernels: seeded bytes, tensor conversion, device choice."""

from __future__ import annotations

import struct
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
