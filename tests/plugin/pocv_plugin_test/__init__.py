"""A kernel plugin, installed by pocv's test setup and found through the entry-point group
``pocv.kernels``: a small MLP classifier trained on seeded synthetic data (no artifact needed
but its calibration record)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from pocv.jobs import JobSpec
from pocv.kernels.params import Int, Param
from pocv.kernels.training import TorchTraining, seeded_bytes


class PluginMlp(TorchTraining):
    name = "plugin-mlp"
    version = 1
    summary = "a 2-layer MLP on seeded synthetic data (pocv's plugin test kernel)"
    params: ClassVar[dict[str, Param]] = {"width": Int(32, 4, 256)}
    defaults: ClassVar[dict[str, Any]] = {"lr": 0.05, "batch": 16, "weight_decay": 1e-3}

    def model(self, spec: JobSpec) -> torch.nn.Module:
        w = int(spec.params["width"])
        return torch.nn.Sequential(torch.nn.Linear(16, w), torch.nn.Tanh(), torch.nn.Linear(w, 4))

    def synthetic(self, spec: JobSpec, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = np.frombuffer(seeded_bytes("pocv-plugin-test data v1", spec.seed, start, n, length=16 * n), np.int8)
        x = torch.from_numpy(raw.astype(np.float32).reshape(n, 16) / 64.0)
        y = (x[:, :4] + x[:, 4:8]).argmax(dim=1)
        return x, y
