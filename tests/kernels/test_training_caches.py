"""TorchTraining's per-job caches (schema, typed parameters, the model) and its per-tensor scales:
what the verifier asks for at every challenged step, computed once per job and never stale."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from pocv.jobs import JobSpec
from pocv.kernels._util import seeded_bytes
from pocv.kernels.training import TorchTraining


class Tiny(TorchTraining):
    name = "tiny-training"
    version = 1
    summary = "a linear model on seeded data (tests of the adapter's caches)"

    def model(self, spec: JobSpec) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

    def synthetic(self, spec: JobSpec, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = np.frombuffer(seeded_bytes("tiny-training test data", spec.seed, start, length=5 * n), "u1")
        x = torch.from_numpy((raw[: 4 * n].astype(np.float32) / 255.0).reshape(n, 4))
        y = torch.from_numpy((raw[4 * n :] % 3).astype(np.int64))
        return x, y


def spec_of(k: Tiny, **params: Any) -> JobSpec:
    return JobSpec(kernel=k.name, steps=4, seed=3, version=1, params=k.check_params(dict(params)))


def test_schema_is_per_job_and_a_copy() -> None:
    k = Tiny()
    sgd, adamw = spec_of(k), spec_of(k, optimizer="adamw")
    a = k.schema(sgd)
    assert {n.split(".")[0] for n in a} == {"cursor", "param", "sgd"}
    b = k.schema(adamw)
    assert {n.split(".")[0] for n in b} == {"cursor", "param", "adamw"}
    a["param.0.weight"] = ("float64", (1,))  # the caller's copy, not the cache
    assert k.schema(sgd)["param.0.weight"] == ("float32", (8, 4))
    assert k.schema(dataclasses.replace(sgd)) == k.schema(sgd)  # an equal spec, another object
    assert k.schema(adamw) == b


def test_typed_is_per_job_and_a_copy() -> None:
    k = Tiny()
    s1, s2 = spec_of(k, lr=0.5), spec_of(k, lr=0.25)
    t1 = k.typed(s1)
    assert t1["lr"] == 0.5 and k.typed(s2)["lr"] == 0.25
    t1["lr"] = 7.0
    assert k.typed(s1)["lr"] == 0.5


def test_steps_of_two_jobs_alternating_match_fresh_kernels() -> None:
    """The same kernel instance stepping two jobs in turn (the caches keyed by the last spec seen)
    gives each job the states a fresh instance computes for it alone."""
    k = Tiny()
    jobs = [spec_of(k, lr=0.5), spec_of(k, lr=0.25, optimizer="adamw"), spec_of(k, lr=0.5, weight_decay=0.1)]
    states = [k.init_state(s) for s in jobs]
    for i in range(1, 4):
        states = [k.step(st, i, s) for st, s in zip(states, jobs, strict=True)]
    for s, got in zip(jobs, states, strict=True):
        fresh = Tiny()
        st = fresh.init_state(s)
        for i in range(1, 4):
            st = fresh.step(st, i, s)
        assert set(st) == set(got) and all(torch.equal(torch.as_tensor(st[n]), torch.as_tensor(got[n])) for n in st)
    assert not torch.equal(states[0]["param.0.weight"], states[2]["param.0.weight"])


def test_scales_of_gives_scales_for_the_names_asked() -> None:
    k = Tiny()
    spec = spec_of(k)
    st = k.step(k.init_state(spec), 1, spec)
    full = k.scales(st, spec)
    assert set(full) == set(st) - {"cursor"}
    names = ["param.2.bias", "sgd.momentum.0.weight"]
    some = k.scales_of(st, [*names, "cursor"], spec)
    assert set(some) == set(names)
    for n in names:
        assert some[n].dtype == np.float64 and np.array_equal(some[n], full[n])
