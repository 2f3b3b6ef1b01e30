"""Job specs: validation, defaults, canonical JSON and job id."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocv.errors import InputError, LimitExceeded, MalformedError, SpecError
from pocv.jobs import MAX_SPEC_BYTES, JobSpec
from pocv.kernels import resolve_spec


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


@pytest.mark.parametrize(("kernel", "params", "match"), [
    ("mlp-sgd", {"width": 4096, "depth": 8}, r"133 states of 1,074,005,000 bytes.*at most 68,719,476,736"),
    ("transformer-decode", {"width": 1024, "depth": 8, "batch": 256, "context": 4096},
     r"states of 68,728,128,247 bytes; a state is at most 4,294,967,296"),
])
def test_jobs_no_honest_worker_can_answer_are_refused_with_their_sizes(kernel: str, params: dict[str, int],
                                                                        match: str) -> None:
    # issue 15 class 7: legal parameters whose states or honest answer exceed the limits
    with pytest.raises(SpecError, match=match):
        resolve_spec(JobSpec(kernel=kernel, steps=1000, seed=1, params=params))
    few = resolve_spec(JobSpec(kernel="mlp-sgd", steps=30, seed=1, params={"width": 1024, "depth": 8}))
    assert few.params["width"] == 1024  # a smaller state of the same kernel resolves


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
