"""Shared machinery of tolerance-mode kernels: the per-element bound and its calibration hooks.

A tolerance kernel accepts a claimed float tensor ``c`` against the verifier's recomputed ``e``
when, for every element (docs/protocol.md §3)::

    |c - e| <= tau * u * scale + floor          u = 2^-24 (float32 unit roundoff)

``scale`` is kernel-specific (the magnitudes the computation of that element involved, derived
from the recomputed state only, never from the claimed one: a cheater must not be able to widen
its own bound). ``tau`` and ``floor`` are class constants and part of the kernel version.
Integer tensors (cursors, tokens) are compared exactly. A claimed NaN or infinity is refused.

Kernels also expose their honest alternative implementations (other thread counts, op orders,
a float64 reference) and their precision downgrades (bf16, fp16, TF32 emulated), which
:mod:`pocv.kernels.calibrate` and the tests use to measure the bound.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import numpy as np
import torch

from pocv.encoding import State, Tensor, dtype_name
from pocv.kernels._util import as_numpy
from pocv.kernels.base import Comparison, Kernel

if TYPE_CHECKING:
    from pocv.jobs import JobSpec

U32: Final = 2.0**-24  # unit roundoff of float32 (round to nearest)

StepFn = Callable[[State, int, "JobSpec"], dict[str, Tensor]]
_FLOAT_DTYPES: Final = frozenset({"float16", "bfloat16", "float32", "float64"})


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is); restore afterwards."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32 (10 explicit mantissa bits, nearest-even), as tensor cores read it."""
    bits = x.contiguous().view(torch.int32)
    lsb = (bits >> 13) & 1
    out = (bits + 0x0FFF + lsb) & ~0x1FFF
    return out.view(torch.float32)


