"""Device choice, determinism settings and the accelerator fingerprint (docs/protocol.md §3, §6.2).

* :func:`deterministic` -- one context that sets everything a kernel's result depends on in
  torch (deterministic algorithms, no TF32 for matmul or cuDNN, no reduced-precision fp16/bf16
  reductions, float32 matmul precision "highest", cuDNN deterministic and not benchmarking,
  the cuBLAS workspace config, thread counts) and restores the previous settings on exit;
* :func:`environment` -- those settings and the library versions, for a commitment's
  ``environment`` field;
* :func:`fingerprint` -- static facts about the accelerator from NVML (nvidia-ml-py), or an
  explicit ``{"accelerator": "none", ...}`` CPU fingerprint where there is no NVIDIA driver
  (never an exception); hash it with ``pocv.records.meta_hash``;
* :class:`DeviceMonitor` -- dynamic samples (clocks, power, energy) over a job; empty on CPU;
* :func:`resolve_device` -- ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` to a device string.

NVML sits behind :func:`_load_nvml` so tests can substitute a simulated library.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType, TracebackType
from typing import Any, Final

import torch

from pocv.errors import InputError

#: cuBLAS workspace setting that makes its GEMMs deterministic (NVIDIA cuBLAS docs, "Results
#: reproducibility"); it must be in the environment before the process first uses cuBLAS.
CUBLAS_WORKSPACE_CONFIG: Final = ":4096:8"
MAX_THREADS: Final = 1024  # a thread count beyond this is a typo, not a machine
MONITOR_INTERVAL_S: Final = 0.5  # default sampling period of DeviceMonitor
MIN_MONITOR_INTERVAL_S: Final = 0.01  # NVML's counters update at ~ms rates; faster is noise
MAX_MONITOR_SAMPLES: Final = 100_000  # per GPU; older samples are thinned beyond this
_PACKAGES: Final = ("torch", "numpy", "numba", "numba-cuda", "blake3", "nvidia-ml-py")


# -- determinism -------------------------------------------------------------------------------


def _settings() -> dict[str, Any]:
    """The torch settings a float kernel's result depends on, as plain values."""
    matmul = torch.backends.cuda.matmul
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "matmul_allow_tf32": bool(matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_fp16_reduced_precision_reduction": bool(matmul.allow_fp16_reduced_precision_reduction),
        "matmul_allow_bf16_reduced_precision_reduction": bool(matmul.allow_bf16_reduced_precision_reduction),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "torch_threads": torch.get_num_threads(),
    }


