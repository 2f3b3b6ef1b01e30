"""The PyTorch training adapter (pocv.kernels.training) on the plugin test kernel and the digits
example: optimizer formulas against torch.optim, calibration records, providers and artifacts at
the verifier, and the attacks of issue 11 point 6, each caught by the real Verifier."""

from __future__ import annotations

import contextvars
import dataclasses
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from solders.keypair import Keypair

from pocv.artifacts import ArtifactStore
from pocv.bundle import Response
from pocv.check import Verifier
from pocv.dispute import Dispute, Opening, Query, run_dispute
from pocv.encoding import State, decode_state, digest_encoded, encode_state
from pocv.errors import ArtifactError, NotCalibrated, ProviderMismatch, Reason
from pocv.jobs import JobSpec
from pocv.kernels import get_kernel, kernel_for, resolve_spec
from pocv.kernels.calibrate import calibrate, report_failed
from pocv.kernels.params import use_artifacts
from pocv.kernels.training import TorchTraining, Variant, make_record, parse_record
from pocv.merkle import MerkleTree
from pocv.prover import Prover
from pocv.records import Commitment
from tests.helpers import answer_from_memory
from tests.kernels.conftest import install_plugins

WORKER, VERIFIER = Keypair.from_seed(bytes([7]) * 32), Keypair.from_seed(bytes([8]) * 32)
#: small jobs: the plugin kernel's defaults, and the digits CNN at a test size
PLUGIN: dict[str, Any] = {}
DIGITS: dict[str, Any] = {"channels": 4, "hidden": 16, "batch": 16}


class Setup:
    def __init__(self, store: ArtifactStore, data: str, cal: dict[str, str], reports: dict[str, Any]) -> None:
        self.store, self.data, self.cal, self.reports = store, data, cal, reports

    def spec(self, kernel: str, steps: int = 4, seed: int = 5, **extra: Any) -> JobSpec:
        params = dict(PLUGIN if kernel == "plugin-mlp" else {**DIGITS, "data": self.data})
        params["calibration"] = self.cal[kernel]
        params.update(extra)
        with use_artifacts(self.store):
            return resolve_spec(JobSpec(kernel=kernel, steps=steps, seed=seed, params=params))


@pytest.fixture(scope="session")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    install_plugins()
    from pocv_digits.cli import digits_tensors  # the example's own data preparation
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("artifacts")
    store = ArtifactStore(root / "store")
    save_file(digits_tensors(), str(root / "digits.safetensors"))  # type: ignore[arg-type]
    data = store.add(root / "digits.safetensors")
    cal, reports = {}, {}
    for name, params in (("plugin-mlp", PLUGIN), ("digits-cnn", {**DIGITS, "data": data})):
        report = calibrate(name, trials=4, max_walk=4, seed=1, params=params, artifacts=store)
        reports[name] = report
        cal[name] = store.add_bytes(make_record(report))
    return Setup(store, data, cal, reports)


# -- the optimizer formulas ----------------------------------------------------------------------


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_steps_match_torch_optim(setup: Setup, opt: str) -> None:
    spec = setup.spec("plugin-mlp", optimizer=opt, weight_decay="0.01", lr="0.01")
    k = kernel_for(spec)
    assert isinstance(k, TorchTraining)
    state = k.init_state(spec)
    model = k.model(spec)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(state[f"param.{n}"])
    P = k.typed(spec)
    o = (torch.optim.SGD(model.parameters(), lr=P["lr"], momentum=P["momentum"], weight_decay=P["weight_decay"],
                         foreach=False) if opt == "sgd" else
         torch.optim.AdamW(model.parameters(), lr=P["lr"], betas=(P["beta1"], P["beta2"]), eps=P["eps"],
                           weight_decay=P["weight_decay"], foreach=False))
    for i in range(1, 4):
        state = k.step(state, i, spec)
        x, y = k.samples(spec, (i - 1) * P["batch"], P["batch"])
        o.zero_grad()
        k.loss(model(x), y).backward()
        o.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(state[f"param.{n}"], p.detach(), rtol=2e-6, atol=1e-8)
    assert int(state["cursor"]) == 3 * P["batch"]