class ToleranceKernel(Kernel):
    """A kernel compared within ``tau * u * scale + floor`` per float element."""

    mode = "tolerance"
    #: calibrated multiple of u (see the kernel's docstring for the measurement)
    tau: ClassVar[float]
    #: absolute slack, for elements whose scale is (near) zero
    floor: ClassVar[float]

    #: a subclass that overrides verify_step with a cheaper check of the same rule (Freivalds)
    #: declares this in its own class body to allow chunk samples (:meth:`samples_chunks`)
    chunk_sampling: ClassVar[bool] = False

    def samples_chunks(self) -> bool:
        """Chunk samples are judged by :meth:`compare`, element by element: allowed when that
        is this kernel's rule, i.e. it keeps this class's ``compare`` and either the default
        ``verify_step`` (recompute and compare) or declares :attr:`chunk_sampling` in its own
        class body (a cheaper check of the same rule). hf-causal-lm, whose rule is its own, does not."""
        cls = type(self)
        if cls.compare is not ToleranceKernel.compare:
            return False
        return cls.verify_step is Kernel.verify_step or cls.__dict__.get("chunk_sampling", False) is True

    def bound(self, spec: JobSpec) -> tuple[float, float]:
        """(tau, floor) for ``spec``: the class constants, part of the kernel version. Kernels whose
        bound comes from a calibration record the job references override this (and raise
        NotCalibrated when the job names none)."""
        return self.tau, self.floor

    def tau_for(self, name: str, spec: JobSpec) -> float:
        """tau for state tensor ``name`` (default: one tau for the whole state)."""
        return self.bound(spec)[0]

    @abstractmethod
    def scales(self, expected: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        """name -> float64 array of per-element scales, for every float tensor of the state."""

    def honest_variants(self) -> dict[str, StepFn]:
        """Alternative honest implementations (name -> step function) for calibration."""
        return {}

    def downgrade_variants(self) -> dict[str, StepFn]:
        """Precision downgrades (bf16, fp16, TF32 emulated) that the bound must catch."""
        return {}

    def ratios(self, expected: State, claimed: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        """Per float element ``|c - e| / (u * scale)``: the tau that element needs (floor aside)."""
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name, scale in self.scales(expected, spec).items():
            e = as_numpy(expected[name]).astype(np.float64)
            c = as_numpy(claimed[name]).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.abs(c - e) / (U32 * scale)
            out[name] = np.where(c == e, 0.0, r)
        return out

    def scales_of(self, expected: State, names: Sequence[str], spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        """The scales (:meth:`scales`) that :meth:`compare` needs: those of the float tensors
        ``names``, the ones that differ from the recomputed state (a tensor equal to it needs no
        bound). The default computes every scale; a kernel whose scale of a tensor depends on that
        tensor alone computes only these. Must give the same arrays as :meth:`scales`."""
        return self.scales(expected, spec)

    def _compare_equal(self, expected: State, spec: JobSpec) -> Comparison | None:
        """:meth:`compare` of ``expected`` against a claimed state equal to it bit for bit, from
        ``expected`` alone (see Kernel._compare_equal): the bound is asked for first, as compare
        does (NotCalibrated without one), then every float tensor must be finite (in name order:
        the first that is not is named, as compare names it). None for a kernel with its own
        ``compare``."""
        if type(self).compare is not ToleranceKernel.compare:
            return None
        floats = [name for name in sorted(expected) if dtype_name(expected[name]) in _FLOAT_DTYPES]
        self.bound(spec)
        for name in floats:
            self.tau_for(name, spec)
        for name in floats:
            if not np.isfinite(as_numpy(expected[name])).all():
                return Comparison(False, f"tensor {name!r} holds NaN or infinity")
        return Comparison(True, worst_ratio=0.0)

    def compare(self, expected: State, claimed: State, spec: JobSpec) -> Comparison:
        """The bound, element by element, with the exact result of evaluating it in float64:
        a float tensor equal to the recomputed one element for element passes at once (each
        ``|c - e|`` is 0; it must still be finite), and only the others are converted to float64
        and bounded. An element whose bound cannot be evaluated (a NaN scale, or 0 / 0 where a
        kernel has no floor) counts as equal when ``c == e`` and as outside the bound otherwise."""
        if set(expected) != set(claimed):
            return Comparison(False, f"tensor names: expected {sorted(expected)}, got {sorted(claimed)}")
        floats: list[str] = []
        for name in sorted(expected):
            e_t, c_t = expected[name], claimed[name]
            de, dc = dtype_name(e_t), dtype_name(c_t)
            if de != dc or tuple(e_t.shape) != tuple(c_t.shape):
                return Comparison(False, f"tensor {name!r}: expected {de}{tuple(e_t.shape)}, "
                                         f"got {dc}{tuple(c_t.shape)}")
            if de in _FLOAT_DTYPES:
                floats.append(name)
                continue
            if not np.array_equal(as_numpy(e_t), as_numpy(c_t)):
                return Comparison(False, f"integer tensor {name!r} differs from the recomputed one")
        # first: a kernel without its bound judges nothing (NotCalibrated), equal tensors included
        _, floor = self.bound(spec)
        taus = {name: self.tau_for(name, spec) for name in floats}
        arrays = {name: (as_numpy(expected[name]), as_numpy(claimed[name])) for name in floats}
        fin_c = {name: bool(np.isfinite(c).all()) for name, (_, c) in arrays.items()}
        equal = {name: bool(np.array_equal(e, c)) for name, (e, c) in arrays.items()}
        if all(equal.values()) and all(fin_c.values()):
            return Comparison(True, worst_ratio=0.0)  # the common honest case: every |c - e| is 0
        differing = [name for name in floats if not equal[name]]
        scales = self.scales_of(expected, differing, spec) if differing else {}
        worst = 0.0
        for name in floats:
            if not fin_c[name]:
                return Comparison(False, f"tensor {name!r} holds NaN or infinity")
            if equal[name]:  # every |c - e| is 0: within any bound (and e, equal to a finite c, is finite)
                continue
            e32, c32 = arrays[name]
            if not np.isfinite(e32).all():
                return Comparison(False, f"recomputed tensor {name!r} is not finite (diverged job)")
            if name not in scales:
                return Comparison(False, f"tensor {name!r} differs (no tolerance declared for it)")
            if not e32.size:
                continue
            tau = taus[name]
            # |c - e| / (tau u scale + floor) in float64, computed in place (the same operations,
            # element by element, as the expressions; fewer passes over memory)
            diff = c32.astype(np.float64)
            np.subtract(diff, e32.astype(np.float64), out=diff)
            np.abs(diff, out=diff)
            bound = np.multiply(scales[name], tau * U32)  # (tau u) scale, a new array
            np.add(bound, floor, out=bound)
            with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 and NaN scales: below
                in_place = bound.shape == diff.shape and bound.dtype == np.float64
                ratio = np.divide(diff, bound, out=bound) if in_place else diff / bound
            k = int(np.argmax(ratio))
            r = float(ratio.reshape(-1)[k])
            if r != r:  # NaN: 0 / 0 is an equal element, any other NaN (a NaN scale) cannot be bounded
                ratio = _ratios(diff, tau * U32 * scales[name] + floor)
                k = int(np.argmax(ratio))
                r = float(ratio.reshape(-1)[k])
            worst = max(worst, r)
            if r > 1.0:
                idx = [int(j) for j in np.unravel_index(k, e32.shape)] if e32.ndim else []
                b = np.broadcast_to(tau * U32 * scales[name] + floor, e32.shape).reshape(-1)[k]
                return Comparison(
                    False,
                    f"tensor {name!r}{idx}: |claimed - recomputed| = "
                    f"{diff.reshape(-1)[k]:.3e} exceeds the bound {b:.3e} "
                    f"(tau={tau:g}, {int((ratio > 1.0).sum())} elements outside)",
                    worst_ratio=r,
                )
        return Comparison(True, worst_ratio=worst)


def _ratios(diff: np.ndarray[Any, Any], bound: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``diff / bound`` element by element; 0 / 0 is an equal element (0), any other NaN (a NaN
    scale) cannot be bounded (infinity)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio: np.ndarray[Any, Any] = diff / bound
    nan = np.isnan(ratio)
    if nan.any():
        ratio = np.where(nan, np.where(diff == 0.0, 0.0, np.inf), ratio)
    return ratio
