"""Job kernels and their registry.

Kernels live in their own modules and are imported on first use, so naming one kernel does not
compile another's numba code. ``get_kernel(name, version)`` returns an instance; ``version=None``
gives the current (highest) version.
"""

from __future__ import annotations

import importlib
from typing import Final

from kernels.base import Comparison, Kernel, Mode
from verifier.errors import SpecError

#: kernel name -> module that defines (and registers) it
_MODULES: Final[dict[str, str]] = {
    "gemm-int8": "kernels.gemm_int8",
    "mlp-sgd": "kernels.mlp_sgd",
    "gemm-fp32": "kernels.gemm_fp32",
    "gemm-fp32-exact": "kernels.gemm_fp32_exact",
    "heat2d": "kernels.heat2d",
    "transformer-decode": "kernels.transformer_decode",
}

_REGISTRY: dict[tuple[str, int], type[Kernel]] = {}
_INSTANCES: dict[tuple[str, int], Kernel] = {}


def register(cls: type[Kernel]) -> type[Kernel]:
    """Class decorator: make ``cls`` available as ``cls.name`` at ``cls.version``."""
    key = (cls.name, cls.version)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise RuntimeError(f"kernel {cls.name}@{cls.version} registered twice")
    _REGISTRY[key] = cls
    return cls


def kernel_names() -> list[str]:
    return sorted(_MODULES)


def get_kernel(name: str, version: int | None = None) -> Kernel:
    if name not in _MODULES:
        raise SpecError(f"unknown kernel {name!r}; expected one of {kernel_names()}")
    importlib.import_module(_MODULES[name])
    versions = sorted(v for (n, v) in _REGISTRY if n == name)
    if version is None:
        version = versions[-1]
    key = (name, version)
    if key not in _REGISTRY:
        raise SpecError(f"kernel {name!r} has no version {version}; known versions {versions}")
    if key not in _INSTANCES:
        _INSTANCES[key] = _REGISTRY[key]()
    return _INSTANCES[key]


__all__ = ["Comparison", "Kernel", "Mode", "get_kernel", "kernel_names", "register"]