def test_the_data_order_comes_from_the_seed_and_covers_every_sample(setup: Setup) -> None:
    spec = setup.spec("digits-cnn")
    k = kernel_for(spec)
    with use_artifacts(setup.store):
        x, y = k.samples(spec, 0, 1797)
        x2, _ = k.samples(dataclasses.replace(spec, seed=6), 0, 1797)
        again, _ = k.samples(spec, 1797, 16)  # the next epoch: another permutation
        xs, ys = k._dataset(setup.data)
    assert sorted(y.tolist()) == sorted(ys.tolist())  # every sample, once per epoch
    assert torch.equal(x.sum(0), xs.sum(0)) or torch.allclose(x.sum(0), xs.sum(0))
    assert not torch.equal(x, x2) and not torch.equal(x[:16], again)


# -- calibration -----------------------------------------------------------------------------------


def test_digits_declares_a_pure_step_and_keeps_it(setup: Setup) -> None:
    """The example declares Kernel.pure_step in its own class (the adapter cannot promise it for a
    model it never saw), and its step never writes its input: the bytes and every tensor's
    version counter are unchanged (the commit process's by-reference reads rely on it)."""
    assert get_kernel("digits-cnn").step_is_pure() and not get_kernel("plugin-mlp").step_is_pure()
    spec = setup.spec("digits-cnn", steps=3)
    k = kernel_for(spec)
    with use_artifacts(setup.store):
        s = k.init_state(spec)
        for i in range(1, 4):
            before, versions = encode_state(s), {n: t._version for n, t in s.items()}
            nxt = k.step(s, i, spec)
            assert encode_state(s) == before and {n: t._version for n, t in s.items()} == versions
            assert not any(t.data_ptr() == u.data_ptr() for t in s.values() for u in nxt.values())
            s = nxt


def test_steps_on_several_threads_at_once_are_the_serial_steps(setup: Setup) -> None:
    """functional_call swaps the module's tensors while a step runs: each thread steps its own copy
    of the module, so steps recomputed at once (respond workers, a verifier's) are the serial ones."""
    spec = setup.spec("digits-cnn", steps=12)
    k = kernel_for(spec)
    with use_artifacts(setup.store):
        states = [k.init_state(spec)]
        for i in range(1, 13):
            states.append(k.step(states[-1], i, spec))
        serial = [encode_state(s) for s in states[1:]]
        barrier = threading.Barrier(3)

        def run(start: int) -> list[tuple[int, bytes]]:
            barrier.wait()
            return [(i, encode_state(k.step(states[i - 1], i, spec))) for i in range(start, 13, 3) for _ in range(2)]

        with use_artifacts(setup.store), ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(contextvars.copy_context().run, run, a) for a in (1, 2, 3)]
            got = [r for f in futures for r in f.result()]
    assert len(got) == 24 and all(b == serial[i - 1] for i, b in got)


