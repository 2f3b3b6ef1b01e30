"""Job specs and job ids.

A :class:`JobSpec` names a kernel (and its version), a number of steps, a seed and the
kernel's parameters. It is plain data: it checks its own fields but knows no kernel, so a
spec (and every record that carries one) parses without importing any kernel.

Filling in the kernel's current version and its parameter defaults is an explicit step,
:func:`pocv.kernels.resolve_spec`, that the prover and the CLI take; only a resolved spec
(``version >= 1``) has a job id, so two specs that mean the same job have the same canonical
JSON and the same job id (docs/protocol.md §2)::

    job_id = BLAKE3-derive_key(JOB_CONTEXT, canonical JSON)

Canonical JSON: keys sorted, no whitespace, UTF-8, integers only (no floats: their text form
is not canonical across languages).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from blake3 import blake3

from pocv.errors import InputError, LimitExceeded, MalformedError, SpecError
from pocv.limits import MAX_SAMPLE_CHUNKS, MAX_SPEC_BYTES, MAX_STEPS

JOB_CONTEXT: Final = "pocv 2026-11 job id v1"
MAX_SEED: Final = (1 << 63) - 1
MAX_PARAMS: Final = 32
MAX_PARAM_INT: Final = 1 << 53  # exact in every JSON implementation
MAX_PARAM_STR: Final = 256

ParamValue = int | str | bool
_KEY_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
_KERNEL_RE: Final = re.compile(r"[a-z][a-z0-9\-]{0,63}")


def _check_param(key: object, value: object) -> None:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise SpecError(f"parameter name must match {_KEY_RE.pattern}, got {key!r}")
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_PARAM_INT:
            raise SpecError(f"parameter {key!r} must be within +-2^53, got {value}")
        return
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError as e:  # a lone surrogate has no UTF-8 form, so no canonical JSON
            raise SpecError(f"parameter {key!r} is not valid UTF-8 text: {e.reason} at {e.start}") from None
        if len(value) > MAX_PARAM_STR:
            raise SpecError(f"parameter {key!r} is at most {MAX_PARAM_STR} characters, got {len(value)}")
        return
    raise SpecError(f"parameter {key!r} must be an int, str or bool, got {type(value).__name__}")


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What to compute. ``version=0`` means "the kernel's current version": such a spec is not
    resolved yet (:func:`pocv.kernels.resolve_spec`) and has no job id."""

    kernel: str
    steps: int
    seed: int
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    version: int = 0
    #: a tolerance kernel's challenged s_i is compared on this many chunks, drawn from the
    #: beacon, instead of whole (docs/protocol.md §8.1); 0 (the default): whole. Part of the
    #: canonical JSON only when set, so the ids of jobs without it are unchanged
    sample_chunks: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kernel, str) or not _KERNEL_RE.fullmatch(self.kernel):
            raise SpecError(f"kernel name must match {_KERNEL_RE.pattern}, got {self.kernel!r}")
        for name, lo, hi in (("steps", 1, MAX_STEPS), ("seed", 0, MAX_SEED), ("version", 0, 1 << 31),
                             ("sample_chunks", 0, MAX_SAMPLE_CHUNKS)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise SpecError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
        if not isinstance(self.params, Mapping):
            raise SpecError(f"params must be a mapping, got {type(self.params).__name__}")
        if len(self.params) > MAX_PARAMS:
            raise SpecError(f"at most {MAX_PARAMS} parameters, got {len(self.params)}")
        for k, v in self.params.items():
            _check_param(k, v)
        object.__setattr__(self, "params", MappingProxyType(dict(sorted(self.params.items()))))

    @property
    def resolved(self) -> bool:
        """True once the version is fixed (and, by the resolver, the defaults are filled in)."""
        return self.version >= 1

    @property
    def kernel_ref(self) -> str:
        """``name@version``, as recorded in commitments."""
        return f"{self.kernel}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "kernel": self.kernel,
            "version": self.version,
            "steps": self.steps,
            "seed": self.seed,
            "params": dict(self.params),
        }
        if self.sample_chunks:
            out["sample_chunks"] = self.sample_chunks
        return out

    def canonical_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def job_id(self) -> bytes:
        """``BLAKE3-derive_key(JOB_CONTEXT, canonical JSON)`` of a resolved spec."""
        if not self.resolved:
            raise InputError(f"the job spec for {self.kernel!r} names no kernel version, so it has no job id "
                             f"yet; resolve it first (pocv.kernels.resolve_spec)")
        return bytes(blake3(self.canonical_json(), derive_key_context=JOB_CONTEXT).digest())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, d: object) -> JobSpec:
        if not isinstance(d, dict):
            raise SpecError(f"a job spec is a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"kernel", "version", "steps", "seed", "params", "sample_chunks"}
        if unknown:
            raise SpecError(f"unknown job spec fields: {sorted(unknown)}")
        missing = {"kernel", "steps", "seed"} - set(d)
        if missing:
            raise SpecError(f"job spec is missing {sorted(missing)}")
        return cls(
            kernel=d["kernel"],
            steps=d["steps"],
            seed=d["seed"],
            params=d.get("params", {}),
            version=d.get("version", 0),
            sample_chunks=d.get("sample_chunks", 0),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> JobSpec:
        if len(text) > MAX_SPEC_BYTES:
            raise LimitExceeded(f"a job spec is at most {MAX_SPEC_BYTES} bytes, got {len(text)}")
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise MalformedError(f"job spec is not valid JSON: {e}") from e
        return cls.from_dict(d)
