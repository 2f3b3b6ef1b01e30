"""``digits-cnn``: SGD (or AdamW) training of a small CNN on the handwritten digits that
scikit-learn ships (1,797 images of 8x8 pixels, 10 classes; no download).

The whole kernel is the class below: the architecture and the loss. pocv's training adapter
(:class:`pocv.kernels.training.TorchTraining`) supplies the rest: typed hyper-parameters in the
job, seeded weights, the data set as a content-addressed artifact read in a seed-derived order,
the optimizer, the state (parameters, momenta, data cursor) and the calibrated bound.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from pocv.jobs import JobSpec
from pocv.kernels.params import Int, Param
from pocv.kernels.training import TorchTraining

__all__ = ["DigitsCnn"]


class DigitsCnn(TorchTraining):
    name = "digits-cnn"
    version = 1
    summary = "a small CNN trained on scikit-learn's 8x8 handwritten digits (data set artifact)"
    params: ClassVar[dict[str, Param]] = {"channels": Int(16, 4, 128), "hidden": Int(64, 8, 1024)}
    defaults: ClassVar[dict[str, Any]] = {"lr": 0.05, "batch": 64, "momentum": 0.9, "weight_decay": 5e-4}
    # the model and the loss below never write a parameter, buffer or input in place: the step is
    # pure (pocv.kernels.base.Kernel.pure_step), so the prover commits each state while the next
    # one computes, without a copy, and challenged steps are recomputed on several threads at once
    pure_step = True

    def model(self, spec: JobSpec) -> torch.nn.Module:
        c, h = int(spec.params["channels"]), int(spec.params["hidden"])
        # smooth activations and average pooling: a ReLU or max-pool decision taken within rounding
        # of its kink flips between honest implementations, and its gradient with it (docs/kernels.md)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, c, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(c, 2 * c, 3, padding=1), torch.nn.SiLU(),
            torch.nn.AvgPool2d(2), torch.nn.Flatten(),
            torch.nn.Linear(2 * c * 16, h), torch.nn.SiLU(),
            torch.nn.Linear(h, 10),
        )

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(output, target)
