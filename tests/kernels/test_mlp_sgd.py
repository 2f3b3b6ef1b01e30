"""mlp-sgd: determinism, seeded init, the calibrated bound (honest passes, downgrades and cheats fail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocv.encoding import decode_state, encode_state, state_digest
from pocv.errors import SpecError, StateError
from pocv.jobs import JobSpec
from pocv.kernels import get_kernel, resolve_spec
from pocv.kernels._util import seeded_bytes
from pocv.kernels.mlp_sgd import _DATA_CONTEXT, LR, MOMENTUM, MlpSgd

SMALL = {"width": 64, "depth": 2, "batch": 128}


def spec(seed: int = 7, **params: int) -> JobSpec:
    return resolve_spec(JobSpec(kernel="mlp-sgd", steps=64, seed=seed, params=params or SMALL))


def kernel() -> MlpSgd:
    k = get_kernel("mlp-sgd")
    assert isinstance(k, MlpSgd)
    return k


def walk(sp: JobSpec, n: int) -> dict[str, torch.Tensor]:
    k = kernel()
    s = k.init_state(sp)
    for i in range(1, n + 1):
        s = k.step(s, i, sp)
    return s  # type: ignore[return-value]


def perturbed(state: dict[str, torch.Tensor], name: str, fn) -> dict[str, torch.Tensor]:
    out = dict(state)
    out[name] = fn(state[name].clone())
    return out


# -- determinism and init -----------------------------------------------------------------------


def test_run_to_run_bit_identical() -> None:
    sp = spec()
    a = [state_digest(walk(sp, n)) for n in (0, 3)]
    b = [state_digest(walk(sp, n)) for n in (0, 3)]
    assert a == b
    assert a[0] != a[1]


def test_init_derived_from_seed() -> None:
    k = kernel()
    s1, s1b, s2 = k.init_state(spec(1)), k.init_state(spec(1)), k.init_state(spec(2))
    assert state_digest(s1) == state_digest(s1b)
    assert state_digest(s1) != state_digest(s2)
    assert not torch.equal(s1["layer0.weight"], s2["layer0.weight"])
    assert int(s1["cursor"]) == 0
    assert float(s1["momentum.layer1.weight"].abs().sum()) == 0.0
    # weights are an exact dyadic grid of mean ~0 and std ~ 1/sqrt(width)
    w = s1["layer0.weight"].double()
    assert abs(float(w.mean())) < 0.02
    assert 0.3 < float(w.std()) * 64**0.5 < 1.5


def test_schema_matches_state_and_rejects_wrong_shapes() -> None:
    k, sp = kernel(), spec()
    s = k.init_state(sp)
    assert k.check_schema(s, sp) is None
    assert set(k.schema(sp)) == set(s)
    bad = perturbed(s, "layer1.weight", lambda t: t[:, :-1])
    assert "layer1.weight" in (k.check_schema(bad, sp) or "")
    assert not k.compare(s, bad, sp).ok
    half = perturbed(s, "layer0.bias", lambda t: t.half())
    assert "float16" in (k.check_schema(half, sp) or "")
    assert not k.compare(s, half, sp).ok
    missing = {n: t for n, t in s.items() if n != "cursor"}
    assert k.check_schema(missing, sp) is not None
    assert not k.compare(s, missing, sp).ok


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"width": 4}, "width"),
        ({"width": 8192}, "width"),
        ({"depth": 0}, "depth"),
        ({"depth": 9}, "depth"),
        ({"batch": 0}, "batch"),
        ({"lr": 1}, "no parameter"),
    ],
)
def test_bad_params_refused(params: dict[str, int], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        resolve_spec(JobSpec(kernel="mlp-sgd", steps=1, seed=0, params=params))


def test_data_is_exact_and_depends_on_cursor() -> None:
    k, sp = kernel(), spec(3)
    x, t = k.batch_data(sp, 128)
    w, b = 64, 128
    raw = np.frombuffer(seeded_bytes(_DATA_CONTEXT, 3, w, 128, length=b * w), np.int8).astype(np.int64)
    teacher = k.teacher(3, w).numpy().astype(np.int64)
    want_t = np.clip((raw.reshape(b, w) @ teacher) / 2.0 ** (9 + 63 .bit_length() // 2), -1, 1)
    np.testing.assert_array_equal(x.numpy(), raw.reshape(b, w) / 128.0)
    np.testing.assert_array_equal(t.numpy(), want_t.astype(np.float32))
    assert float(t.std()) > 0.2  # the targets carry signal, not all clipped / zero
    x2, _ = k.batch_data(sp, 256)
    assert not torch.equal(x, x2)


def test_step_does_not_modify_input_and_accepts_numpy_and_decoded_states() -> None:
    k, sp = kernel(), spec()
    s = walk(sp, 2)
    before = state_digest(s)
    out = k.step(s, 3, sp)
    assert state_digest(s) == before
    as_np = {n: t.numpy() for n, t in s.items()}
    assert state_digest(k.step(as_np, 3, sp)) == state_digest(out)
    assert state_digest(k.step(decode_state(encode_state(s)), 3, sp)) == state_digest(out)
    assert int(out["cursor"]) == 3 * 128
    assert k.check_schema(out, sp) is None


def test_wrong_cursor_in_prev_state_is_a_state_error() -> None:
    k, sp = kernel(), spec()
    s = walk(sp, 2)
    with pytest.raises(StateError, match="expected cursor 128, got 256"):
        k.step(s, 2, sp)  # s is s_2, so it is the input of step 3, not step 2
    with pytest.raises(StateError, match="expected cursor 256, got 999"):
        k.step(perturbed(s, "cursor", lambda t: t + 743), 3, sp)


def test_training_makes_progress() -> None:
    """The job is a real optimization: the loss on a fixed batch falls over 25 steps."""
    k, sp = kernel(), spec(5)
    x, t = k.batch_data(sp, 0)

    def loss(s: dict[str, torch.Tensor]) -> float:
        h = x
        for layer in range(2):
            z = h @ s[f"layer{layer}.weight"] + s[f"layer{layer}.bias"]
            h = torch.tanh(z) if layer == 0 else z
        return float(((h - t) ** 2).sum() / (2 * x.shape[0]))

    assert loss(walk(sp, 25)) < 0.85 * loss(walk(sp, 0))


def test_momentum_update_rule() -> None:
    """s_1 from zero momentum: v = g, p = p0 - lr g; s_2: v = mu v1 + g2 (checked in float64)."""
    k, sp = kernel(), spec()
    s0 = k.init_state(sp)
    s1 = k.step(s0, 1, sp)
    ref1 = k.reference_step(s0, 1, sp)
    g1 = s1["momentum.layer1.weight"].double()
    p1 = s0["layer1.weight"].double() - LR * g1
    assert torch.allclose(s1["layer1.weight"].double(), p1, rtol=0, atol=1e-7)
    r1 = ref1["momentum.layer1.weight"].double()
    assert float((g1 - r1).abs().max()) < 1e-5 * float(r1.pow(2).mean().sqrt())
    s2 = k.step(s1, 2, sp)
    g2 = s2["momentum.layer1.weight"].double() - MOMENTUM * g1
    assert float(g2.abs().max()) > 0  # a new gradient was added
    assert not torch.allclose(g2, g1, rtol=1e-3)


# -- the bound: honest implementations pass ------------------------------------------------------


@pytest.mark.parametrize("params", [SMALL, {}], ids=["small", "default"])
def test_honest_variants_pass(params: dict[str, int]) -> None:
    k, sp = kernel(), spec(11, **params)
    s = walk(sp, 2)
    outs = {n: f(s, 3, sp) for n, f in k.honest_variants().items()}
    assert len(outs) >= 5
    base = k.step(s, 3, sp)
    for name, out in outs.items():
        for e, c in ((base, out), (out, base)):
            cmp = k.compare(e, c, sp)
            assert cmp.ok, f"{name}: {cmp.detail}"
            assert cmp.worst_ratio < 0.5  # honest deviation is well inside the bound
    # the variants are not all the same bits (otherwise this test would prove nothing)
    digests = {state_digest(o) for o in outs.values()}
    assert len(digests) >= 2


def test_reference_step_within_bound_of_fast_path() -> None:
    k, sp = kernel(), spec(13)
    s = walk(sp, 4)
    ref, fast = k.reference_step(s, 5, sp), k.step(s, 5, sp)
    assert state_digest(ref) != state_digest(fast)
    assert k.compare(ref, fast, sp).ok
    assert k.compare(fast, ref, sp).ok


# -- the bound: downgrades and cheats fail -------------------------------------------------------


@pytest.mark.parametrize("downgrade", ["tf32", "bf16", "fp16"])
@pytest.mark.parametrize("params", [SMALL, {}], ids=["small", "default"])
def test_precision_downgrade_caught(downgrade: str, params: dict[str, int]) -> None:
    k, sp = kernel(), spec(17, **params)
    s = walk(sp, 3)
    claimed = k.downgrade_variants()[downgrade](s, 4, sp)
    cmp = k.compare(k.step(s, 4, sp), claimed, sp)
    assert not cmp.ok
    assert cmp.worst_ratio > 4  # not a near miss: the downgrade is far outside the bound
    assert "exceeds the bound" in cmp.detail


def test_whole_run_in_downgraded_precision_caught_at_every_step() -> None:
    """A worker that runs bf16 throughout: each challenged step recomputed from its own s_{i-1} fails."""
    k, sp = kernel(), spec(19)
    bf16 = k.downgrade_variants()["bf16"]
    s = k.init_state(sp)
    for i in range(1, 5):
        nxt = bf16(s, i, sp)
        assert not k.verify_step(s, nxt, i, sp).ok
        s = nxt


def cheats() -> dict[str, object]:
    def one_weight(t: torch.Tensor) -> torch.Tensor:
        t[3, 5] += 1e-4
        return t

    def all_weights_ulps(t: torch.Tensor) -> torch.Tensor:
        # every element moved by ~1,000 ulps: far below any visible change, far above the bound
        return t * (1 + 1000 * 2.0**-24)

    def zero_momentum(t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def nan(t: torch.Tensor) -> torch.Tensor:
        t[0] = float("nan")
        return t

    def inf(t: torch.Tensor) -> torch.Tensor:
        t[1] = float("inf")
        return t

    return {
        "one-weight": ("layer0.weight", one_weight, "exceeds the bound"),
        "all-weights-1000-ulps": ("layer1.weight", all_weights_ulps, "exceeds the bound"),
        "zeroed-momentum": ("momentum.layer1.weight", zero_momentum, "exceeds the bound"),
        "nan": ("layer1.bias", nan, "NaN or infinity"),
        "inf": ("momentum.layer0.bias", inf, "NaN or infinity"),
        "cursor": ("cursor", lambda t: t + 1, "integer tensor 'cursor'"),
    }


@pytest.mark.parametrize("case", list(cheats()))
def test_cheating_step_caught(case: str) -> None:
    name, fn, match = cheats()[case]  # type: ignore[misc]
    k, sp = kernel(), spec(23)
    s = walk(sp, 3)
    honest = k.step(s, 4, sp)
    claimed = perturbed(honest, name, fn)  # type: ignore[arg-type]
    cmp = k.verify_step(s, claimed, 4, sp)
    assert not cmp.ok
    assert match in cmp.detail
    assert k.verify_step(s, honest, 4, sp).ok


def test_skipped_and_replayed_steps_caught() -> None:
    k, sp = kernel(), spec(29)
    s2 = walk(sp, 2)
    s3 = k.step(s2, 3, sp)
    # claims s_3 = s_2 with only the cursor advanced (skipped the work)
    lazy = dict(s2) | {"cursor": s3["cursor"]}
    assert not k.verify_step(s2, lazy, 3, sp).ok
    # a step computed on the wrong batch (another cursor's data)
    other = kernel().step(dict(s2) | {"cursor": torch.tensor(3 * 128)}, 4, sp)
    assert not k.compare(s3, dict(other) | {"cursor": s3["cursor"]}, sp).ok


def test_recomputed_nan_is_reported_not_accepted() -> None:
    k, sp = kernel(), spec()
    s = walk(sp, 1)
    bad = perturbed(s, "layer0.weight", lambda t: t * float("nan"))
    cmp = k.compare(bad, s, sp)
    assert not cmp.ok
    assert "not finite" in cmp.detail


def test_bound_constants_are_calibrated_values() -> None:
    k = kernel()
    assert k.mode == "tolerance"
    assert 64 <= k.tau <= 1024  # between honest max (~50 at depth 8) and downgrades (>= 4,000)
    assert 0 < k.floor < 2.0**-60


@pytest.mark.slow
def test_zero_false_fail_many_honest_checks() -> None:
    """>= 1,000 honest cross-implementation / cross-thread checks, none FAILs."""
    from pocv.kernels.calibrate import calibrate

    report = calibrate("mlp-sgd", trials=168, params=SMALL | {"depth": 3}, seed=1000)  # 6 checks a trial
    assert report["checks"] >= 1000
    assert report["false_fails"] == 0, report["honest_max_by_pair"]
    assert all(d["caught"] == d["of"] for d in report["downgrades"].values())


@pytest.mark.gpu
def test_cuda_step_within_bound_of_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    k, sp = kernel(), spec(31, width=256, depth=3, batch=1024)
    s = walk(sp, 3)
    gpu = k.step({n: t.cuda() for n, t in s.items()}, 4, sp, "cuda")
    cpu = k.step(s, 4, sp)
    assert k.compare(cpu, gpu, sp).ok
    assert k.compare(gpu, cpu, sp).ok
    assert k.compare(k.reference_step(s, 4, sp), gpu, sp).ok
