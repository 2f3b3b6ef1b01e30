"""pocv.device: determinism context, environment record, fingerprint, monitor, device names.

NVML is replaced by a small simulated library (``FakeNvml``) for the GPU code paths, since CI
has no NVIDIA driver; the real no-driver path is exercised as it is.
"""

from __future__ import annotations

import json
import os
import types
from typing import Any

import pytest
import torch

from pocv import device
from pocv.device import (
    CUBLAS_WORKSPACE_CONFIG,
    DeviceMonitor,
    deterministic,
    environment,
    fingerprint,
    resolve_device,
)
from pocv.errors import InputError
from pocv.kernels import kernel_for, resolve_spec
from pocv.records import meta_hash


class NVMLError(Exception):
    pass


class FakeNvml(types.ModuleType):
    """Two GPUs; the second does not support power or MIG queries (NVML raises NotSupported)."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.energy = [1_000_000, 5_000]
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"580.65.06"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return ["NVIDIA H100 80GB HBM3", "NVIDIA A10"][h]

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-0000000{h}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return types.SimpleNamespace(total=[85_520_809_984, 24_146_608_128][h], used=123)

    def nvmlDeviceGetMaxClockInfo(self, h: int, kind: int) -> int:
        return {1: 1980, 2: 2619}[kind] - 100 * h

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        if h == 1:
            raise NVMLError("Not Supported")
        return 700_000

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        if h == 1:
            raise NVMLError("Not Supported")
        return [0, 0]

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return [(9, 0), (8, 6)][h]

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return types.SimpleNamespace(busId=f"00000000:0{h}:00.0".encode())

    # dynamic
    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        return 1755 if kind == 1 else 2619

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise NVMLError("Not Supported")
        return 350_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self.energy[h] += 7_000  # 7 J per sample
        return self.energy[h]

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 41

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return types.SimpleNamespace(gpu=97, memory=40)


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml()
    monkeypatch.setattr(device, "_load_nvml", lambda: fake)
    return fake


# -- deterministic() ----------------------------------------------------------------------------


def test_deterministic_sets_and_restores_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    # start from the permissive settings a user may have chosen
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("medium")
    try:
        before = environment()["settings"]
        threads = torch.get_num_threads()
        with deterministic(threads=1) as s:
            assert s == environment()["settings"]
            assert torch.are_deterministic_algorithms_enabled()
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
            assert not torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cudnn.deterministic
            assert not torch.backends.cudnn.benchmark
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG
            assert torch.get_num_threads() == 1
        assert environment()["settings"] == before
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        assert torch.get_num_threads() == threads
        assert torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")


def test_deterministic_restores_after_an_exception() -> None:
    before = environment()["settings"]
    with pytest.raises(RuntimeError, match="boom"), deterministic(threads=1):
        raise RuntimeError("boom")
    assert environment()["settings"] == before


def test_deterministic_keeps_threads_when_not_given() -> None:
    n = torch.get_num_threads()
    with deterministic():
        assert torch.get_num_threads() == n


@pytest.mark.parametrize("bad", [0, -1, 10**6, True])
def test_deterministic_rejects_bad_thread_counts(bad: int) -> None:
    with pytest.raises(InputError, match="threads must be an integer"), deterministic(threads=bad):
        pass


def test_kernel_step_runs_under_deterministic_and_matches() -> None:
    from pocv.encoding import state_digest
    from pocv.jobs import JobSpec

    sp = resolve_spec(JobSpec(kernel="mlp-sgd", steps=2, seed=1, params={"width": 32, "depth": 2, "batch": 16}))
    k = kernel_for(sp)
    s0 = k.init_state(sp)
    plain = k.step(s0, 1, sp)
    with deterministic(threads=1):
        det = k.step(s0, 1, sp)
    assert k.compare(plain, det, sp).ok
    with deterministic(threads=1):
        assert state_digest(k.step(s0, 1, sp)) == state_digest(det)


def test_environment_records_versions_and_is_hashable_json() -> None:
    env = environment()
    v = env["versions"]
    assert v["torch"] == torch.__version__.split("+")[0] or v["torch"] == torch.__version__
    import numpy as np

    assert v["numpy"] == np.__version__
    assert v["numba"] is not None
    assert len(meta_hash(env)) == 32
    json.dumps(env)  # plain JSON values only


def test_environment_records_numba_settings_once_loaded() -> None:
    import numba

    env = environment()
    assert env["settings"]["numba_threads"] == numba.get_num_threads()
    assert env["settings"]["numba_cpu_name"]


# -- fingerprint --------------------------------------------------------------------------------


def test_fingerprint_without_driver_is_explicit_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_load_nvml", lambda: None)
    fp = fingerprint()
    assert fp["accelerator"] == "none"
    assert fp["cores"] == os.cpu_count()
    assert isinstance(fp["cpu"], str)
    assert fp["cpu"]
    assert fingerprint() == fp  # static: same machine, same fingerprint
    assert meta_hash(fp) == meta_hash(fingerprint())


def test_fingerprint_real_library_never_raises() -> None:
    fp = fingerprint()  # on CI: no NVIDIA library -> "none"; on a GPU machine -> "nvidia"
    assert fp["accelerator"] in {"none", "nvidia"}
    json.dumps(fp)


def test_fingerprint_with_nvml(fake_nvml: FakeNvml) -> None:
    fp = fingerprint()
    assert fp["accelerator"] == "nvidia"
    assert fp["driver_version"] == "580.65.06"
    assert fp["cuda_driver_version"] == "13.0"
    h100, a10 = fp["gpus"]
    assert h100 == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",
        "memory_total_bytes": 85_520_809_984,
        "max_sm_clock_mhz": 1980,
        "max_mem_clock_mhz": 2619,
        "power_limit_mw": 700_000,
        "mig_mode": 0,
        "compute_capability": "9.0",
        "pci_bus_id": "00000000:00:00.0",
    }
    assert a10["power_limit_mw"] is None
    assert a10["mig_mode"] is None
    assert fp["host"]["cores"] == os.cpu_count()
    assert fake_nvml.shutdowns == 1
    assert meta_hash(fp) == meta_hash(fingerprint())
    assert meta_hash(fp) != meta_hash({**fp, "driver_version": "580.65.07"})


def test_fingerprint_half_broken_driver_degrades_to_none(fake_nvml: FakeNvml,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> int:
        raise NVMLError("GPU is lost")

    monkeypatch.setattr(fake_nvml, "nvmlDeviceGetCount", broken)
    fp = fingerprint()
    assert fp["accelerator"] == "none"
    assert fp["nvml_error"] == "NVMLError"


# -- monitor ------------------------------------------------------------------------------------


def test_monitor_on_cpu_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_load_nvml", lambda: None)
    with DeviceMonitor(interval_s=0.01) as mon:
        pass
    assert mon.samples == []
    assert mon.summary() == {}


def test_monitor_samples_gpus(fake_nvml: FakeNvml) -> None:
    import time

    with DeviceMonitor(interval_s=0.01) as mon:
        time.sleep(0.1)
    per_gpu = [s for s in mon.samples if s["gpu"] == 0]
    assert len(per_gpu) >= 3  # first, periodic, last
    assert {s["gpu"] for s in mon.samples} == {0, 1}
    assert per_gpu[0]["sm_clock_mhz"] == 1755
    summary = mon.summary()
    assert summary["0"]["energy_j"] == pytest.approx(7.0 * (len(per_gpu) - 1))
    assert summary["0"]["mean_power_w"] == pytest.approx(350.0)
    assert summary["1"]["mean_power_w"] is None
    assert fake_nvml.shutdowns == 1
    n = len(mon.samples)
    time.sleep(0.05)
    assert len(mon.samples) == n  # the thread has stopped


def test_monitor_rejects_silly_interval() -> None:
    with pytest.raises(InputError, match="interval"):
        DeviceMonitor(interval_s=0)


# -- resolve_device -----------------------------------------------------------------------------


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    want = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == want


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu:0", "", "cuda:-1"])
def test_resolve_device_unknown_names(name: str) -> None:
    with pytest.raises(InputError, match="device must be"):
        resolve_device(name)


def test_resolve_device_cuda_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device(name)
    assert resolve_device("auto") == "cpu"


def test_resolve_device_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(InputError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.gpu
def test_real_gpu_fingerprint_and_monitor() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    fp = fingerprint()
    assert fp["accelerator"] == "nvidia"
    assert fp["gpus"][0]["uuid"].startswith(("GPU-", "MIG-"))
    with DeviceMonitor(interval_s=0.05) as mon:
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(20):
            a = a @ a / 64
        torch.cuda.synchronize()
    assert mon.samples
    assert mon.summary()["0"]["samples"] >= 2
