"""The PyTorch training adapter: verify a user's own training job (docs/kernels.md §4).

Subclass :class:`TorchTraining`, give the kernel a name, a version and a summary, and define::

    def model(self, spec) -> torch.nn.Module     # the architecture (pocv sets the weights)
    def loss(self, output, target) -> Tensor     # mean over the batch (default: cross entropy)
    def synthetic(self, spec, start, n) -> (x, y)   # optional: seeded data; else the `data` artifact

and the engine does the rest. A step is one optimizer step over ``batch`` samples in
``micro_batches`` micro-batches (gradient accumulation). The state is the parameters
(``param.<name>``), the optimizer state (``sgd.momentum.<name>``, or ``adamw.exp_avg.<name>`` and
``adamw.exp_avg_sq.<name>``), the model's float buffers (``buffer.<name>``) and the data cursor
(``cursor``, samples consumed, compared exactly). Hyper-parameters are typed parameters of the
job (:data:`TRAINING_PARAMS`), so they are part of the job id:

* ``optimizer`` sgd | adamw; ``lr``; ``momentum`` (SGD, PyTorch's form, no dampening);
  ``weight_decay`` (SGD: L2 added to the gradient; AdamW: decoupled); ``beta1``, ``beta2``, ``eps``;
* ``batch``, ``micro_batches``;
* ``data``: a data-set artifact (safetensors with tensors ``x`` and ``y``, first axis = samples);
  the order of samples is a permutation per epoch derived from the job seed (BLAKE3, portable);
* ``weights``: initial weights (safetensors, names as ``model.state_dict()``), else the weights
  are drawn from the job seed on an exact dyadic grid (uniform in +-1/sqrt(fan_in), biases 0),
  the same bits on every machine;
* ``calibration``: the calibration record (``pocv calibrate``) that fixes the bound. A job
  without one runs, but is not judged: :class:`~pocv.errors.NotCalibrated`.

The optimizer updates are written out here (the formulas of ``torch.optim.SGD`` and
``torch.optim.AdamW``, single-tensor form; the tests check them against torch.optim).

Tolerance: every float element is accepted when ``|c - e| <= tau_g * u * (|e| + rms(e)) + floor``
with the recomputed ``e``, per tensor group ``g`` (``param``, ``sgd``, ``adamw``, ``buffer``): the
record gives ``tau_g``, calibrated from honest variants (1 and N threads, micro-batches split in
two, oneDNN off, a float64 reference, every CUDA device) against precision downgrades (bf16 and
fp16 autocast, TF32 emulated) and the attacks the tests make (a learning rate 1% off, weight
decay dropped).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from pocv.encoding import State, Tensor
from pocv.errors import ArtifactError, NotCalibrated, SpecError, StateError
from pocv.jobs import JobSpec
from pocv.kernels._tolerance import StepFn, ToleranceKernel, round_tf32, torch_threads
from pocv.kernels._util import as_numpy, seeded_bytes, strict_fp32
from pocv.kernels.base import Schema
from pocv.kernels.params import Artifact, Enum, Float, Int, Param, artifact_bytes

_INIT_CONTEXT: Final = "pocv 2026-11 torch-training v1 init"
_ORDER_CONTEXT: Final = "pocv 2026-11 torch-training v1 order"
FLOOR: Final = 2.0**-100
RECORD_TYPE: Final = "pocv calibration record"
_CACHE: Final = 8
#: a module's construction draws from torch's global RNG (reseeded, then restored): one at a time
_BUILD_LOCK: Final = threading.Lock()

#: the hyper-parameters every training kernel has (a subclass changes defaults with ``defaults``)
TRAINING_PARAMS: Final[dict[str, Param]] = {
    "optimizer": Enum("sgd", ("sgd", "adamw")),
    "lr": Float(0.01, 0.0, 10.0),
    "momentum": Float(0.9, 0.0, 0.9999),
    "weight_decay": Float(0.0, 0.0, 1.0),
    "beta1": Float(0.9, 0.0, 0.9999),
    "beta2": Float(0.999, 0.0, 0.999999),
    "eps": Float(1e-8, 1e-12, 1.0),
    "batch": Int(32, 1, 65536),
    "micro_batches": Int(1, 1, 256),
    "data": Artifact(what="data set: safetensors with tensors x and y"),
    "weights": Artifact(what="initial weights: safetensors, names as model.state_dict()"),
    "calibration": Artifact(what="calibration record: pocv calibrate KERNEL --add"),
}


def group_of(name: str) -> str:
    """The tolerance group of a state tensor: the part of its name before the first dot."""
    return name.split(".", 1)[0]


@dataclasses.dataclass(frozen=True)
class Variant:
    """How one step is computed: the honest default, an honest alternative, a downgrade or an
    attack (the tests' cheating workers). Only the default defines the job."""

    threads: int | None = None
    split: bool = False  # each micro-batch's gradient as the weighted sum of its two halves
    mkldnn: bool = True
    dtype: torch.dtype = torch.float32  # float64: the reference
    autocast: torch.dtype | None = None  # bf16 / fp16 downgrades
    tf32: bool = False  # products' inputs rounded to TF32 (forward)
    data_cursor_offset: int = 0  # attack: another step's batch
    data_seed: int | None = None  # attack: other data (another permutation / synthetic seed)
    lr_scale: float = 1.0  # attack: learning rate off
    drop_weight_decay: bool = False  # attack


class _TF32(TorchFunctionMode):
    """Round the inputs of matrix products and convolutions to TF32 (straight-through for grads)."""

    _OPS: ClassVar[set[Any]] = {torch.nn.functional.linear, torch.nn.functional.conv1d,
                                torch.nn.functional.conv2d, torch.nn.functional.conv3d, torch.matmul,
                                torch.mm, torch.bmm, torch.addmm, torch.Tensor.__matmul__}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in self._OPS:
            args = tuple(_st_tf32(a) if isinstance(a, torch.Tensor) and a.dtype == torch.float32 else a
                         for a in args)
        return func(*args, **kwargs)


def _st_tf32(x: torch.Tensor) -> torch.Tensor:
    return x + (round_tf32(x.detach()) - x).detach()


class TorchTraining(ToleranceKernel):
    """Base class of a PyTorch training kernel (module docstring). Subclasses set ``name``,
    ``version``, ``summary``; optionally ``params`` (their own typed parameters), ``defaults``
    (other defaults for the training hyper-parameters) and ``devices``; and define
    :meth:`model`, optionally :meth:`loss` and :meth:`synthetic`."""

    mode = "tolerance"
    tau: ClassVar[float] = math.nan  # from the calibration record, never guessed
    floor: ClassVar[float] = FLOOR
    #: other defaults for TRAINING_PARAMS, e.g. {"lr": 0.05, "batch": 64}
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: calibrate() asks the record's kernels to derive tau per group instead of using ``tau``
    calibrated_by_record: ClassVar[bool] = True
    # The adapter's own step never writes its input state: every update makes a new tensor, the
    # float buffers are copied before functional_call sees them (a BatchNorm run in training mode
    # updates its running statistics in place), and each thread steps its own copy of the module
    # (functional_call swaps the module's tensors while it runs). A subclass whose model and loss
    # keep that promise too (no in-place write to a parameter or buffer, no ``.data`` writes)
    # declares ``pure_step = True`` in its own body (Kernel.pure_step): then the prover commits
    # each state while the next one computes without copying it, and prover and verifier
    # recompute challenged steps on several threads at once. Not declared here: the model is the
    # subclass's.

    def __init__(self) -> None:
        self._models: dict[bytes, torch.nn.Module] = {}
        #: (job key, thread) -> the module that thread's steps reparametrize (_stepping_module)
        self._step_models: dict[tuple[bytes, int], torch.nn.Module] = {}
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._orders: dict[tuple[int, int, int], np.ndarray[Any, Any]] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._weights: dict[str, dict[str, torch.Tensor]] = {}
        # per job (its canonical JSON): the schema and the typed parameters, asked for at every
        # step and every check of a state; and the last spec seen with its key (a JobSpec is
        # immutable: its params are a read-only copy)
        self._schemas: dict[bytes, Schema] = {}
        self._typed: dict[bytes, dict[str, Any]] = {}
        self._last: tuple[JobSpec, bytes] | None = None

    # -- what a user defines ------------------------------------------------------------------

    def model(self, spec: JobSpec) -> torch.nn.Module:
        """The architecture, a ``torch.nn.Module`` (its initial weights are pocv's, see above)."""
        raise NotImplementedError(f"{type(self).__name__} must define model(spec)")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one micro-batch, a mean over its samples. Default: cross entropy."""
        return torch.nn.functional.cross_entropy(output, target)

    def synthetic(self, spec: JobSpec, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start .. start+n-1`` of a seeded synthetic data set (x, y) on the CPU, the same
        bits on every machine (use :func:`pocv.kernels._util.seeded_bytes`). Kernels that train on
        a ``data`` artifact do not define it."""
        raise NotImplementedError

    # -- parameters ---------------------------------------------------------------------------

    @classmethod
    def declared_params(cls) -> dict[str, Param]:
        out: dict[str, Param] = {}
        for k, p in TRAINING_PARAMS.items():
            if k in cls.defaults:
                p = dataclasses.replace(p, default=cls.defaults[k])  # type: ignore[call-arg]
            out[k] = p
        if not cls.has_synthetic():
            out["data"] = dataclasses.replace(TRAINING_PARAMS["data"], required=True)  # type: ignore[call-arg]
        out.update(super().declared_params())
        return out

    @classmethod
    def has_synthetic(cls) -> bool:
        return cls.synthetic is not TorchTraining.synthetic

    def _samples_per_step(self, spec: JobSpec) -> int:
        return int(spec.params["batch"]) * int(spec.params["micro_batches"])

    # -- the model, its parameters and the state layout ------------------------------------------

    def _key(self, spec: JobSpec) -> bytes:
        """What the caches are keyed by: the spec's canonical JSON (its parameters if unresolved)."""
        last = self._last
        if last is not None and last[0] is spec:
            return last[1]
        key = spec.canonical_json() if spec.resolved else repr(sorted(spec.params.items())).encode()
        self._last = (spec, key)
        return key

    def typed(self, spec: JobSpec) -> dict[str, Any]:
        key = self._key(spec)
        out = self._typed.get(key)
        if out is None:
            out = super().typed(spec)
            if len(self._typed) >= _CACHE:
                self._typed.clear()
            self._typed[key] = out
        return dict(out)

    def _module(self, spec: JobSpec) -> torch.nn.Module:
        key = self._key(spec)
        m = self._models.get(key)
        if m is None:
            with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # whatever the factory draws is replaced by pocv's weights
                m = self.model(spec)
            if not isinstance(m, torch.nn.Module):
                raise SpecError(f"{self.name}.model() must return a torch.nn.Module, got {type(m).__name__}")
            m = m.float().eval().requires_grad_(False)
            if len(self._models) >= _CACHE:
                self._models.clear()
            self._models[key] = m
        return m

    def _stepping_module(self, spec: JobSpec) -> torch.nn.Module:
        """The module this thread's steps hand to ``functional_call``, which swaps the module's
        tensors for the state's while it runs: a copy of :meth:`_module` per thread, so steps on
        several threads at once (respond workers, a verifier's) never see each other's tensors."""
        key = (self._key(spec), threading.get_ident())
        m = self._step_models.get(key)
        if m is None:
            m = copy.deepcopy(self._module(spec))
            if len(self._step_models) >= 4 * _CACHE:
                self._step_models.clear()
            self._step_models[key] = m
        return m

    def _float_buffers(self, m: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: b for n, b in m.named_buffers() if b.dtype.is_floating_point}

    def schema(self, spec: JobSpec) -> Schema:
        key = self._key(spec)
        cached = self._schemas.get(key)
        if cached is None:
            cached = self._schema(spec)
            if len(self._schemas) >= _CACHE:
                self._schemas.clear()
            self._schemas[key] = cached
        return dict(cached)

    def _schema(self, spec: JobSpec) -> Schema:
        m = self._module(spec)
        out: Schema = {"cursor": ("int64", ())}
        opt = spec.params["optimizer"]
        for n, p in m.named_parameters():
            shape = tuple(p.shape)
            out[f"param.{n}"] = ("float32", shape)
            if opt == "sgd" and float(spec.params["momentum"]) > 0:
                out[f"sgd.momentum.{n}"] = ("float32", shape)
            elif opt == "adamw":
                out[f"adamw.exp_avg.{n}"] = ("float32", shape)
                out[f"adamw.exp_avg_sq.{n}"] = ("float32", shape)
        for n, b in self._float_buffers(m).items():
            out[f"buffer.{n}"] = ("float32", tuple(b.shape))
        return out

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        m = self._module(spec)
        ref = str(spec.params.get("weights") or "")
        given = self._load_weights(ref) if ref else {}
        params: dict[str, torch.Tensor] = {}
        for k, (n, p) in enumerate(m.named_parameters()):
            if ref:
                params[n] = self._given(given, n, tuple(p.shape), ref)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                e = max(0, math.ceil(math.log2(math.sqrt(fan_in))))  # uniform(-1,1) * 2^-e
                raw = np.frombuffer(seeded_bytes(_INIT_CONTEXT, spec.seed, k, length=2 * p.numel()), "<u2")
                w = (raw.astype(np.float32) - np.float32(32768.0)) * np.float32(2.0 ** -(15 + e))
                params[n] = torch.from_numpy(w.reshape(p.shape).copy())
            else:
                params[n] = torch.zeros(p.shape, dtype=torch.float32)
        out: dict[str, torch.Tensor] = {"cursor": torch.zeros((), dtype=torch.int64)}
        for name, (_dtype, shape) in self.schema(spec).items():
            if name.startswith("param."):
                out[name] = params[name[len("param."):]]
            elif name.startswith("buffer."):
                b = self._float_buffers(m)[name[len("buffer."):]]
                out[name] = self._given(given, name[len("buffer."):], shape, ref) if ref else b.detach().clone()
            elif name != "cursor":
                out[name] = torch.zeros(shape, dtype=torch.float32)
        return {k: v.to(device) for k, v in out.items()}

    def _given(self, given: dict[str, torch.Tensor], n: str, shape: tuple[int, ...], ref: str) -> torch.Tensor:
        t = given.get(n)
        if t is None or tuple(t.shape) != shape:
            got = None if t is None else tuple(t.shape)
            raise SpecError(f"weights artifact {ref}: tensor {n!r} must have shape {shape}, got {got}")
        return t.to(torch.float32).contiguous()

    def _load_weights(self, ref: str) -> dict[str, torch.Tensor]:
        if ref not in self._weights:
            self._weights[ref] = _safetensors(ref)
        return self._weights[ref]

    # -- data ---------------------------------------------------------------------------------

    def _dataset(self, ref: str) -> tuple[torch.Tensor, torch.Tensor]:
        if ref not in self._data:
            t = _safetensors(ref)
            if set(t) != {"x", "y"} or t["x"].shape[0] != t["y"].shape[0] or t["x"].shape[0] < 1:
                raise ArtifactError(f"data set artifact {ref} must hold tensors x and y with the same first "
                                    f"dimension, got {({k: tuple(v.shape) for k, v in t.items()})}")
            if len(self._data) >= _CACHE:
                self._data.clear()
            self._data[ref] = (t["x"], t["y"])
        return self._data[ref]

    def _order(self, seed: int, epoch: int, n: int) -> np.ndarray[Any, Any]:
        """The permutation of the data set's ``n`` samples in ``epoch``: by BLAKE3 keys of (seed, epoch)."""
        key = (seed, epoch, n)
        order = self._orders.get(key)
        if order is None:
            keys = np.frombuffer(seeded_bytes(_ORDER_CONTEXT, seed, epoch, n, length=8 * n), "<u8")
            order = np.argsort(keys, kind="stable")
            if len(self._orders) >= 64:
                self._orders.clear()
            self._orders[key] = order
        return order

    def samples(self, spec: JobSpec, start: int, n: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start .. start+n-1`` of the job's stream (CPU): the data set in its seed-derived
        order, epoch after epoch, or the kernel's synthetic data."""
        seed = spec.seed if seed is None else seed
        ref = str(spec.params.get("data") or "")
        if not ref:
            if not self.has_synthetic():
                raise SpecError(f"kernel {self.name} trains on a data set: the job must name a data artifact")
            job = spec if seed == spec.seed else dataclasses.replace(spec, seed=seed)
            return self.synthetic(job, start, n)
        x, y = self._dataset(ref)
        size = int(x.shape[0])
        pos = np.arange(start, start + n, dtype=np.int64)
        idx = np.empty(n, dtype=np.int64)
        for epoch in np.unique(pos // size):
            sel = (pos // size) == epoch
            idx[sel] = self._order(seed, int(epoch), size)[pos[sel] % size]
        ti = torch.from_numpy(idx)
        return x[ti], y[ti]

    # -- the step -----------------------------------------------------------------------------

    def _cursor(self, state: State, i: int, spec: JobSpec) -> int:
        want = (i - 1) * self._samples_per_step(spec)
        c = state.get("cursor")
        got = int(as_numpy(c).reshape(-1)[0]) if c is not None else None
        if got != want:
            raise StateError(f"{self.name} state before step {i}: expected cursor {want}, got {got}")
        return want

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        return self.step_with(state, i, spec, device)

    def step_with(self, state: State, i: int, spec: JobSpec, device: str = "cpu",
                  variant: Variant = Variant()) -> dict[str, Tensor]:
        """Step ``i`` computed the way ``variant`` says (the default: the job's definition)."""
        with contextlib.ExitStack() as stack:
            if device.startswith("cuda"):
                stack.enter_context(strict_fp32())
            stack.enter_context(torch_threads(variant.threads))
            if not variant.mkldnn:
                stack.enter_context(warnings.catch_warnings())
                warnings.simplefilter("ignore", UserWarning)  # torch warns of Intel GPUs' TF32 here
                stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
            if variant.tf32:
                stack.enter_context(_TF32())
            return self._train(state, i, spec, device, variant)

    def _train(self, state: State, i: int, spec: JobSpec, device: str, v: Variant) -> dict[str, Tensor]:
        P = self.typed(spec)
        cursor = self._cursor(state, i, spec)
        m = self._stepping_module(spec)
        dt = v.dtype
        names = [n for n, _ in m.named_parameters()]
        params = {n: torch.as_tensor(state[f"param.{n}"]).to(device, dt) for n in names}
        # copies: a BatchNorm in training mode updates its running statistics in place
        buffers = {n: torch.as_tensor(state[f"buffer.{n}"]).to(device, dt, copy=True) for n in self._float_buffers(m)}
        if dt != torch.float32 or device != "cpu":
            m = _copy_module(m, dt, device)
        B, M = int(P["batch"]), int(P["micro_batches"])
        x_all, y_all = self.samples(spec, cursor + v.data_cursor_offset, B * M, v.data_seed)
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        grads = {n: torch.zeros_like(p) for n, p in params.items()}
        for mb in range(M):
            xs, ys = x_all[mb * B:(mb + 1) * B], y_all[mb * B:(mb + 1) * B]
            parts = [(xs[: B // 2], ys[: B // 2]), (xs[B // 2:], ys[B // 2:])] if v.split and B > 1 else [(xs, ys)]
            for xp, yp in parts:
                xp = xp.to(device, dt) if xp.dtype.is_floating_point else xp.to(device)
                yp = yp.to(device, dt) if yp.dtype.is_floating_point else yp.to(device)
                with (torch.autocast(device.split(":")[0], dtype=v.autocast) if v.autocast is not None
                      else contextlib.nullcontext()):
                    out = torch.func.functional_call(m, {**leaves, **buffers}, (xp,))
                    loss = self.loss(out, yp)
                gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                w = (xp.shape[0] / B) / M
                for n, gn in zip(names, gs):
                    if gn is not None:
                        grads[n] = grads[n] + gn.to(dt) * w if w != 1.0 else grads[n] + gn.to(dt)
        lr = P["lr"] * v.lr_scale
        wd = 0.0 if v.drop_weight_decay else P["weight_decay"]
        out_state: dict[str, torch.Tensor] = {}
        t = i  # the optimizer's step count (AdamW's bias correction)
        for n in names:
            p, g = params[n], grads[n]
            if P["optimizer"] == "sgd":
                if wd:
                    g = g + wd * p
                mu = P["momentum"]
                if mu > 0:
                    buf = torch.as_tensor(state[f"sgd.momentum.{n}"]).to(device, dt)
                    buf = buf * mu + g  # torch.optim.SGD: buf = g at the first step (buf is 0 then)
                    out_state[f"sgd.momentum.{n}"] = buf
                    g = buf
                p = p - lr * g
            else:
                b1, b2, eps = P["beta1"], P["beta2"], P["eps"]
                m1 = torch.as_tensor(state[f"adamw.exp_avg.{n}"]).to(device, dt)
                m2 = torch.as_tensor(state[f"adamw.exp_avg_sq.{n}"]).to(device, dt)
                p = p * (1 - lr * wd)
                m1 = m1.lerp(g, 1 - b1)
                m2 = m2 * b2 + (1 - b2) * g * g
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                denom = (m2.sqrt() / math.sqrt(bc2)) + eps
                p = p - (lr / bc1) * (m1 / denom)
                out_state[f"adamw.exp_avg.{n}"] = m1
                out_state[f"adamw.exp_avg_sq.{n}"] = m2
            out_state[f"param.{n}"] = p
        for n, b in buffers.items():
            out_state[f"buffer.{n}"] = b
        result: dict[str, Tensor] = {k: val.detach().to(torch.float32) for k, val in out_state.items()}
        result["cursor"] = torch.tensor(cursor + B * M, dtype=torch.int64, device=device)
        return result

    # -- tolerance ----------------------------------------------------------------------------

    def scales(self, expected: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        return self.scales_of(expected, list(expected), spec)

    def scales_of(self, expected: State, names: Sequence[str], spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        """A tensor's scale is its own (|e| + rms(e)): only the ``names`` asked for are computed."""
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name in names:
            if name == "cursor":
                continue
            a = as_numpy(expected[name]).astype(np.float64)  # a copy: |e| + rms(e) is made in it
            np.abs(a, out=a)
            out[name] = np.add(a, math.sqrt(float(np.mean(a * a))) if a.size else 0.0, out=a)
        return out

    def record(self, spec: JobSpec) -> dict[str, Any]:
        """The job's calibration record (parsed, checked against this kernel); NotCalibrated without one."""
        ref = str(spec.params.get("calibration") or "")
        if not ref:
            raise NotCalibrated(f"kernel {self.name}@{self.version} takes its bound from a calibration record, and "
                                f"this job names none: run `pocv calibrate {self.name} --record` with the job's "
                                f"parameters, add the record (pocv artifact add) and set calibration=<ref>")
        rec = self._records.get(ref)
        if rec is None:
            rec = parse_record(artifact_bytes(ref), ref)
            if rec["kernel"] != f"{self.name}@{self.version}":
                raise NotCalibrated(f"calibration record {ref} is for {rec['kernel']}, not {self.name}@{self.version}")
            self._records[ref] = rec
        return rec

    def require(self, spec: JobSpec) -> None:
        super().require(spec)
        rec = self.record(spec)
        groups = {group_of(n) for n, (dt, _) in self.schema(spec).items() if dt.startswith("float")}
        missing = groups - set(rec["tau"])
        if missing:
            raise NotCalibrated(f"calibration record {spec.params['calibration']} gives no bound for the state "
                                f"groups {sorted(missing)} of this job")

    def bound(self, spec: JobSpec) -> tuple[float, float]:
        rec = self.record(spec)
        return max(rec["tau"].values()), float(rec["floor"])

    def tau_for(self, name: str, spec: JobSpec) -> float:
        tau = self.record(spec)["tau"].get(group_of(name))
        if tau is None:
            raise NotCalibrated(f"calibration record {spec.params['calibration']} gives no bound for {name!r}")
        return float(tau)

    # -- calibration --------------------------------------------------------------------------

    def honest_variants(self) -> dict[str, StepFn]:
        n = max(2, min(os.cpu_count() or 2, 16))
        table = {
            f"threads-{n}": Variant(threads=n),
            "threads-1": Variant(threads=1),
            "split-micro-batches": Variant(split=True),
            "onednn-off": Variant(mkldnn=False, threads=1),
            "float64-reference": Variant(dtype=torch.float64),
        }
        return {k: self._variant_fn(v) for k, v in table.items()}

    def downgrade_variants(self) -> dict[str, StepFn]:
        table = {
            "bf16-autocast": Variant(autocast=torch.bfloat16),
            "fp16-autocast": Variant(autocast=torch.float16),
            "tf32-emulated": Variant(tf32=True),
            "lr-1%-off": Variant(lr_scale=1.01),
        }
        return {k: self._variant_fn(v) for k, v in table.items()}

    def _variant_fn(self, v: Variant) -> StepFn:
        def fn(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
            return self.step_with(state, i, spec, "cpu", v)
        return fn


def _copy_module(m: torch.nn.Module, dtype: torch.dtype, device: str) -> torch.nn.Module:
    return copy.deepcopy(m).to(device=device, dtype=dtype)


def _safetensors(ref: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors artifact (hash-checked bytes; never pickle)."""
    from safetensors.torch import load  # the optional dependency of artifact-backed training kernels

    data = artifact_bytes(ref)
    try:
        return dict(load(data))
    except Exception as e:
        raise ArtifactError(f"artifact {ref} is not a safetensors file: {type(e).__name__}: {e}") from e


def parse_record(data: bytes, ref: str = "") -> dict[str, Any]:
    """A calibration record's JSON, checked: type, kernel, a positive finite tau per group, floor."""
    where = f"calibration record {ref}".rstrip()
    try:
        rec = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise NotCalibrated(f"{where} is not JSON: {e}") from e
    if not isinstance(rec, dict) or rec.get("type") != RECORD_TYPE or rec.get("version") != 1:
        raise NotCalibrated(f"{where} is not a pocv calibration record (type {RECORD_TYPE!r}, version 1)")
    tau, floor = rec.get("tau"), rec.get("floor")
    if (not isinstance(tau, dict) or not tau
            or not all(isinstance(k, str) and isinstance(t, int | float) and 0 < t < 1e12 for k, t in tau.items())):
        raise NotCalibrated(f"{where}: tau must map tensor groups to positive numbers, got {tau!r:.120}")
    if not isinstance(floor, int | float) or not 0 <= floor < 1:
        raise NotCalibrated(f"{where}: floor must be a number in [0, 1), got {floor!r}")
    if not isinstance(rec.get("kernel"), str):
        raise NotCalibrated(f"{where} names no kernel")
    return rec


def make_record(report: Mapping[str, Any]) -> bytes:
    """The calibration record of a :func:`pocv.kernels.calibrate.calibrate` report of a record-calibrated
    kernel: canonical JSON bytes, to add to the artifact store (its hash goes into the job)."""
    rec = {"type": RECORD_TYPE, "version": 1, **{k: v for k, v in report.items() if k not in {"type", "version"}}}
    rec["tau"] = dict(report["tau_by_group"])
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


__all__ = ["TRAINING_PARAMS", "TorchTraining", "Variant", "group_of", "make_record", "parse_record", "seeded_bytes"]