def _set_deterministic(mode: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its 2-4 s import of torch._inductor.

    The public function sets ``torch._inductor.config.deterministic`` (importing inductor and
    dynamo to do so) and then the ATen flag. Kernels here never compile with inductor, so when it
    is not loaded only the ATen flag is set; when it is loaded, the public function runs.
    """
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    elif (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
            mode, warn_only):
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


def _apply(s: dict[str, Any]) -> None:
    matmul = torch.backends.cuda.matmul
    _set_deterministic(s["deterministic_algorithms"], s["deterministic_warn_only"])
    matmul.allow_tf32 = s["matmul_allow_tf32"]
    torch.backends.cudnn.allow_tf32 = s["cudnn_allow_tf32"]
    matmul.allow_fp16_reduced_precision_reduction = s["matmul_allow_fp16_reduced_precision_reduction"]
    matmul.allow_bf16_reduced_precision_reduction = s["matmul_allow_bf16_reduced_precision_reduction"]
    torch.set_float32_matmul_precision(s["float32_matmul_precision"])
    torch.backends.cudnn.deterministic = s["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = s["cudnn_benchmark"]
    if s["cublas_workspace_config"] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = s["cublas_workspace_config"]
    if torch.get_num_threads() != s["torch_threads"]:
        torch.set_num_threads(s["torch_threads"])


def _numba_threads(n: int | None) -> int | None:
    """Set numba's thread count if numba is already loaded (never import it just for this)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    old = int(numba.get_num_threads())
    if n is not None:
        numba.set_num_threads(max(1, min(n, int(numba.config.NUMBA_NUM_THREADS))))
    return old


@contextlib.contextmanager
def deterministic(threads: int | None = None) -> Iterator[dict[str, Any]]:
    """Run the block with every setting a result depends on fixed; restore them afterwards.

    ``threads`` (if given) sets torch's intra-op threads and, when numba is loaded, numba's.
    Yields the settings in force (the same mapping :func:`environment` records).
    """
    if threads is not None and (isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS):
        raise InputError(f"threads must be an integer in 1..{MAX_THREADS}, got {threads!r}")
    saved = _settings()
    want = dict(saved)
    want.update({
        "deterministic_algorithms": True,
        "deterministic_warn_only": False,
        "matmul_allow_tf32": False,
        "cudnn_allow_tf32": False,
        "matmul_allow_fp16_reduced_precision_reduction": False,
        "matmul_allow_bf16_reduced_precision_reduction": False,
        "float32_matmul_precision": "highest",
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cublas_workspace_config": CUBLAS_WORKSPACE_CONFIG,
    })
    if threads is not None:
        want["torch_threads"] = threads
    old_numba: int | None = None
    try:
        _apply(want)
        old_numba = _numba_threads(threads)
        yield environment()["settings"]
    finally:
        _apply(saved)
        numba = sys.modules.get("numba")
        if old_numba is not None and numba is not None:
            numba.set_num_threads(old_numba)


@functools.cache
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cudnn_version() -> int | None:
    try:
        v: object = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
    except Exception:  # pragma: no cover - a broken cuDNN install
        return None
    return v if isinstance(v, int) else None


def environment() -> dict[str, Any]:
    """Settings in force and library versions: the commitment's ``environment`` field."""
    env: dict[str, Any] = {"settings": _settings()}
    env["versions"] = {p: _version(p) for p in _PACKAGES} | {
        "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
    }
    numba = sys.modules.get("numba")
    if numba is not None:
        env["settings"]["numba_threads"] = int(numba.get_num_threads())
        env["settings"]["numba_cpu_name"] = str(numba.config.CPU_NAME or "host")
    return env


# -- devices ------------------------------------------------------------------------------------


def resolve_device(name: str) -> str:
    """``"cpu"``, ``"cuda"`` (-> ``"cuda:0"``), ``"cuda:N"`` or ``"auto"`` to a concrete device.

    Raises :class:`InputError` for an unknown name or a CUDA device this machine lacks.
    """
    text = name.strip().lower() if isinstance(name, str) else ""
    if text == "cpu":
        return "cpu"
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    kind, _, index = text.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise InputError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}")
    if not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but CUDA is not available on this machine")
    n = int(index or 0)
    count = torch.cuda.device_count()
    if n >= count:
        raise InputError(f"device {name!r}: this machine has {count} CUDA device(s), "
                         f"cuda:0..cuda:{count - 1}")
    return f"cuda:{n}"


def cpu_workers() -> int:
    """Steps that run at once on this machine's CPU cores beside torch's intra-op threads: the
    cores over torch's thread count (1 where torch already uses every core). What the prover's
    answer and the verifier's check recompute at once for a kernel whose step is pure."""
    return max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))


# -- fingerprint --------------------------------------------------------------------------------


def _load_nvml() -> ModuleType | None:
    """pynvml, initialised, or None when the package, the library or the driver is missing."""
    try:
        import pynvml  # optional (the gpu extra); absent on machines without NVIDIA's library

        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded / ImportError: no NVIDIA GPU
        return None
    module: ModuleType = pynvml
    return module


def _shutdown(nvml: ModuleType) -> None:
    with contextlib.suppress(Exception):
        nvml.nvmlShutdown()


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _try(fn: Callable[[], object]) -> object:
    """An NVML query's value, or None when the device does not support it."""
    try:
        return fn()
    except Exception:
        return None


