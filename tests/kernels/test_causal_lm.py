"""``hf-causal-lm`` (pocv.kernels.causal_lm) on tiny random transformers models built from a config
in the test and saved as safetensors artifacts (no download: HF_HUB_OFFLINE=1): replayable
sampling, the calibration record, honest runs through the real Verifier, and the attacks of issue
12 point 4, each caught. GPT-2 and Qwen2 and the 1,000-position honest sweep are slow.

The default run imports only the pure rule (pocv.kernels._llm): importing pocv.kernels.causal_lm
registers the kernel in this process (until it is listed among the built-ins), so the fixtures
import it when a slow test needs it."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from solders.keypair import Keypair

from pocv.artifacts import ArtifactStore
from pocv.bundle import Response
from pocv.check import Verifier
from pocv.encoding import State, decode_state, digest_encoded, encode_state
from pocv.errors import NotCalibrated, Reason, SpecError
from pocv.jobs import JobSpec
from pocv.kernels import get_kernel, resolve_spec
from pocv.kernels._llm import Job, Variant, allowed, fingerprints, gumbel, judge_positions, select
from pocv.kernels.params import use_artifacts
from pocv.merkle import MerkleTree
from pocv.records import Commitment

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers: Any = None  # imported by the fixtures (seconds): the default run does not pay for it

WORKER, VERIFIER = Keypair.from_seed(bytes([7]) * 32), Keypair.from_seed(bytes([8]) * 32)
VOCAB = 256


def tiny(arch: str, seed: int, width: int = 64) -> torch.nn.Module:
    """A random model of ``arch`` built from its config (no download), its output layer scaled so
    the next-token distribution is peaked like a trained model's (a random one is nearly flat)."""
    m = _tiny(arch, seed, width)
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(40.0)
    return m


def _tiny(arch: str, seed: int, width: int) -> Any:
    torch.manual_seed(seed)
    if arch == "llama":
        cfg: Any = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=2 * width,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=512)
        return transformers.LlamaForCausalLM(cfg)
    if arch == "qwen2":
        cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=width, intermediate_size=2 * width,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=512)
        return transformers.Qwen2ForCausalLM(cfg)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=width, n_layer=2, n_head=4, n_positions=512,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


class Lab:
    def __init__(self, store: ArtifactStore, models: dict[str, str], cal: dict[str, str]) -> None:
        self.store, self.models, self.cal = store, models, cal

    def spec(self, arch: str = "llama", steps: int = 3, seed: int = 5, **extra: Any) -> JobSpec:
        params: dict[str, Any] = {"model": self.models[arch], "prompt": "1,2,3,4;9,8", "block": 4,
                                  "calibration": self.cal[arch]}
        params.update(extra)
        with use_artifacts(self.store):
            return resolve_spec(JobSpec(kernel="hf-causal-lm", steps=steps, seed=seed, params=params))


def _lm() -> Any:
    """The kernel module (imported, and the kernel registered, when a test first needs it)."""
    import pocv.kernels.causal_lm as lm  # reason: registers hf-causal-lm; only the slow tests need it

    return lm


def build(root: Path, archs: tuple[str, ...]) -> Lab:
    global transformers
    transformers = pytest.importorskip("transformers")
    lm = _lm()
    store = ArtifactStore(root / "store")
    models: dict[str, str] = {}
    for arch in archs:
        for tag, seed in (("", 0), ("-other", 1)):
            where = root / f"{arch}{tag}"
            tiny(arch, seed).save_pretrained(str(where))
            models[arch + tag] = store.add(where)
    cal: dict[str, str] = {}
    with use_artifacts(store):
        for arch in archs:
            report = lm.calibrate_record({"model": models[arch], "block": 4}, trials=1, steps=2, batch=2)
            assert report["false_fails"] == 0, report
            cal[arch] = store.add_bytes(lm.make_record(report))
    return Lab(store, models, cal)


#: every test below that loads transformers (import, model loads and a calibration: tens of seconds)
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return build(tmp_path_factory.mktemp("llm"), ("llama",))


def run(lab: Lab, spec: JobSpec, variant: Variant = Variant(), states: list[State] | None = None) -> list[State]:
    k = get_kernel("hf-causal-lm")
    assert isinstance(k, _lm().CausalLM)
    with use_artifacts(lab.store):
        out = [k.init_state(spec)] if states is None else list(states)
        for i in range(len(out), spec.steps + 1):
            out.append(k.step_with(out[-1], i, spec, "cpu", variant))
    return [decode_state(encode_state(s)) for s in out]


