"""Test helpers: small jobs, and lying provers that cheat in named ways.

A lying prover is a real :class:`Prover` with one seam overridden (``_step``), so it writes a
real trace, signs a real commitment and answers with real Merkle proofs -- of its fake states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.prover import Prover

SMALL = resolve_spec(JobSpec(kernel="gemm-int8", steps=40, seed=11, params={"n": 32}))


class StepCheater(Prover):
    """A prover whose step ``i`` is replaced by ``fake(state, i)`` when ``when(i)``."""

    def __init__(self, *, when: Callable[[int], bool], fake: Callable[[dict, int], dict], **kw: Any) -> None:
        super().__init__(**kw)
        self.when = when
        self.fake = fake

    def _step(self, kernel, state, i, spec, device):  # type: ignore[no-untyped-def]
        if self.when(i):
            return self.fake(dict(state), i)
        return super()._step(kernel, state, i, spec, device)


def replay(state: dict, i: int) -> dict:
    """Skip the step: claim s_i = s_{i-1}."""
    return state


def flip_one(state: dict, i: int) -> dict:
    x = state["x"].clone()
    x.view(-1)[0] ^= 1
    return {"x": x}


def widen_dtype(state: dict, i: int) -> dict:
    return {"x": state["x"].to(torch.int16)}
