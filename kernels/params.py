"""Typed kernel parameters, and where a kernel finds the artifacts a job references.

A kernel declares its parameters as ``params: ClassVar[dict[str, Param]]``; each has a type, a
default and bounds (docs/kernels.md)::

    params = {
        "width": Int(64, 8, 4096),              # default, min, max
        "lr": Float(0.01, 1e-6, 1.0),           # default, min, max (inclusive)
        "shuffle": Bool(True),
        "act": Enum("relu", ("relu", "tanh")),  # default, choices
        "tag": Str("", max_len=32),
        "data": Artifact(),                     # a content hash "blake3:<64 hex>", or "" (none)
    }

A job spec carries plain JSON values (:mod:`pocv.jobs`: int, str, bool; no floats, whose text
form is not canonical across languages). So a float parameter travels as a string: the kernel
accepts ``"0.01"``, ``"1e-2"`` or a Python float, and :func:`pocv.kernels.resolve_spec` writes the
value back in one canonical text (Python's shortest round-trip ``repr``: ``"0.01"``), so two
specs that mean the same job have the same job id. :meth:`Kernel.typed` gives the typed values.

Artifacts (weights, data sets, tokenizers, calibration records) are referenced by their BLAKE3
content hash and resolved in the local artifact store of whoever runs or judges the job
(:mod:`pocv.artifacts`). This layer knows no disk: the worker and the verifier install their
store with :func:`use_artifacts`, and a kernel reads an artifact through :func:`artifact_bytes`
(the bytes, hash-checked) or :func:`artifact_path` (a checked file or directory).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

from pocv.errors import ArtifactError, SpecError

#: an artifact reference: the BLAKE3 content hash of a file or directory (docs/kernels.md §3)
ARTIFACT_RE: Final = re.compile(r"blake3:[0-9a-f]{64}")


@dataclass(frozen=True)
class Param:
    """One declared parameter. Subclasses: :class:`Int`, :class:`Float`, :class:`Bool`,
    :class:`Str`, :class:`Enum`, :class:`Artifact`."""

    kind: ClassVar[str] = "param"

    def check(self, key: str, value: object, owner: str) -> Any:
        """The canonical spec value of ``value`` (raise SpecError naming what was expected)."""
        raise NotImplementedError

    def typed(self, value: Any) -> Any:
        """The value a kernel computes with (a float parameter's float)."""
        return value

    @property
    def default_value(self) -> Any:
        return getattr(self, "default")  # noqa: B009 - every subclass has one; the base has no field

    def parse_text(self, text: str) -> Any:
        """A value given as text on a command line (``--param NAME=VALUE``)."""
        return text

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "default": self.default_value}