class Party:
    """A committed trace in memory that answers a challenge."""

    def __init__(self, spec: JobSpec, states: list[State]) -> None:
        self.encoded = [encode_state(s) for s in states]
        self.tree = MerkleTree(b"".join(digest_encoded(e) for e in self.encoded))
        self.commitment = Commitment.create(spec=spec, root=self.tree.root, key=WORKER,
                                            provider=get_kernel("hf-causal-lm").provider)

    def answer(self, indices: tuple[int, ...]) -> Response:
        leaves = Response.opened_leaves(list(indices))
        c = self.commitment
        return Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=indices,
                        states={j: self.encoded[j] for j in leaves}, proof=tuple(self.tree.multiproof(leaves)))


def check_all(lab: Lab, spec: JobSpec, states: list[State]) -> dict[int, Any]:
    party = Party(spec, states)
    v = Verifier(key=VERIFIER, artifacts=lab.store)
    ch = v.challenge(party.commitment, beacon=bytes(range(32)), k=spec.steps)
    return {o.index: o for o in v.check(party.commitment, ch, party.answer(ch.indices)).outcomes}


# -- replayable sampling ---------------------------------------------------------------------------


def test_gumbel_noise_is_pinned_and_keyed_by_seed_sequence_and_position() -> None:
    g = gumbel(5, 0, 3, 8)
    assert g.dtype == np.float64 and g.shape == (8,)
    assert np.array_equal(g, gumbel(5, 0, 3, 8))
    for other in (gumbel(6, 0, 3, 8), gumbel(5, 1, 3, 8), gumbel(5, 0, 4, 8)):
        assert not np.array_equal(g, other)
    # a regression vector: BLAKE3-derived, the same on every machine
    assert [float(x) for x in g[:3]] == pytest.approx([1.047931, 0.729866, 0.095825], abs=1e-6)


def test_gumbel_max_samples_the_filtered_softmax() -> None:
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
    counts = np.zeros(5)
    for pos in range(4000):
        counts[select(logits, 1.0, 3, 1.0, gumbel(1, 0, pos, 5))] += 1
    p = np.exp(logits[:3]) / np.exp(logits[:3]).sum()
    assert counts[3:].sum() == 0  # top-k = 3 keeps three tokens
    assert np.allclose(counts[:3] / 4000, p, atol=0.03)
    assert allowed(logits, 1.0, 0, 0.5).tolist() == [True, False, False, False, False]  # p0 = 0.563 >= 0.5
    assert allowed(logits, 1.0, 0, 0.7).tolist() == [True, True, False, False, False]  # 0.563 + 0.207
    assert allowed(logits, 1.0, 2, 1.0).tolist() == [True, True, False, False, False]


