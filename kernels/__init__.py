"""Job kernels and their registry (docs/architecture.md §3.3).

Built-in kernels live in their own modules and are imported on first use, so naming one kernel
does not compile another's numba code, and importing this package loads no torch or numba.
``get_kernel(name, version)`` returns an instance (``version=None``: the current, highest
version); :func:`resolve_spec` is the explicit step that fixes a job spec's kernel version and
fills in the kernel's parameter defaults; :func:`register` makes a kernel class known in this
process (a notebook's or a test's own kernel).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Final

from pocv.errors import SpecError
from pocv.jobs import JobSpec

if TYPE_CHECKING:  # typing only: pocv.kernels.base imports torch through pocv.encoding
    from pocv.kernels.base import Kernel

#: built-in kernel name -> module that defines (and registers) it
_MODULES: Final[dict[str, str]] = {
    "gemm-int8": "pocv.kernels.gemm_int8",
    "mlp-sgd": "pocv.kernels.mlp_sgd",
    "gemm-fp32": "pocv.kernels.gemm_fp32",
    "gemm-fp32-exact": "pocv.kernels.gemm_fp32_exact",
    "heat2d": "pocv.kernels.heat2d",
    "transformer-decode": "pocv.kernels.transformer_decode",
}

_REGISTRY: dict[tuple[str, int], type[Kernel]] = {}
_INSTANCES: dict[tuple[str, int], Kernel] = {}


def register(cls: type[Kernel]) -> type[Kernel]:
    """Class decorator: make ``cls`` available as ``cls.name`` at ``cls.version``."""
    key = (cls.name, cls.version)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise SpecError(f"kernel {cls.name}@{cls.version} is registered twice: by {_REGISTRY[key].__module__} "
                        f"and by {cls.__module__}")
    _REGISTRY[key] = cls
    return cls


def kernel_names() -> list[str]:
    """Built-in kernels and those registered in this process."""
    return sorted(set(_MODULES) | {n for (n, _) in _REGISTRY})


def get_kernel(name: str, version: int | None = None) -> Kernel:
    if name in _MODULES:
        importlib.import_module(_MODULES[name])
    versions = sorted(v for (n, v) in _REGISTRY if n == name)
    if not versions:
        raise SpecError(f"unknown kernel {name!r}; expected one of {kernel_names()}")
    if version is None:
        version = versions[-1]
    key = (name, version)
    if key not in _REGISTRY:
        raise SpecError(f"kernel {name!r} has no version {version}; known versions {versions}")
    if key not in _INSTANCES:
        _INSTANCES[key] = _REGISTRY[key]()
    return _INSTANCES[key]


def kernel_for(spec: JobSpec) -> Kernel:
    """The kernel a resolved spec names (its exact version)."""
    if not spec.resolved:
        raise SpecError(f"the job spec for {spec.kernel!r} is not resolved (version 0); call resolve_spec first")
    return get_kernel(spec.kernel, spec.version)


def resolve_spec(spec: JobSpec) -> JobSpec:
    """``spec`` with its kernel version fixed (the current one if it names none), the kernel's
    parameter defaults filled in and checked, and the job's sizes checked against the limits
    (``Kernel.check_limits``). A resolved spec resolves to itself."""
    kern = get_kernel(spec.kernel, spec.version or None)
    params = kern.check_params(dict(spec.params))
    resolved = dataclasses.replace(spec, version=kern.version, params=params)
    kern.check_limits(resolved)  # a job no honest worker can answer is refused here, sizes named
    return resolved


__all__ = ["get_kernel", "kernel_for", "kernel_names", "register", "resolve_spec"]
