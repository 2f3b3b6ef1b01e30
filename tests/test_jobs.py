"""Job specs: validation, defaults, canonical JSON and job id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocv.cli._common import EXIT_INPUT, exit_code
from pocv.encoding import State
from pocv.errors import InputError, LimitExceeded, MalformedError, SpecError
from pocv.jobs import MAX_SPEC_BYTES, JobSpec
from pocv.kernels import get_kernel, kernel_names, register_kernel, resolve_spec
from pocv.kernels.base import Kernel, Schema


def test_defaults_are_filled_so_equal_jobs_have_equal_ids() -> None:
    a = resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=1))
    b = resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=1, params={"n": a.params["n"]}, version=a.version))
    assert a.job_id == b.job_id
    assert a.canonical_json() == b.canonical_json()
    assert b" " not in a.canonical_json()


def test_every_field_changes_the_job_id() -> None:
    base = resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=1, params={"n": 64}))
    others = [
        resolve_spec(JobSpec(kernel="gemm-int8", steps=11, seed=1, params={"n": 64})),
        resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=2, params={"n": 64})),
        resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=1, params={"n": 72})),
        resolve_spec(JobSpec(kernel="mlp-sgd", steps=10, seed=1)),
    ]
    ids = {base.job_id} | {o.job_id for o in others}
    assert len(ids) == 5


def test_json_roundtrip() -> None:
    s = resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=1, params={"n": 64}))
    assert JobSpec.from_json(s.to_json()) == s
    assert JobSpec.from_json(s.to_json()).job_id == s.job_id


BAD = {
    "unknown-kernel": ({"kernel": "nope", "steps": 1, "seed": 0}, SpecError, "unknown kernel"),
    "unknown-version": ({"kernel": "gemm-int8", "version": 99, "steps": 1, "seed": 0}, SpecError, "no version"),
    "zero-steps": ({"kernel": "gemm-int8", "steps": 0, "seed": 0}, SpecError, "steps"),
    "float-steps": ({"kernel": "gemm-int8", "steps": 1.5, "seed": 0}, SpecError, "steps"),
    "bool-seed": ({"kernel": "gemm-int8", "steps": 1, "seed": True}, SpecError, "seed"),
    "negative-seed": ({"kernel": "gemm-int8", "steps": 1, "seed": -1}, SpecError, "seed"),
    "unknown-param": ({"kernel": "gemm-int8", "steps": 1, "seed": 0, "params": {"m": 3}}, SpecError, "no parameter"),
    "param-out-of-range": ({"kernel": "gemm-int8", "steps": 1, "seed": 0, "params": {"n": 8}}, SpecError, "n"),
    "float-param": ({"kernel": "gemm-int8", "steps": 1, "seed": 0, "params": {"n": 64.0}}, SpecError, "int"),
    "missing-seed": ({"kernel": "gemm-int8", "steps": 1}, SpecError, "missing"),
    "extra-field": ({"kernel": "gemm-int8", "steps": 1, "seed": 0, "x": 1}, SpecError, "unknown job spec"),
    "not-object": ([1, 2], SpecError, "JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_specs(case: str) -> None:
    d, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        resolve_spec(JobSpec.from_json(json.dumps(d)))  # kernel-dependent cases fail on resolving


def test_jobs_no_honest_worker_can_answer_are_refused_with_their_sizes() -> None:
    # issue 15 class 7: legal parameters whose honest answer exceeds the limits
    with pytest.raises(SpecError, match=r"133 states of 1,074,005,000 bytes.*at most 68,719,476,736"):
        resolve_spec(JobSpec(kernel="mlp-sgd", steps=1000, seed=1, params={"width": 4096, "depth": 8}))
    few = resolve_spec(JobSpec(kernel="mlp-sgd", steps=30, seed=1, params={"width": 1024, "depth": 8}))
    assert few.params["width"] == 1024  # a smaller state of the same kernel resolves


class _HugeState(Kernel):
    """A kernel whose one state is 8 GiB (no built-in kernel's legal parameters reach 4 GiB any more:
    the retired transformer-decode's KV cache did). Not registered: only its check_limits runs."""

    name = "test-huge-state"
    version = 1
    mode = "exact"
    summary = "declares an 8 GiB state (test only)"

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Any]:
        raise AssertionError("never run")

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Any]:
        raise AssertionError("never run")

    def schema(self, spec: JobSpec) -> Schema:
        return {"x": ("float32", (1 << 31,))}


def test_a_state_over_the_limit_is_refused_with_its_size() -> None:
    with pytest.raises(SpecError, match=r"states of 8,589,934,6\d\d bytes; a state is at most 4,294,967,296"):
        _HugeState().check_limits(JobSpec(kernel="test-huge-state", steps=10, seed=1))


def test_an_llm_job_over_the_new_token_limit_is_refused() -> None:
    from pocv.kernels.causal_lm import MAX_NEW_TOKENS  # reason: the LLM kernel's module, only for this test

    kernel = get_kernel("hf-causal-lm")
    spec = JobSpec(kernel="hf-causal-lm", steps=MAX_NEW_TOKENS // 16 + 1, seed=1, params={"block": 16})
    with pytest.raises(SpecError, match=rf"{spec.steps * 16:,} new tokens; at most {MAX_NEW_TOKENS:,}"):
        kernel.check_limits(spec)  # before any artifact is needed


@pytest.mark.parametrize("version", [None, 1])
def test_the_retired_transformer_decode_kernel_is_refused_with_what_replaces_it(version: int | None) -> None:
    spec = JobSpec(kernel="transformer-decode", steps=10, seed=1, params={"width": 64}, version=version or 0)
    with pytest.raises(SpecError, match=r"'transformer-decode' was retired.*'hf-causal-lm'"):
        resolve_spec(spec)
    with pytest.raises(SpecError, match="retired"):
        get_kernel("transformer-decode", version)
    assert "transformer-decode" not in kernel_names(plugins=True)
    assert exit_code(SpecError("x")) == EXIT_INPUT


def test_a_retired_kernel_name_cannot_be_registered_again() -> None:
    class _Again(_HugeState):
        name = "transformer-decode"

    with pytest.raises(SpecError, match="retired built-in kernel"):
        register_kernel(_Again)
    with pytest.raises(SpecError, match="retired"):
        get_kernel("transformer-decode")


def test_a_spec_is_plain_data_until_resolved() -> None:
    raw = JobSpec.from_json(json.dumps({"kernel": "nope", "steps": 1, "seed": 0, "params": {"m": 3}}))
    assert raw.kernel == "nope" and not raw.resolved  # parsing consults no kernel
    with pytest.raises(InputError, match="resolve it first"):
        _ = raw.job_id
    r = resolve_spec(JobSpec(kernel="gemm-int8", steps=1, seed=0))
    assert r.resolved and "n" in r.params and resolve_spec(r) == r


def test_oversized_and_invalid_json() -> None:
    with pytest.raises(LimitExceeded):
        JobSpec.from_json(" " * (MAX_SPEC_BYTES + 1))
    with pytest.raises(MalformedError, match="not valid JSON"):
        JobSpec.from_json("{")
    with pytest.raises(MalformedError):
        JobSpec.from_json("[" * 100_000 + "]" * 100_000)


@given(st.text(max_size=200))
def test_spec_parser_never_crashes(text: str) -> None:
    try:
        JobSpec.from_json(text)
    except (SpecError, MalformedError):
        pass