def _rule_case(temperature: float) -> tuple[Job, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    job = Job(prompts=((1,), (2,)), temperature=temperature, top_k=0 if temperature == 0 else 20, top_p=0.9,
              block=3, k=4, n=6, dtype="float32", model="")
    rows = np.random.default_rng(3).normal(0, 4, size=(2, 3, 64)).astype(np.float32)
    toks = np.array([[select(rows[b, p].astype(np.float64), temperature, job.top_k, job.top_p,
                             gumbel(9, b, 3 + p, 64) if temperature else None) for p in range(3)]
                     for b in range(2)], dtype=np.int32)
    return job, rows, toks


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_the_rule_accepts_the_honest_choice_within_the_noise_and_nothing_else(temperature: float) -> None:
    """judge_positions on synthetic logits (no model): the honest tokens and fingerprints pass, also
    recomputed with rounding-sized noise; another token, a fingerprint off by more than the bound,
    a fingerprint of other logits fail."""
    job, rows, toks = _rule_case(temperature)
    fp = fingerprints(rows, toks, 4)
    tau = 32.0
    assert judge_positions(rows, toks, fp, 9, 3, job, tau, 2.0**-100).ok
    noisy = rows * (1 + np.float32(2.0**-22) * np.sign(rows))  # a few ulps: an honest other implementation
    assert judge_positions(noisy, toks, fp, 9, 3, job, tau, 2.0**-100).ok
    other = toks.copy()
    other[1, 2] = (other[1, 2] + 1) % 64
    bad = judge_positions(rows, other, fingerprints(rows, other, 4), 9, 3, job, tau, 2.0**-100)
    assert not bad.ok
    assert "sequence 1 position 5" in bad.detail
    off = {k: v.copy() for k, v in fp.items()}
    off["fp.topk"][0, 1, 2] += 1e-3
    assert "top-3 logit" in judge_positions(rows, toks, off, 9, 3, job, tau, 2.0**-100).detail
    moved = rows + np.float32(0.01) * np.random.default_rng(4).normal(size=rows.shape).astype(np.float32)
    assert not judge_positions(rows, toks, fingerprints(moved, toks, 4), 9, 3, job, tau, 2.0**-100).ok


def test_a_near_tie_is_accepted_either_way() -> None:
    job, rows, toks = _rule_case(0.0)
    row = rows[0, 0]
    second = int(np.argsort(row)[-2])
    row[second] = row.max() * (1 - np.float32(2.0**-23))  # within rounding of the top logit
    for c in (int(np.argmax(row)), second):
        t = toks.copy()
        t[0, 0] = c
        assert judge_positions(rows, t, fingerprints(rows, t, 4), 9, 3, job, 32.0, 2.0**-100).ok, c


# -- the job and its record --------------------------------------------------------------------------


@slow
def test_an_honest_job_passes_with_one_forward_pass_per_response(lab: Lab) -> None:
    spec = lab.spec()
    states = run(lab, spec)
    toks = states[-1]["tokens"]
    assert toks.shape == (2, 12) and int(toks.min()) >= 0
    assert all(o.reason is Reason.OK for o in check_all(lab, spec, states).values())
    k = get_kernel("hf-causal-lm")
    assert isinstance(k, _lm().CausalLM)
    with use_artifacts(lab.store):
        batched = k.judge_steps([(states[i - 1], states[i], i) for i in (3, 1)], spec)
    assert all(c.ok for c in batched), batched


@slow
def test_sampling_is_replayed_by_the_verifier(lab: Lab) -> None:
    spec = lab.spec(temperature="0.9", top_k=40, top_p="0.95", seed=9)
    states = run(lab, spec)
    assert all(o.reason is Reason.OK for o in check_all(lab, spec, states).values())
    again = run(lab, spec, Variant(cache=False, threads=1))
    assert torch.equal(states[-1]["tokens"], again[-1]["tokens"])


@slow
def test_honest_variants_pass(lab: Lab) -> None:
    spec = lab.spec(steps=2)
    for v in (Variant(threads=1, cache=False), Variant(attn="eager", cache=False),
              Variant(per_sequence=True, cache=False), Variant(extra_pad=3, cache=False)):
        out = check_all(lab, spec, run(lab, spec, v))
        assert all(o.reason is Reason.OK for o in out.values()), (v, out)


@slow
def test_a_job_without_a_record_or_with_another_models_record_is_not_judged(lab: Lab) -> None:
    for spec in (lab.spec(calibration=""), lab.spec(model=lab.models["llama-other"]),
                 lab.spec(dtype="bfloat16")):
        c = Commitment.create(spec=spec, root=bytes(32), key=WORKER, provider=get_kernel("hf-causal-lm").provider)
        with pytest.raises(NotCalibrated, match="calibration record"):
            Verifier(key=VERIFIER, artifacts=lab.store).challenge(c, beacon=bytes(32))


@slow
def test_prompts_are_token_ids_in_the_spec_or_an_artifact(lab: Lab) -> None:
    ref = lab.store.add_bytes(json.dumps({"token_ids": [[1, 2, 3, 4], [9, 8]]}).encode())
    a, b = lab.spec(), lab.spec(prompt="", prompts=ref)
    assert a.job_id != b.job_id
    assert torch.equal(run(lab, a)[-1]["tokens"], run(lab, b)[-1]["tokens"])
    with pytest.raises(SpecError, match="prompt"):
        lab.spec(prompt="")
    # text, tokenized by the tokenizer in the model artifact
    from tokenizers import Tokenizer, models, pre_tokenizers  # reason: only this test builds a tokenizer

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    where = lab.store.root.parent / "llama-tok"
    tiny("llama", 0).save_pretrained(str(where))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(str(where))
    model = lab.store.add(where)
    text = lab.store.add_bytes(json.dumps({"text": ["t1 t2 t3 t4", "t9 t8"]}).encode())
    c = lab.spec(model=model, prompt="", prompts=text, calibration="")
    assert torch.equal(run(lab, c)[-1]["tokens"], run(lab, a)[-1]["tokens"])
    with pytest.raises(SpecError, match="token ids in 0..255"):
        lab.spec(prompt="1,2,999")


# -- the attacks (issue 12 point 4) ----------------------------------------------------------------

Attack = Callable[[Lab, JobSpec, list[State]], list[State]]


def _variant(v: Variant) -> Attack:
    return lambda lab, spec, chain: run(lab, spec, v, chain[:2])


def _other_params(**change: Any) -> Attack:
    def attack(lab: Lab, spec: JobSpec, chain: list[State]) -> list[State]:
        params = {**spec.params, **change}
        other = dataclasses.replace(spec, params=params)
        return run(lab, other, Variant(cache=False), chain[:2])
    return attack


def _other_seed(lab: Lab, spec: JobSpec, chain: list[State]) -> list[State]:
    return run(lab, dataclasses.replace(spec, seed=spec.seed + 1), Variant(cache=False), chain[:2])


def _edit(fn: Callable[[np.ndarray[Any, Any]], None]) -> Attack:
    """Change step 2's tokens, then continue honestly from the altered state."""
    def attack(lab: Lab, spec: JobSpec, chain: list[State]) -> list[State]:
        s2 = dict(chain[2])
        t = s2["tokens"].numpy().copy()
        fn(t)
        s2["tokens"] = torch.from_numpy(t)
        return run(lab, spec, Variant(cache=False), [*chain[:2], s2])
    return attack


def _altered(t: np.ndarray[Any, Any]) -> None:
    t[0, 5] = (t[0, 5] + 1) % VOCAB


def _inserted(t: np.ndarray[Any, Any]) -> None:
    t[1, 5:8] = np.concatenate([[17], t[1, 4:6]])  # block 2 = positions 4..7: one token inserted at 5


def _dropped(t: np.ndarray[Any, Any]) -> None:
    t[1, 4:8] = np.concatenate([t[1, 5:8], t[1, 7:8]])


def _copied_fingerprint(lab: Lab, spec: JobSpec, chain: list[State]) -> list[State]:
    other = run(lab, dataclasses.replace(spec, params={**spec.params, "prompt": "7,7,7,7;6,6"}))
    s2 = {**chain[2], **{k: v for k, v in other[2].items() if k.startswith("fp.")}}
    s2["tokens"] = chain[2]["tokens"]
    return [*chain[:2], s2, *chain[3:]]


def _other_prompt_tokens(lab: Lab, spec: JobSpec, chain: list[State]) -> list[State]:
    other = run(lab, dataclasses.replace(spec, params={**spec.params, "prompt": "7,7,7,7;6,6"}))
    return [*chain[:2], *other[2:]]


ATTACKS: dict[str, Attack] = {
    "another-model": lambda lab, spec, chain: run(lab, spec, Variant(model=lab.models["llama-other"], cache=False),
                                                  chain[:2]),
    "int8-weights": _variant(Variant(quant="int8", cache=False)),
    "int4-weights": _variant(Variant(quant="int4", cache=False)),
    "bf16-when-fp32-ordered": _variant(Variant(dtype="bfloat16", cache=False)),
    "fp16-when-fp32-ordered": _variant(Variant(dtype="float16", cache=False)),
    "noised-weights-1e-3": _variant(Variant(quant="noise:1e-3", cache=False)),
    "attention-window-shortened-to-4": _variant(Variant(window=4, cache=False)),
    "another-temperature": _other_params(temperature="1.6"),
    "another-top-p": _other_params(top_p="0.3"),
    "another-seed": _other_seed,
    "token-altered": _edit(_altered),
    "token-inserted": _edit(_inserted),
    "token-dropped": _edit(_dropped),
    "fingerprint-copied-onto-other-tokens": _copied_fingerprint,
    "tokens-of-another-prompt": _other_prompt_tokens,
}


@slow
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_is_caught(lab: Lab, attack: str) -> None:
    sampling = attack in {"another-temperature", "another-top-p", "another-seed"}
    spec = lab.spec(temperature="1.0", top_p="0.95", seed=3) if sampling else lab.spec()
    chain = run(lab, spec)
    states = ATTACKS[attack](lab, spec, chain)
    out = check_all(lab, spec, states)
    assert out[1].reason is Reason.OK, out[1]
    # a changed sampling rule shows only where it changes a choice: the first such step fails
    first = next(i for i in (2, 3) if not torch.equal(states[i]["tokens"], chain[i]["tokens"])
                 or any(not torch.equal(states[i][n], chain[i][n]) for n in chain[i]))
    assert not out[first].ok, (attack, out)
    assert out[first].reason in {Reason.MISMATCH, Reason.BAD_STATE}


# -- other architectures and the honest sweep (slow) --------------------------------------------------


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return build(tmp_path_factory.mktemp("llm3"), ("llama", "gpt2", "qwen2"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
@pytest.mark.parametrize("attack", ["another-model", "int8-weights", "int4-weights", "bf16-when-fp32-ordered",
                                    "token-altered", "fingerprint-copied-onto-other-tokens"])
def test_attack_is_caught_on_other_architectures(lab3: Lab, arch: str, attack: str) -> None:
    spec = lab3.spec(arch)
    chain = run(lab3, spec)
    fn = ATTACKS[attack]
    if attack == "another-model":
        def fn(lab: Lab, spec: JobSpec, chain: list[State]) -> list[State]:
            return run(lab, spec, Variant(model=lab.models[f"{arch}-other"], cache=False), chain[:2])
    out = check_all(lab3, spec, fn(lab3, spec, chain))
    assert out[1].reason is Reason.OK and not out[2].ok, (arch, attack, out)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_honest_runs_never_fail(lab3: Lab, arch: str) -> None:
    """>= 1,000 checked positions per architecture: greedy and sampling jobs, every honest worker
    variant (threads, eager attention, one sequence at a time, extra padding, prefill fingerprints),
    judged by the verifier's rule."""
    k = get_kernel("hf-causal-lm")
    assert isinstance(k, _lm().CausalLM)
    variants = [Variant(), Variant(threads=1, cache=False), Variant(attn="eager", cache=False),
                Variant(per_sequence=True, cache=False), Variant(extra_pad=4, cache=False),
                Variant(forced_fingerprints=True, cache=False)]
    checked = fails = 0
    seed = 100
    while checked < 1000:
        seed += 1
        sampling = {"temperature": "0.7", "top_k": 50, "top_p": "0.9"} if seed % 2 else {}
        spec = lab3.spec(arch, steps=4, seed=seed, prompt=f"{seed % 200},3,{seed % 7};5,{seed % 11}", **sampling)
        for v in variants:
            states = run(lab3, spec, v)
            with use_artifacts(lab3.store):
                verdicts = k.judge_steps([(states[i - 1], states[i], i) for i in range(1, 5)], spec)
            fails += sum(not c.ok for c in verdicts)
            checked += 2 * 16
    assert fails == 0


@slow
def test_hostile_states_get_a_judgement_never_an_exception(lab: Lab) -> None:
    """What test_hostile_states does for the artifact-free kernels: any values in a state of the
    right schema (tokens beyond the vocabulary, negative ids, NaN and infinite fingerprints, a
    broken layout) are judged, never raised."""
    spec = lab.spec(steps=2)
    chain = run(lab, spec)
    k = get_kernel("hf-causal-lm")
    rng = np.random.default_rng(0)
    cases: list[State] = []
    for name in chain[1]:
        for value in (-1, 2**31 - 1, float("nan"), float("inf"), -2**31):
            t = chain[1][name].clone()
            if t.dtype.is_floating_point:
                t.view(-1)[rng.integers(t.numel())] = value
            else:
                t.view(-1)[rng.integers(t.numel())] = int(value) if value == value and abs(value) != float("inf") else 0
            cases.append({**chain[1], name: t})
    with use_artifacts(lab.store):
        for claimed in cases:
            for prev, i in ((chain[0], 1), (claimed, 2)):
                got = k.judge(prev, claimed if i == 1 else chain[2], i, spec)
                assert isinstance(got.ok, bool)
            assert not k.judge(chain[0], claimed, 1, spec).ok or all(
                torch.equal(claimed[n], chain[1][n]) for n in claimed)
