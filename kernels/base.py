"""The kernel interface.

A kernel is a named, versioned, deterministic step function with a declared comparison
mode (docs/protocol.md §3):

* ``init_state(spec, device)`` derives ``s_0`` from the spec alone (seeded), so the verifier
  re-derives it and the worker cannot choose it;
* ``step(state, i, spec, device)`` maps ``s_{i-1}`` to ``s_i`` (``i`` is 1-based) and must not
  modify its input;
* ``mode`` is ``"exact"`` (states compared by digest) or ``"tolerance"`` (``compare`` applies
  a calibrated bound that is part of the kernel version);
* ``schema(spec)`` gives the name -> (dtype, shape) every state has, so a claimed state of the
  wrong dtype or shape is refused before anything is recomputed;
* :meth:`Kernel.judge` is the one rule that judges a claimed step. The spot check
  (``pocv.check``), the dispute referee (``pocv.dispute``) and calibration
  (``pocv.kernels.calibrate``) all call it, so a worker the spot check accepts is never named
  the liar by the referee. Kernels change how a step is judged by overriding
  :meth:`Kernel.verify_step` (a cheaper sound check, a tie rule), never by bypassing ``judge``.

The CPU path is the reference that defines the result; other backends are tested against it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, final

from pocv.bundle import MAX_BUNDLE_BYTES, answer_bytes_bound
from pocv.challenge import sample_size
from pocv.encoding import (
    ChunkLayout,
    State,
    Tensor,
    decode_state,
    encode_state,
    encoded_size,
    state_digest,
    state_schema,
)
from pocv.errors import EvidenceError, SetupError, SpecError
from pocv.jobs import JobSpec, ParamValue
from pocv.kernels.params import Int, Param, artifact_path, artifact_refs
from pocv.kernels.params import check_params as _check_params
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE, MAX_STATE_BYTES

log = logging.getLogger(__name__)

Mode = Literal["exact", "tolerance"]

Schema = dict[str, tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Comparison:
    """Outcome of comparing a recomputed state with a claimed one."""

    ok: bool
    detail: str = ""
    #: for tolerance kernels: the largest observed ratio deviation / allowed (<= 1 passes)
    worst_ratio: float = 0.0
    #: the claimed or previous state is not a state of this job (names, dtypes, shapes, values)
    bad_state: bool = False


class Kernel(ABC):
    name: ClassVar[str]
    version: ClassVar[int]
    mode: ClassVar[Mode]
    summary: ClassVar[str]
    #: typed parameters: name -> Int, Float, Bool, Str, Enum or Artifact (pocv.kernels.params)
    params: ClassVar[Mapping[str, Param]] = {}
    #: the older form for integer parameters: name -> (default, min, max)
    int_params: ClassVar[Mapping[str, tuple[int, int, int]]] = {}
    #: devices this kernel can run on ("cpu", "cuda")
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: the distribution that provides this kernel and its version ("pocv" for the built-ins,
    #: "dist==version" for a plugin); set by the registry (pocv.kernels) on the instance
    provider: str = "pocv"
    #: ``step`` is a pure function of its arguments on the CPU: it never modifies its input state
    #: (nor a tensor it returned before), and it changes no process-wide setting while it runs
    #: (``torch.set_num_threads``, backend flags, warning filters). Then the prover hashes and
    #: writes ``s_i`` on another thread while ``s_(i+1)`` computes without copying ``s_i`` first,
    #: and recomputes independent segments of a challenge on several threads at once
    #: (``respond_workers``). False (the default) costs a copy of each state and answers
    #: one segment at a time: declare it only for a step that keeps the promise. It counts
    #: only in the class body that declares it: a subclass inherits the step but not the
    #: promise (any method it overrides may change what the step does), so it declares it again.
    pure_step: ClassVar[bool] = False

    def step_is_pure(self) -> bool:
        """Whether this kernel's own class declares :attr:`pure_step` (see there); the built-in
        kernels do, and tests/test_commit_pipeline.py checks that each keeps the promise."""
        return type(self).__dict__.get("pure_step", False) is True

    @classmethod
    def declared_params(cls) -> dict[str, Param]:
        """Every declared parameter, typed (``int_params`` become :class:`Int`)."""
        out: dict[str, Param] = {k: Int(d, lo, hi) for k, (d, lo, hi) in cls.int_params.items()}
        out.update(cls.params)
        return out

    def check_params(self, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        """Fill defaults and validate; raise SpecError naming what was expected and what came."""
        checked: dict[str, ParamValue] = _check_params(f"{self.name}@{self.version}", self.declared_params(),
                                                       dict(params))
        return checked

    def typed(self, spec: JobSpec) -> dict[str, Any]:
        """The resolved spec's parameters as the values a kernel computes with (floats as float)."""
        declared = self.declared_params()
        return {k: declared[k].typed(v) if k in declared else v for k, v in spec.params.items()}

    def artifacts(self, spec: JobSpec) -> list[str]:
        """The artifact references ``spec`` names (its non-empty Artifact parameters)."""
        return artifact_refs(self.declared_params(), spec.params)

    def require(self, spec: JobSpec) -> None:
        """Check that this side can run and judge ``spec`` as installed, before any work: every
        artifact the spec references is in the store in use with its hash (ArtifactError naming
        the hash). Tolerance kernels whose bound comes from a calibration record also require the
        record (NotCalibrated). The prover calls this before a run, the verifier before a check."""
        for ref in self.artifacts(spec):
            artifact_path(ref)

    def check_device(self, device: str) -> None:
        kind = device.split(":")[0]
        if kind not in self.devices:
            raise SpecError(f"kernel {self.name}@{self.version} runs on {list(self.devices)}, not {device!r}")

    @abstractmethod
    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]: ...

    @abstractmethod
    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]: ...

    @abstractmethod
    def schema(self, spec: JobSpec) -> Schema: ...

    def compare(self, expected: State, claimed: State, spec: JobSpec) -> Comparison:
        """Exact kernels compare digests; tolerance kernels override this with their bound."""
        if state_digest(expected) == state_digest(claimed):
            return Comparison(True)
        return Comparison(False, "state differs from the recomputed one")

    def verify_step(
        self, prev: State, claimed: State, i: int, spec: JobSpec, device: str = "cpu"
    ) -> Comparison:
        """Is ``claimed`` a correct ``s_i`` given ``prev`` = ``s_{i-1}``?

        The default recomputes the step and applies :meth:`compare`. Kernels with a cheaper
        sound check (Freivalds for matrix products) override this.
        """
        return self.compare(self.step(prev, i, spec, device), claimed, spec)

    @final
    def judge(self, prev: State, claimed: State, i: int, spec: JobSpec, device: str = "cpu") -> Comparison:
        """The one rule: is ``claimed`` a correct ``s_i`` given ``prev`` = ``s_{i-1}``?

        Both states are checked against :meth:`schema` first (a state of the wrong names,
        dtypes or shapes is ``bad_state``), then :meth:`verify_step` decides. Whatever a
        claimed or previous state contains, the answer is a judgement, never an exception: an
        :class:`EvidenceError` while judging is ``bad_state``, and so is any other exception a
        kernel raises on values it cannot handle (a token id beyond the vocabulary, a NaN where
        an index belongs). The engine guarantees this for every kernel, plugins included; such
        an exception is also logged with its traceback (logger ``pocv.kernels.base``, ERROR),
        so a bug in a kernel stays visible instead of passing silently for a cheat.
        """
        return self._judge(prev, claimed, i, spec, lambda: self.verify_step(prev, claimed, i, spec, device))

    @final
    def judge_recomputed(self, prev: State, claimed: State, expected: State, i: int, spec: JobSpec) -> Comparison:
        """:meth:`judge` for a kernel whose :meth:`verify_step` is the default (recompute, then
        :meth:`compare`), given ``expected``, the ``step(prev)`` the caller recomputed already:
        the same schema checks, the same guarantees, ``compare(expected, claimed)`` in place of a
        second recompute. The verifier's path after a recomputed ``s_i`` whose digest is not the
        committed one (pocv.check)."""
        if type(self).verify_step is not Kernel.verify_step:
            raise TypeError(f"{type(self).__name__} has its own verify_step: judge the step with judge()")
        return self._judge(prev, claimed, i, spec, lambda: self.compare(expected, claimed, spec))

    def _compare_equal(self, expected: State, spec: JobSpec) -> Comparison | None:
        """What :meth:`compare` gives ``expected`` against a claimed state equal to it bit for bit,
        computed from ``expected`` alone; None where that cannot be said without the claimed state
        (a kernel with its own ``compare``). Engine-internal: the verifier judges a recomputed
        state that has the committed digest with it (pocv.check), so it must agree with
        ``compare`` exactly (tests/kernels/test_compare_equal.py)."""
        return Comparison(True) if type(self).compare is Kernel.compare else None

    def _judge(self, prev: State, claimed: State, i: int, spec: JobSpec,
               verify: Callable[[], Comparison]) -> Comparison:
        """judge's body: the schema of both states, then ``verify()`` under judge's guarantees."""
        for which, st in ((i - 1, prev), (i, claimed)):
            why = self.check_schema(st, spec)
            if why is not None:
                return Comparison(False, f"state {which}: {why}", bad_state=True)
        try:
            result = verify()
        except EvidenceError as e:
            return Comparison(False, str(e), bad_state=True)
        except (MemoryError, SetupError):
            raise  # the verifier's own trouble (memory, a missing artifact or calibration), not evidence
        except Exception as e:  # the engine's guarantee: a state that breaks the kernel is a FAIL
            log.error("kernel %s@%s raised %s while judging step %d; judged as a bad state",
                      self.name, self.version, type(e).__name__, i, exc_info=True)
            why = str(e).splitlines()[0][:200] if str(e) else ""
            return Comparison(False, f"the kernel cannot judge these states: {type(e).__name__}: {why}".rstrip(": "),
                              bad_state=True)
        if not isinstance(result, Comparison):  # a plugin kernel's bug: never a silent PASS
            log.error("kernel %s@%s returned %r from verify_step, not a Comparison", self.name, self.version,
                      type(result).__name__)
            return Comparison(False, f"the kernel's verify_step returned {type(result).__name__}, not a Comparison",
                              bad_state=True)
        return result

    def verify_steps(self, items: Sequence[tuple[State, State, int]], spec: JobSpec,
                     device: str = "cpu") -> list[Comparison]:
        """Judge several steps of one response at once (default: :meth:`verify_step` each).
        Kernels whose check amortizes over steps (hf-causal-lm: one forward pass for every
        challenged position) override it; :meth:`judge_many` is the only caller."""
        return [self.verify_step(p, c, i, spec, device) for p, c, i in items]

    @final
    def judge_many(self, items: Sequence[tuple[State, State, int]], spec: JobSpec,
                   device: str = "cpu") -> list[Comparison]:
        """:meth:`judge` for several steps, one :class:`Comparison` per item in order, with
        judge's guarantees: the schema first (a failing step is ``bad_state`` and is not passed
        on), then :meth:`verify_steps` on the rest. If verify_steps raises or returns anything but
        one Comparison per step, every step of the call is judged again one by one with
        :meth:`judge`, so one hostile state cannot turn the others' verdicts (MemoryError and
        SetupError pass: the verifier's own trouble)."""
        out: list[Comparison | None] = [None] * len(items)
        rest: list[int] = []
        for k, (prev, claimed, i) in enumerate(items):
            for which, st in ((i - 1, prev), (i, claimed)):
                why = self.check_schema(st, spec)
                if why is not None:
                    out[k] = Comparison(False, f"state {which}: {why}", bad_state=True)
                    break
            else:
                rest.append(k)
        if rest:
            try:
                got = list(self.verify_steps([items[k] for k in rest], spec, device))
                if len(got) != len(rest) or not all(isinstance(c, Comparison) for c in got):
                    raise TypeError(f"verify_steps must return one Comparison per step ({len(rest)}), "
                                    f"got {len(got)} items")
            except (MemoryError, SetupError):
                raise
            except Exception:  # judged again one step at a time: judge() turns each failure into a FAIL
                log.warning("kernel %s@%s: verify_steps failed; judging one step at a time", self.name,
                            self.version, exc_info=True)
                got = [self.judge(items[k][0], items[k][1], items[k][2], spec, device) for k in rest]
            for k, c in zip(rest, got, strict=True):
                out[k] = c
        return [c for c in out if c is not None]

    def check_limits(self, spec: JobSpec) -> None:
        """Refuse (SpecError, sizes in the message) a job no honest worker can answer: a state
        over MAX_STATE_BYTES, or an honest answer at the default p and f over MAX_BUNDLE_BYTES.
        :func:`pocv.kernels.resolve_spec` calls this; the bounds are the parser's (pocv.bundle)."""
        state = encoded_size(self.schema(spec))
        if state > MAX_STATE_BYTES:
            raise SpecError(f"{self.name}@{self.version} with {dict(spec.params)} has states of {state:,} bytes; "
                            f"a state is at most {MAX_STATE_BYTES:,} bytes")
        if spec.sample_chunks and not self.samples_chunks():
            raise SpecError(f"{self.name}@{self.version} compares whole states ({self.mode} mode): a job of it cannot "
                            f"ask for sample_chunks = {spec.sample_chunks}")
        k = min(sample_size(DEFAULT_CONFIDENCE, DEFAULT_CHEAT_FRACTION), spec.steps)
        need = answer_bytes_bound(k, state, spec.steps + 1)
        if need > MAX_BUNDLE_BYTES:
            raise SpecError(f"{self.name}@{self.version} with {dict(spec.params)}: an honest answer to a "
                            f"challenge at p = {DEFAULT_CONFIDENCE}, f = {DEFAULT_CHEAT_FRACTION} (k = {k}) "
                            f"opens {min(2 * k + 1, spec.steps + 1)} states of {state:,} bytes, up to {need:,} "
                            f"bytes; a response is at most {MAX_BUNDLE_BYTES:,} bytes")

    def samples_chunks(self) -> bool:
        """Whether a job of this kernel may ask to compare s_i on a sample of its chunks
        (``JobSpec.sample_chunks``, docs/protocol.md §8.1): only where the comparison is element
        by element, so the chunks not sampled, taken from the verifier's own s_i, cannot
        change the judgement of those that were (pocv.kernels.ToleranceKernel decides)."""
        return False

    @final
    def judge_chunks(self, prev: State, chunks: Mapping[int, bytes], i: int, spec: JobSpec,
                     device: str = "cpu") -> Comparison:
        """Step ``i`` judged on a sample of ``s_i``'s chunks: ``chunks`` maps chunk index ->
        the claimed chunk's bytes (their proofs already checked against the committed leaf).
        The verifier recomputes its own ``s_i``, puts the claimed chunks in place of its own
        and compares the result with :meth:`compare`; with :meth:`judge`'s guarantees (a state
        that breaks the kernel is ``bad_state``, never an exception)."""
        if not self.samples_chunks():
            return Comparison(False, f"{self.name} compares whole states, not chunk samples", bad_state=True)
        why = self.check_schema(prev, spec)
        if why is not None:
            return Comparison(False, f"state {i - 1}: {why}", bad_state=True)
        try:
            expected = self.step(prev, i, spec, device)
            layout = ChunkLayout.from_schema(self.schema(spec))
            spliced = bytearray(encode_state(expected))
            for index, data in chunks.items():
                _, offset, length = layout.chunks[index]
                if len(data) != length:
                    return Comparison(False, f"chunk {index} has {len(data)} bytes, expected {length}", bad_state=True)
                spliced[offset : offset + length] = data
            claimed = decode_state(spliced)
            result = self.compare(expected, claimed, spec)
        except EvidenceError as e:
            return Comparison(False, str(e), bad_state=True)
        except (MemoryError, SetupError):
            raise
        except Exception as e:  # the engine's guarantee: a state that breaks the kernel is a FAIL
            log.error("kernel %s@%s raised %s while judging step %d by chunks; judged as a bad state",
                      self.name, self.version, type(e).__name__, i, exc_info=True)
            return Comparison(False, f"the kernel cannot judge these chunks: {type(e).__name__}", bad_state=True)
        return result

    def check_schema(self, state: State, spec: JobSpec) -> str | None:
        """None if ``state`` has exactly the expected names, dtypes and shapes, else why not."""
        want = self.schema(spec)
        got = state_schema(state)
        if want == got:
            return None
        for name in sorted(set(want) | set(got)):
            if want.get(name) != got.get(name):
                return f"tensor {name!r}: expected {want.get(name)}, got {got.get(name)}"
        return "schema differs"  # pragma: no cover

    def check_schemas(self, prev: State, claimed: State, spec: JobSpec) -> str | None:
        """None if both states of a step match the schema, else which one and why not."""
        for what, st in (("claimed", claimed), ("previous", prev)):
            why = self.check_schema(st, spec)
            if why is not None:
                return f"{what} state: {why}"
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "mode": self.mode,
            "summary": self.summary,
            "params": {k: p.describe() for k, p in self.declared_params().items()},
            "devices": list(self.devices),
            "provider": self.provider,
        }