@dataclass(frozen=True)
class Int(Param):
    default: int
    min: int
    max: int
    kind: ClassVar[str] = "int"

    def __post_init__(self) -> None:
        if not self.min <= self.default <= self.max:
            raise SpecError(f"Int default {self.default} is outside {self.min}..{self.max}")

    def check(self, key: str, value: object, owner: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not self.min <= value <= self.max:
            raise SpecError(f"{owner} parameter {key!r} must be an integer in {self.min}..{self.max}, got {value!r}")
        return value

    def parse_text(self, text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            return text

    def describe(self) -> dict[str, Any]:
        return {"type": "int", "default": self.default, "min": self.min, "max": self.max}


def float_text(x: float) -> str:
    """The canonical text of a float parameter: Python's shortest round-trip repr."""
    return repr(float(x))


@dataclass(frozen=True)
class Float(Param):
    """A finite float in ``min..max``; carried in the spec as its canonical text (a string)."""

    default: float
    min: float
    max: float
    kind: ClassVar[str] = "float"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min <= self.default <= self.max):
            raise SpecError(f"Float default {self.default} is outside {self.min}..{self.max}")

    def check(self, key: str, value: object, owner: str) -> str:
        want = f"{owner} parameter {key!r} must be a float in {self.min:g}..{self.max:g}"
        if isinstance(value, bool):
            raise SpecError(f"{want}, got {value!r}")
        if isinstance(value, int | float):
            x = float(value)
        elif isinstance(value, str) and len(value) <= 64:
            try:
                x = float(value)
            except ValueError:
                raise SpecError(f"{want} (written as a string, e.g. \"0.01\"), got {value!r}") from None
        else:
            raise SpecError(f"{want} (written as a string, e.g. \"0.01\"), got {value!r}")
        if not math.isfinite(x) or not self.min <= x <= self.max:
            raise SpecError(f"{want}, got {value!r}")
        return float_text(x)

    def typed(self, value: Any) -> float:
        return float(value)

    @property
    def default_value(self) -> str:
        return float_text(self.default)

    def describe(self) -> dict[str, Any]:
        return {"type": "float", "default": self.default, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class Bool(Param):
    default: bool
    kind: ClassVar[str] = "bool"

    def check(self, key: str, value: object, owner: str) -> bool:
        if not isinstance(value, bool):
            raise SpecError(f"{owner} parameter {key!r} must be true or false, got {value!r}")
        return value

    def parse_text(self, text: str) -> Any:
        return {"true": True, "false": False, "1": True, "0": False}.get(text.lower(), text)


@dataclass(frozen=True)
class Str(Param):
    default: str = ""
    max_len: int = 256
    pattern: str | None = None
    kind: ClassVar[str] = "str"

    def check(self, key: str, value: object, owner: str) -> str:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise SpecError(f"{owner} parameter {key!r} must be text of at most {self.max_len} characters, "
                            f"got {value!r:.80}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise SpecError(f"{owner} parameter {key!r} must match {self.pattern}, got {value!r:.80}")
        return value

    def describe(self) -> dict[str, Any]:
        return {"type": "str", "default": self.default, "max_len": self.max_len}


@dataclass(frozen=True)
class Enum(Param):
    default: str
    choices: tuple[str, ...]
    kind: ClassVar[str] = "enum"

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.default not in self.choices:
            raise SpecError(f"Enum default {self.default!r} is not one of {list(self.choices)}")

    def check(self, key: str, value: object, owner: str) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise SpecError(f"{owner} parameter {key!r} must be one of {list(self.choices)}, got {value!r:.80}")
        return value

    def describe(self) -> dict[str, Any]:
        return {"type": "enum", "default": self.default, "choices": list(self.choices)}


@dataclass(frozen=True)
class Artifact(Param):
    """A content hash ``blake3:<64 hex>`` (a file or a directory), or ``""`` when optional and
    not given. ``required``: the job must name one."""

    required: bool = False
    what: str = "artifact"
    kind: ClassVar[str] = "artifact"

    @property
    def default_value(self) -> str:
        return ""

    def check(self, key: str, value: object, owner: str) -> str:
        if value == "" and not self.required:
            return ""
        if not isinstance(value, str) or not ARTIFACT_RE.fullmatch(value):
            need = "" if self.required else ' or "" (none)'
            raise SpecError(f"{owner} parameter {key!r} ({self.what}) must be an artifact reference "
                            f"blake3:<64 hex digits>{need}, got {value!r:.80} (pocv artifact add PATH prints one)")
        return value

    def describe(self) -> dict[str, Any]:
        return {"type": "artifact", "default": "", "required": self.required, "what": self.what}


def check_params(owner: str, declared: dict[str, Param], params: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and validate ``params`` against ``declared``; canonical spec values."""
    unknown = set(params) - set(declared)
    if unknown:
        raise SpecError(f"kernel {owner} has no parameter(s) {sorted(unknown)}; expected some of {sorted(declared)}")
    return {key: p.check(key, params.get(key, p.default_value), owner)
            for key, p in declared.items()}


# -- artifacts: where a kernel's referenced bytes come from --------------------------------------


@runtime_checkable
class ArtifactSource(Protocol):
    """A local artifact store (:class:`pocv.artifacts.ArtifactStore` is the one pocv ships).

    Both methods check the content hash before anything is handed out and raise
    :class:`~pocv.errors.ArtifactError` naming the hash when the artifact is missing or altered.
    """

    def read_bytes(self, ref: str) -> bytes:
        """The bytes of the file artifact ``ref``, hashed after reading (what is returned is
        what was checked)."""
        ...

    def path(self, ref: str) -> Path:
        """A checked local path of the file or directory artifact ``ref``."""
        ...


_SOURCE: ContextVar[ArtifactSource | None] = ContextVar("pocv_artifact_source", default=None)


@contextlib.contextmanager
def use_artifacts(source: ArtifactSource | None) -> Iterator[None]:
    """Resolve artifact references through ``source`` inside the block (None: leave as is)."""
    if source is None:
        yield
        return
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def current_artifacts() -> ArtifactSource | None:
    return _SOURCE.get()


def _source(ref: str) -> ArtifactSource:
    if not isinstance(ref, str) or not ARTIFACT_RE.fullmatch(ref):
        raise SpecError(f"not an artifact reference: {ref!r:.80}; expected blake3:<64 hex digits>")
    src = _SOURCE.get()
    if src is None:
        raise ArtifactError(f"the job references artifact {ref}, and no artifact store is in use here: pass "
                            f"--artifacts DIR (or set POCV_ARTIFACTS), or artifacts=pocv.artifacts.ArtifactStore(...)")
    return src


def artifact_bytes(ref: str) -> bytes:
    """The bytes of file artifact ``ref`` from the store in use, hash-checked."""
    return _source(ref).read_bytes(ref)


def artifact_path(ref: str) -> Path:
    """A checked path of the file or directory artifact ``ref`` in the store in use."""
    return _source(ref).path(ref)


def artifact_refs(declared: dict[str, Param], params: Any, keys: Sequence[str] | None = None) -> list[str]:
    """The artifact references a resolved spec's ``params`` name (non-empty), in key order."""
    return [str(params[k]) for k, p in sorted(declared.items())
            if isinstance(p, Artifact) and (keys is None or k in keys) and params.get(k)]


__all__ = [
    "ARTIFACT_RE",
    "Artifact",
    "ArtifactSource",
    "Bool",
    "Enum",
    "Float",
    "Int",
    "Param",
    "Str",
    "artifact_bytes",
    "artifact_path",
    "artifact_refs",
    "check_params",
    "current_artifacts",
    "float_text",
    "use_artifacts",
]