def _int(fn: Callable[..., object], *args: object) -> int | None:
    """``int(fn(*args))``, or None when NVML does not support the query on this device."""
    try:
        v = fn(*args)
        return int(str(v)) if not isinstance(v, int) else v
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> list[str]:
    """The vector ISA extensions results may depend on (numba targets, BLAS kernels)."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
              "avx512_vnni", "amx_tile", "neon", "asimd", "sve")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def _cpu_fingerprint() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu_flags": _cpu_flags(),
    }


def _gpu_static(nvml: ModuleType, index: int) -> dict[str, Any]:
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    mig = _try(lambda: nvml.nvmlDeviceGetMigMode(h))
    cc = _try(lambda: nvml.nvmlDeviceGetCudaComputeCapability(h))
    mem = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
    return {
        "index": index,
        "name": _text(nvml.nvmlDeviceGetName(h)),
        "uuid": _text(nvml.nvmlDeviceGetUUID(h)),
        "memory_total_bytes": int(mem.total) if mem is not None else None,  # type: ignore[attr-defined]
        "max_sm_clock_mhz": _int(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_SM),
        "max_mem_clock_mhz": _int(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_MEM),
        "power_limit_mw": _int(nvml.nvmlDeviceGetEnforcedPowerLimit, h),
        "mig_mode": int(mig[0]) if isinstance(mig, (list, tuple)) else None,
        "compute_capability": f"{cc[0]}.{cc[1]}" if isinstance(cc, (list, tuple)) else None,
        "pci_bus_id": _try(lambda: _text(nvml.nvmlDeviceGetPciInfo(h).busId)),
    }


def fingerprint() -> dict[str, Any]:
    """Static facts about this machine's accelerator(s); never raises.

    With NVML: ``{"accelerator": "nvidia", "driver_version", "cuda_driver_version", "gpus": [...],
    "host": {...}}``; without: ``{"accelerator": "none", "cpu": ..., "cores": ..., ...}``.
    Only static fields: the same machine gives the same fingerprint (and hash) every time.
    """
    host = _cpu_fingerprint()
    nvml = _load_nvml()
    if nvml is None:
        return {"accelerator": "none", **host}
    try:
        cuda = _try(nvml.nvmlSystemGetCudaDriverVersion)
        count = int(nvml.nvmlDeviceGetCount())
        return {
            "accelerator": "nvidia",
            "driver_version": _text(nvml.nvmlSystemGetDriverVersion()),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None,
            "gpus": [_gpu_static(nvml, i) for i in range(count)],
            "host": host,
        }
    except Exception as e:  # a half-working driver: say so rather than fail the job
        return {"accelerator": "none", "nvml_error": type(e).__name__, **host}
    finally:
        _shutdown(nvml)


# -- monitoring ---------------------------------------------------------------------------------


class DeviceMonitor:
    """Samples clocks, power and energy of every NVIDIA GPU in a background thread.

    ``with DeviceMonitor() as mon: run()`` then ``mon.samples`` (one dict per GPU per sample)
    and ``mon.summary()``. On a machine without NVML both are empty and nothing runs.
    """

    def __init__(self, interval_s: float = MONITOR_INTERVAL_S) -> None:
        if not MIN_MONITOR_INTERVAL_S <= interval_s <= 3600:
            raise InputError(f"monitor interval must be in {MIN_MONITOR_INTERVAL_S}..3600 s, "
                             f"got {interval_s}")
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self._nvml: ModuleType | None = None
        self._handles: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        nvml = self._nvml
        assert nvml is not None
        t = time.monotonic() - self._t0
        for i, h in enumerate(self._handles):
            if len(self.samples) >= MAX_MONITOR_SAMPLES * len(self._handles):
                del self.samples[::2]  # keep the span, halve the density
            self.samples.append({
                "t_s": round(t, 4),
                "gpu": i,
                "sm_clock_mhz": _int(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM),
                "mem_clock_mhz": _int(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM),
                "power_mw": _int(nvml.nvmlDeviceGetPowerUsage, h),
                "energy_mj": _int(nvml.nvmlDeviceGetTotalEnergyConsumption, h),
                "temperature_c": _int(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU),
                "utilization_pct": _int(lambda x: nvml.nvmlDeviceGetUtilizationRates(x).gpu, h),
            })

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> DeviceMonitor:
        self._nvml = _load_nvml()
        if self._nvml is None:
            return self
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:
            self._handles = []
        if not self._handles:
            _shutdown(nvml)
            self._nvml = None
            return self
        self._t0 = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="pocv-device-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._nvml is not None:
            self._sample()
            _shutdown(self._nvml)
            self._nvml = None

    def summary(self) -> dict[str, Any]:
        """Per GPU: duration, energy used (from the counter), mean/max power, min/max SM clock."""
        out: dict[str, Any] = {}
        by_gpu: dict[int, list[dict[str, Any]]] = {}
        for s in self.samples:
            by_gpu.setdefault(int(s["gpu"]), []).append(s)
        for gpu, rows in sorted(by_gpu.items()):
            energy = [r["energy_mj"] for r in rows if r["energy_mj"] is not None]
            power = [r["power_mw"] for r in rows if r["power_mw"] is not None]
            clocks = [r["sm_clock_mhz"] for r in rows if r["sm_clock_mhz"] is not None]
            out[str(gpu)] = {
                "samples": len(rows),
                "duration_s": rows[-1]["t_s"] - rows[0]["t_s"],
                "energy_j": (energy[-1] - energy[0]) / 1000 if len(energy) >= 2 else None,
                "mean_power_w": sum(power) / len(power) / 1000 if power else None,
                "max_power_w": max(power) / 1000 if power else None,
                "min_sm_clock_mhz": min(clocks) if clocks else None,
                "max_sm_clock_mhz": max(clocks) if clocks else None,
            }
        return out
