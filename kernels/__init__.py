"""Job kernels and their registry (docs/architecture.md §3.3, docs/kernels.md).

Built-in kernels live in their own modules and are imported on first use, so naming one kernel
does not compile another's numba code, and importing this package loads no torch or numba.
``get_kernel(name, version)`` returns an instance (``version=None``: the current, highest
version); :func:`resolve_spec` is the explicit step that fixes a job spec's kernel version and
fills in the kernel's parameter defaults.

Kernels come from three places:

* the built-ins (``_MODULES``), provided by ``pocv`` itself;
* plugins: any installed distribution that declares an entry point in the group
  ``pocv.kernels`` (``kernel-name = "package.module:KernelClass"``), loaded through
  importlib.metadata when that kernel is first named; their provider is the distribution and
  its version (``dist==version``);
* :func:`register_kernel` at run time (a notebook's or a test's own kernel); its provider is the
  distribution that installed the class's top-level package, else ``unpackaged:<module>==0``.

A retired built-in (``RETIRED``: ``transformer-decode``, replaced by ``hf-causal-lm``) keeps its
name reserved: naming it anywhere (a job spec, a commitment, ``pocv kernels``, a plugin, a class
registered at run time) is a :class:`pocv.errors.SpecError` that says why and what replaces it.

The provider is recorded in every commitment; a verifier refuses a commitment whose provider
differs from the one installed here (:class:`pocv.errors.ProviderMismatch`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

from pocv.errors import SpecError
from pocv.jobs import JobSpec
from pocv.records import PROVIDER_RE as _PROVIDER_RE

if TYPE_CHECKING:  # typing only: pocv.kernels.base imports torch through pocv.encoding
    from pocv.kernels.base import Kernel

#: built-in kernel name -> module that defines (and registers) it
_MODULES: Final[dict[str, str]] = {
    "gemm-int8": "pocv.kernels.gemm_int8",
    "hf-causal-lm": "pocv.kernels.causal_lm",
    "mlp-sgd": "pocv.kernels.mlp_sgd",
    "gemm-fp32": "pocv.kernels.gemm_fp32",
    "gemm-fp32-exact": "pocv.kernels.gemm_fp32_exact",
    "heat2d": "pocv.kernels.heat2d",
}

#: built-in kernels that were removed -> why, and what to use instead. Their names stay reserved: a
#: job spec or commitment naming one is refused with that reason (SpecError, CLI exit 3), never
#: resolved through a plugin of the same name.
RETIRED: Final[dict[str, str]] = {
    "transformer-decode": (
        "was retired (issue 12): its small built-in model kept the whole KV cache in every state "
        "(16.6 KB opened per checked token); LLM decoding has one code path now, 'hf-causal-lm' (any "
        "Hugging Face causal LM from a model artifact, committed tokens + per-position fingerprints; "
        "docs/llm.md); commitments naming it cannot be verified by this pocv"),
}

#: the entry-point group plugins declare their kernels in
ENTRY_POINT_GROUP: Final = "pocv.kernels"
BUILTIN_PROVIDER: Final = "pocv"
#: how a provider is written in a commitment: "pocv" (built-in) or "distribution==version"
PROVIDER_RE: Final = _PROVIDER_RE

log = logging.getLogger(__name__)

_REGISTRY: dict[tuple[str, int], type[Kernel]] = {}
_PROVIDERS: dict[tuple[str, int], str] = {}
_INSTANCES: dict[tuple[str, int], Kernel] = {}
#: the entry point being loaded, and its provider: classes it registers while loading get it
_LOADING: list[str] = []
#: kernels registered while an entry point loaded (listed by kernel_names only with plugins=True)
_FROM_PLUGINS: set[tuple[str, int]] = set()


def _is_builtin(cls: type) -> bool:
    mod = cls.__module__
    return mod.startswith("pocv.kernels.") and mod.rsplit(".", 1)[-1] in {m.rsplit(".", 1)[-1]
                                                                          for m in _MODULES.values()}


def _dist_of(cls: type) -> str:
    """The provider of a class registered at run time: the distribution that installed its top-level
    package (``dist==version``), else ``unpackaged:<module>==0``."""
    top = cls.__module__.split(".")[0]
    try:
        dists = metadata.packages_distributions().get(top, [])
    except Exception:  # a broken metadata entry of another distribution must not break registration
        dists = []
    if len(dists) == 1:
        try:
            return f"{dists[0]}=={metadata.version(dists[0])}"
        except metadata.PackageNotFoundError:
            pass
    mod = re.sub(r"[^A-Za-z0-9._\-]", "_", cls.__module__)[:100] or "main"
    return f"unpackaged:{mod}==0"


def register_kernel(cls: type[Kernel], *, provider: str | None = None) -> type[Kernel]:
    """Make ``cls`` available as ``cls.name`` at ``cls.version`` in this process, with its provider
    (default: the built-in ``pocv``, the entry point's distribution while one loads, else the
    distribution that installed the class's package). Usable as a class decorator."""
    for attr in ("name", "version", "mode", "summary"):
        if not hasattr(cls, attr):
            raise SpecError(f"kernel class {cls.__qualname__} does not set {attr!r}")
    if provider is None:
        provider = BUILTIN_PROVIDER if _is_builtin(cls) else _LOADING[-1] if _LOADING else _dist_of(cls)
    if not PROVIDER_RE.fullmatch(provider):
        raise SpecError(f"kernel provider must be 'pocv' or 'distribution==version', got {provider!r:.80}")
    if cls.name in RETIRED:
        raise SpecError(f"kernel class {cls.__qualname__} is named {cls.name!r}, a retired built-in kernel "
                        f"whose name stays reserved: the name {RETIRED[cls.name]}; name the class otherwise")
    key = (cls.name, cls.version)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise SpecError(f"kernel {cls.name}@{cls.version} is registered twice: by {_REGISTRY[key].__module__} "
                        f"({_PROVIDERS[key]}) and by {cls.__module__} ({provider})")
    _REGISTRY[key] = cls
    _PROVIDERS[key] = provider
    if _LOADING:
        _FROM_PLUGINS.add(key)
    return cls


def register(cls: type[Kernel]) -> type[Kernel]:
    """Class decorator: make ``cls`` available as ``cls.name`` at ``cls.version`` (its provider
    found as :func:`register_kernel` says)."""
    return register_kernel(cls)


def _entry_points(name: str | None = None) -> list[metadata.EntryPoint]:
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    return [ep for ep in eps if name is None or ep.name == name]


def _load_plugin(name: str) -> None:
    """Import the plugin that declares kernel ``name`` (an entry point of group pocv.kernels)."""
    eps = _entry_points(name)
    if not eps:
        return
    providers = {f"{ep.dist.name}=={ep.dist.version}" if ep.dist else "unknown==0" for ep in eps}
    if len(providers) > 1:
        raise SpecError(f"kernel {name!r} is declared by several installed distributions: {sorted(providers)}; "
                        f"uninstall all but one")
    ep = eps[0]
    provider = providers.pop()
    _LOADING.append(provider)
    try:
        obj: Any = ep.load()
    except Exception as e:
        raise SpecError(f"kernel {name!r} from {provider} cannot be loaded ({ep.value}): "
                        f"{type(e).__name__}: {e}") from e
    finally:
        _LOADING.pop()
    if isinstance(obj, type) and all(hasattr(obj, a) for a in ("name", "version", "init_state")):
        kcls: Any = obj  # a Kernel subclass (checked by its attributes: the plugin's own class)
        if kcls.name != name:
            raise SpecError(f"entry point {name!r} of {provider} names kernel class {kcls.__qualname__} "
                            f"whose name is {kcls.name!r}")
        if (kcls.name, kcls.version) not in _REGISTRY:
            register_kernel(kcls, provider=provider)
        _FROM_PLUGINS.add((kcls.name, kcls.version))


def _plugin_names() -> set[str]:
    try:
        return {ep.name for ep in _entry_points()}
    except Exception as e:  # a broken installed distribution: list the rest, say why
        log.warning("cannot read entry points of group %s: %s", ENTRY_POINT_GROUP, e)
        return set()


def kernel_names(*, plugins: bool = False) -> list[str]:
    """Built-in kernels and those registered at run time in this process; with ``plugins``, also
    every installed plugin (entry points of group ``pocv.kernels``), loaded or not."""
    names = set(_MODULES) | {n for (n, v) in _REGISTRY if (n, v) not in _FROM_PLUGINS}
    if plugins:
        names |= _plugin_names() | {n for (n, _) in _FROM_PLUGINS}
    return sorted(names - set(RETIRED))


def get_kernel(name: str, version: int | None = None) -> Kernel:
    if name in RETIRED:
        raise SpecError(f"kernel {name!r} {RETIRED[name]}")
    if name in _MODULES:
        importlib.import_module(_MODULES[name])
    elif not any(n == name for (n, _) in _REGISTRY):
        _load_plugin(name)
    versions = sorted(v for (n, v) in _REGISTRY if n == name)
    if not versions:
        raise SpecError(f"unknown kernel {name!r}; expected one of {kernel_names(plugins=True)}")
    if version is None:
        version = versions[-1]
    key = (name, version)
    if key not in _REGISTRY:
        raise SpecError(f"kernel {name!r} has no version {version}; known versions {versions}")
    if key not in _INSTANCES:
        inst = _REGISTRY[key]()
        inst.provider = _PROVIDERS[key]
        _INSTANCES[key] = inst
    return _INSTANCES[key]


def kernel_provider(name: str, version: int) -> str:
    """The installed provider of kernel ``name@version`` ("pocv" or "dist==version")."""
    return get_kernel(name, version).provider


def kernel_table() -> list[dict[str, Any]]:
    """Every kernel this process can run (built-in and plugin), described, with its provider; a
    plugin that cannot be loaded is listed with the reason."""
    out: list[dict[str, Any]] = []
    for n in kernel_names(plugins=True):
        try:
            out.append(get_kernel(n).describe())
        except SpecError as e:
            out.append({"name": n, "error": str(e)})
    return out


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


__all__ = ["ENTRY_POINT_GROUP", "PROVIDER_RE", "RETIRED", "get_kernel", "kernel_for", "kernel_names",
           "kernel_provider", "kernel_table", "register", "register_kernel", "resolve_spec"]
