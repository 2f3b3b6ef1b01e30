"""Typed kernel parameters (pocv.kernels.params) and the registry's providers and plugins."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from pocv.errors import SpecError
from pocv.jobs import JobSpec
from pocv.kernels import (
    _FROM_PLUGINS,
    _INSTANCES,
    _PROVIDERS,
    _REGISTRY,
    get_kernel,
    kernel_names,
    kernel_table,
    register_kernel,
    resolve_spec,
)
from pocv.kernels.base import Kernel, Schema
from pocv.kernels.params import Artifact, Bool, Enum, Float, Int, Str, check_params

DECLARED = {
    "n": Int(8, 1, 64),
    "lr": Float(0.01, 0.0, 1.0),
    "shuffle": Bool(True),
    "act": Enum("relu", ("relu", "tanh")),
    "tag": Str("", max_len=8),
    "data": Artifact(),
    "weights": Artifact(required=True),
}
REF = "blake3:" + "ab" * 32


def test_defaults_are_filled_and_floats_travel_as_canonical_text() -> None:
    out = check_params("k@1", DECLARED, {"weights": REF, "lr": "1e-2"})
    assert out == {"n": 8, "lr": "0.01", "shuffle": True, "act": "relu", "tag": "", "data": "", "weights": REF}
    assert check_params("k@1", DECLARED, {"weights": REF, "lr": 0.01})["lr"] == "0.01"


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "int-out-of-range": ({"n": 65}, "integer in 1..64"),
    "int-bool": ({"n": True}, "integer"),
    "float-nan": ({"lr": "nan"}, "float in 0..1"),
    "float-too-big": ({"lr": "2"}, "float in 0..1"),
    "float-text": ({"lr": "fast"}, "written as a string"),
    "bool-int": ({"shuffle": 1}, "true or false"),
    "enum-other": ({"act": "gelu"}, "one of"),
    "str-long": ({"tag": "x" * 9}, "at most 8"),
    "artifact-malformed": ({"data": "sha256:00"}, "blake3:<64 hex digits>"),
    "artifact-missing": ({"weights": ""}, "weights"),
    "unknown": ({"nope": 1}, "no parameter"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_values_are_refused_naming_what_was_expected(name: str) -> None:
    given, match = BAD[name]
    with pytest.raises(SpecError, match=match):
        check_params("k@1", DECLARED, {"weights": REF, **given})


class _Typed(Kernel):
    name = "test-typed"
    version = 1
    mode = "exact"
    summary = "typed parameters (test only)"
    params: ClassVar[dict[str, Any]] = {"scale": Float(0.5, 0.0, 2.0), "width": Int(4, 1, 8)}

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Any]:
        return {"x": torch.zeros(int(spec.params["width"]), dtype=torch.float32)}

    def step(self, state: Any, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Any]:
        return {"x": torch.as_tensor(state["x"]) + self.typed(spec)["scale"]}

    def schema(self, spec: JobSpec) -> Schema:
        return {"x": ("float32", (int(spec.params["width"]),))}


@pytest.fixture
def registry() -> Any:
    saved = (dict(_REGISTRY), dict(_PROVIDERS), dict(_INSTANCES), set(_FROM_PLUGINS))
    yield
    for live, old in zip((_REGISTRY, _PROVIDERS, _INSTANCES, _FROM_PLUGINS), saved):
        live.clear()
        live.update(old)  # type: ignore[attr-defined]


def test_runtime_registration_is_usable_and_its_provider_is_named(registry: Any) -> None:
    register_kernel(_Typed)
    k = get_kernel("test-typed")
    assert k.provider.startswith("unpackaged:") and k.provider.endswith("==0")
    assert "test-typed" in kernel_names()
    a = resolve_spec(JobSpec(kernel="test-typed", steps=2, seed=0, params={"scale": "0.25"}))
    b = resolve_spec(JobSpec(kernel="test-typed", steps=2, seed=0, params={"scale": "2.5e-1"}))
    assert a.job_id == b.job_id and a.params["scale"] == "0.25"
    assert float(k.step(k.init_state(a), 1, a)["x"][0]) == 0.25
    assert k.describe()["params"]["scale"] == {"type": "float", "default": 0.5, "min": 0.0, "max": 2.0}


def test_explicit_provider_and_a_second_registration_is_refused(registry: Any) -> None:
    register_kernel(_Typed, provider="my-dist==1.2")
    assert get_kernel("test-typed").provider == "my-dist==1.2"

    class Other(_Typed):
        pass

    with pytest.raises(SpecError, match="registered twice"):
        register_kernel(Other)
    with pytest.raises(SpecError, match="provider"):
        register_kernel(_Typed, provider="no version")


def test_plugins_are_found_through_entry_points_with_their_distribution(plugins: None) -> None:
    assert "plugin-mlp" in kernel_names(plugins=True) and "digits-cnn" in kernel_names(plugins=True)
    assert "plugin-mlp" not in kernel_names()  # the built-ins' list stays the built-ins (and run-time ones)
    assert get_kernel("plugin-mlp").provider == "pocv-plugin-test==0.1.0"
    rows = {r["name"]: r for r in kernel_table()}
    assert rows["digits-cnn"]["provider"] == "pocv-digits==0.1.0"
    assert rows["mlp-sgd"]["provider"] == "pocv"