class _CountingBuffer(torch.nn.Module):
    """A layer that updates a float buffer in place as it runs (as BatchNorm's running statistics do)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 4)
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add_(x.shape[0])
        return self.lin(x)


def test_a_buffer_updated_in_place_by_the_model_leaves_the_input_state_as_it_was(setup: Setup) -> None:
    class Counting(get_kernel("plugin-mlp").__class__):  # type: ignore[misc]
        def model(self, spec: JobSpec) -> torch.nn.Module:
            return _CountingBuffer()

    spec = setup.spec("plugin-mlp", steps=2)
    k = Counting()
    s = k.init_state(spec)
    before = encode_state(s)
    nxt = k.step(s, 1, spec)
    assert encode_state(s) == before and float(s["buffer.seen"]) == 0.0
    assert float(nxt["buffer.seen"]) == spec.params["batch"]


@pytest.mark.parametrize("name", ["plugin-mlp", "digits-cnn"])
def test_calibration_record_separates_honest_from_downgrades(setup: Setup, name: str) -> None:
    report = setup.reports[name]
    assert not report_failed(report), report
    assert report["false_fails"] == 0 and report["worst_honest_over_tau"] < 1
    assert all(d["min_needed_tau_over_tau"] > 1 for d in report["downgrades"].values())
    rec = parse_record(setup.store.read_bytes(setup.cal[name]))
    assert rec["kernel"] == f"{name}@1" and set(rec["tau"]) == {"param", "sgd"}


def test_no_calibration_record_refuses_to_judge(setup: Setup) -> None:
    spec = setup.spec("plugin-mlp", calibration="")
    k = kernel_for(spec)
    s0 = k.init_state(spec)
    s1 = k.step(s0, 1, spec)  # it runs ...
    with pytest.raises(NotCalibrated, match="calibration record"):
        k.judge(s0, s1, 1, spec)  # ... but is not judged: not a FAIL of the worker
    c = Commitment.create(spec=spec, root=bytes(32), key=WORKER, provider=k.provider)
    with pytest.raises(NotCalibrated):
        Verifier(key=VERIFIER, artifacts=setup.store).challenge(c, beacon=bytes(32))


# -- the verifier's installation ---------------------------------------------------------------------


class Party:
    """A committed trace in memory (every state kept) that answers a challenge."""

    def __init__(self, spec: JobSpec, states: list[State], provider: str) -> None:
        self.encoded = [encode_state(s) for s in states]
        self.tree = MerkleTree(b"".join(digest_encoded(e) for e in self.encoded))
        self.commitment = Commitment.create(spec=spec, root=self.tree.root, key=WORKER, provider=provider)

    def reply(self, q: Query) -> Opening | Response:
        """A dispute party's answer to the referee's query, from this trace."""
        return answer_from_memory(self.commitment, self.tree, self.encoded, q)

    def answer(self, indices: tuple[int, ...]) -> Response:
        leaves = Response.opened_leaves(list(indices))
        c = self.commitment
        return Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=indices,
                        states={j: self.encoded[j] for j in leaves}, proof=tuple(self.tree.multiproof(leaves)))


def honest(spec: JobSpec, store: ArtifactStore) -> list[State]:
    k = kernel_for(spec)
    with use_artifacts(store):
        states = [k.init_state(spec)]
        for i in range(1, spec.steps + 1):
            states.append(k.step(states[-1], i, spec))
    return [decode_state(encode_state(s)) for s in states]


def check_all(spec: JobSpec, states: list[State], store: ArtifactStore, provider: str | None = None) -> dict[int, Any]:
    party = Party(spec, states, provider or kernel_for(spec).provider)
    v = Verifier(key=VERIFIER, artifacts=store)
    ch = v.challenge(party.commitment, beacon=bytes(range(32)), k=spec.steps)
    verdict = v.check(party.commitment, ch, party.answer(ch.indices))
    return {o.index: o for o in verdict.outcomes}


def test_an_honest_job_passes_and_the_prover_records_the_provider(setup: Setup, tmp_path: Path) -> None:
    spec = setup.spec("plugin-mlp", steps=6)
    c = Prover(trace_dir=tmp_path / "t", key=WORKER, artifacts=setup.store).run(spec)
    assert c.provider == "pocv-plugin-test==0.1.0"
    assert Commitment.from_json(c.to_json()).provider == c.provider
    out = check_all(spec, honest(spec, setup.store), setup.store)
    assert all(o.reason is Reason.OK for o in out.values()), out


def test_another_provider_version_is_refused_naming_both(setup: Setup) -> None:
    spec = setup.spec("plugin-mlp")
    with pytest.raises(ProviderMismatch, match=r"pocv-plugin-test==0\.0\.9.*pocv-plugin-test==0\.1\.0"):
        check_all(spec, honest(spec, setup.store), setup.store, provider="pocv-plugin-test==0.0.9")


def test_a_verifier_without_the_artifact_refuses_naming_its_hash(setup: Setup, tmp_path: Path) -> None:
    spec = setup.spec("digits-cnn")
    c = Commitment.create(spec=spec, root=bytes(32), key=WORKER, provider=get_kernel("digits-cnn").provider)
    empty = ArtifactStore(tmp_path / "empty")
    with pytest.raises(ArtifactError, match=f"{setup.cal['digits-cnn']} is not in the artifact store"):
        Verifier(key=VERIFIER, artifacts=empty).challenge(c, beacon=bytes(32))
    empty.add_bytes(setup.store.read_bytes(setup.cal["digits-cnn"]))
    with pytest.raises(ArtifactError, match=f"{setup.data} is not in the artifact store"):
        Verifier(key=VERIFIER, artifacts=empty).challenge(c, beacon=bytes(32))
    altered = ArtifactStore(tmp_path / "altered")
    ref = altered.add(setup.store.location(setup.data))
    data = bytearray(altered.location(ref).read_bytes())
    data[-1] ^= 1
    altered.location(ref).write_bytes(bytes(data))
    altered.add_bytes(setup.store.read_bytes(setup.cal["digits-cnn"]))
    with pytest.raises(ArtifactError, match=f"{setup.data}.*altered"):
        Verifier(key=VERIFIER, artifacts=altered).challenge(c, beacon=bytes(32))


# -- the referee's installation (pocv.dispute) ---------------------------------------------------------


def _pair(setup: Setup, provider_a: str | None = None, provider_b: str | None = None) -> tuple[Party, Party]:
    """An honest party and one whose step 2 used a learning rate 1% off, on the plugin kernel."""
    spec = setup.spec("plugin-mlp", steps=4)
    k = kernel_for(spec)
    assert isinstance(k, TorchTraining)
    chain = honest(spec, setup.store)
    with use_artifacts(setup.store):
        bad, _ = _with(Variant(lr_scale=1.01))(k, spec, chain)
    bad = [decode_state(encode_state(s)) for s in bad]
    for i in range(3, spec.steps + 1):  # the liar goes on from its own state
        with use_artifacts(setup.store):
            bad[i] = decode_state(encode_state(k.step(bad[i - 1], i, spec)))
    return Party(spec, chain, provider_a or k.provider), Party(spec, bad, provider_b or k.provider)


def test_the_referee_judges_with_its_own_store_and_names_the_liar(setup: Setup) -> None:
    a, b = _pair(setup)
    result = run_dispute(a.commitment, b.commitment, a.reply, b.reply, key=VERIFIER, artifacts=setup.store)
    assert (result.outcome.case, result.outcome.liars, result.outcome.step) == ("outside-bound", ("B",), 2)
    assert [v.root for v in result.verdicts] == [b.commitment.root] and not result.verdicts[0].passed


def test_a_referee_with_another_provider_refuses_before_any_round(setup: Setup) -> None:
    a, b = _pair(setup, "pocv-plugin-test==0.0.9", "pocv-plugin-test==0.0.8")
    with pytest.raises(ProviderMismatch, match=r"pocv-plugin-test==0\.0\.8 and pocv-plugin-test==0\.0\.9.*"
                                               r"pocv-plugin-test==0\.1\.0 installed"):
        Dispute.open(a.commitment, b.commitment, artifacts=setup.store)
    d = Dispute.from_json(Dispute(a.commitment, b.commitment).to_json(), artifacts=setup.store)
    q = d.query()
    while q.kind == "bisect":  # bisect rounds compare hashes: no kernel runs
        d.submit(a.reply(q), b.reply(q))
        q = d.query()
    with pytest.raises(ProviderMismatch):  # a session read back is checked before the kernel runs
        d.submit(a.reply(q), b.reply(q))
    assert not d.done


def test_one_party_naming_another_provider_is_noted_not_refused(setup: Setup) -> None:
    a, b = _pair(setup, provider_b="pocv-plugin-test==0.0.9")
    d = Dispute.open(a.commitment, b.commitment, artifacts=setup.store)
    assert len(d.notes) == 1 and "pocv-plugin-test==0.0.9" in d.notes[0] and b.commitment.root.hex()[:16] in d.notes[0]


def test_a_referee_without_the_calibration_record_refuses_naming_its_hash(setup: Setup, tmp_path: Path) -> None:
    a, b = _pair(setup)
    with pytest.raises(ArtifactError, match=f"{setup.cal['plugin-mlp']} is not in the artifact store"):
        Dispute.open(a.commitment, b.commitment, artifacts=ArtifactStore(tmp_path / "empty"))


# -- the attacks (issue 11, point 6) ---------------------------------------------------------------

B = {"plugin-mlp": 16, "digits-cnn": 16}
At = Callable[[TorchTraining, JobSpec, list[State]], tuple[list[State], Reason]]


def _with(variant: Variant) -> At:
    def attack(k: TorchTraining, spec: JobSpec, chain: list[State]) -> tuple[list[State], Reason]:
        bad = k.step_with(chain[1], 2, spec, "cpu", variant)
        return [chain[0], chain[1], bad, *chain[3:]], Reason.MISMATCH
    return attack


def _skip(k: TorchTraining, spec: JobSpec, chain: list[State]) -> tuple[list[State], Reason]:
    return [chain[0], chain[1], {**chain[1], "cursor": chain[2]["cursor"]}, *chain[3:]], Reason.MISMATCH


def _replay(k: TorchTraining, spec: JobSpec, chain: list[State]) -> tuple[list[State], Reason]:
    return [chain[0], chain[1], {**chain[0], "cursor": chain[2]["cursor"]}, *chain[3:]], Reason.MISMATCH


def _swap(k: TorchTraining, spec: JobSpec, chain: list[State]) -> tuple[list[State], Reason]:
    n = int(spec.params["batch"]) * int(spec.params["micro_batches"])
    s2 = k.step_with(chain[1], 2, spec, "cpu", Variant(data_cursor_offset=n))
    s3 = k.step_with(s2, 3, spec, "cpu", Variant(data_cursor_offset=-n))
    return [chain[0], chain[1], s2, s3, *chain[4:]], Reason.MISMATCH


def _other_shape(k: TorchTraining, spec: JobSpec, chain: list[State]) -> tuple[list[State], Reason]:
    s2 = dict(chain[2])
    name = next(n for n in s2 if n.startswith("param.") and s2[n].dim() == 2)
    s2[name] = torch.as_tensor(s2[name]).t().contiguous()
    return [chain[0], chain[1], s2, *chain[3:]], Reason.BAD_STATE


def _model_seed(k: TorchTraining, spec: JobSpec, chain: list[State]) -> tuple[list[State], Reason]:
    other = dataclasses.replace(spec, seed=spec.seed + 1)
    states = [k.init_state(other)]
    for i in range(1, spec.steps + 1):
        states.append(k.step(states[-1], i, spec))
    return states, Reason.BAD_INIT


ATTACKS: dict[str, At] = {
    "skipped-step": _skip,
    "replayed-earlier-state": _replay,
    "bf16-autocast": _with(Variant(autocast=torch.bfloat16)),
    "fp16-autocast": _with(Variant(autocast=torch.float16)),
    "lr-1%-off": _with(Variant(lr_scale=1.01)),
    "batches-swapped": _swap,
    "batch-replaced-by-other-data": _with(Variant(data_seed=12345)),
    "weight-decay-dropped": _with(Variant(drop_weight_decay=True)),
    "different-model-seed": _model_seed,
    "state-of-another-shape": _other_shape,
}


@pytest.mark.parametrize("kernel", ["plugin-mlp", "digits-cnn"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_is_caught(setup: Setup, kernel: str, attack: str) -> None:
    spec = setup.spec(kernel, steps=4)
    k = kernel_for(spec)
    assert isinstance(k, TorchTraining)
    chain = honest(spec, setup.store)
    with use_artifacts(setup.store):
        states, reason = ATTACKS[attack](k, spec, chain)
    states = [decode_state(encode_state(s)) for s in states]
    out = check_all(spec, states, setup.store)
    assert out[1].reason is (Reason.BAD_INIT if reason is Reason.BAD_INIT else Reason.OK), out[1]
    faked = [i for i in (2, 3) if not all(torch.equal(torch.as_tensor(states[i][n]), torch.as_tensor(chain[i][n]))
                                          for n in chain[i]) or set(states[i]) != set(chain[i])]
    if reason is Reason.BAD_INIT:
        assert all(o.reason is Reason.BAD_INIT for o in out.values())
        return
    assert faked and all(out[i].reason is reason for i in faked[:1]), (attack, out)


# -- honest runs never fail (slow) ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["plugin-mlp", "digits-cnn"])
def test_honest_variants_never_fail(setup: Setup, kernel: str) -> None:
    """>= 1,000 checked steps per kernel: every honest implementation (1 and N threads, micro-batches
    split, oneDNN off, the float64 reference) judged by Kernel.judge against the verifier's own step."""
    spec = setup.spec(kernel, steps=1 << 20, seed=11)
    k = kernel_for(spec)
    assert isinstance(k, TorchTraining)
    variants = k.honest_variants()
    checked = fails = 0
    with use_artifacts(setup.store):
        state = k.init_state(spec)
        i = 0
        while checked < 1000:
            i += 1
            for fn in variants.values():
                claimed = decode_state(encode_state(fn(state, i, spec)))
                fails += not k.judge(state, claimed, i, spec).ok
                checked += 1
            state = k.step(state, i, spec)
    assert fails == 0, f"{fails} false FAIL in {checked} honest checks"
    print(json.dumps({"kernel": kernel, "checked": checked, "steps": i, "false_fails": fails}))
