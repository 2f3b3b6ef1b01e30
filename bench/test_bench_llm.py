"""hf-causal-lm (issue 12): what verification costs, what it catches, and pocv beside TOPLOC and
token-difr on the same models and the same tokens.

Models: tiny random Llama, GPT-2 and Qwen2 built from a config (their output layer scaled so the
next-token distributions are peaked, like a trained model's), saved as safetensors artifacts by the
bench itself; never a download.

(a) ``test_costs`` (the targets): pocv's worker (generation with the KV cache kept across steps,
    fingerprints, encoding and hashing every state) over plain ``model.generate`` of the same tokens
    (<= 1.05); checking the challenged positions (k >= 66 of a 1,024-token generation, one
    teacher-forced pass) over generating the job (<= 1/10); bytes committed and opened.
(b) ``test_detection`` (per architecture): N greedy jobs of 256 tokens per attack (another model of
    the same architecture, int8 / int4 weights, bf16 / fp16 inference when fp32 was ordered) and N honest jobs (rotating through honest
    worker variants: the default with its KV cache, eager attention, one thread, extra left padding);
    each job is judged by
    * pocv: ``CHALLENGED`` beacon-drawn steps of 16 positions, one teacher-forced pass, the calibrated
      rule (and, for the record, the fraction of all steps that FAIL);
    * TOPLOC 0.1.6: proofs of the worker's own last hidden states (the unembedding's input, captured
      during its decode; top-128 per chunk of 32 tokens, bf16), validated against a prefill of the
      ordered model with the authors' thresholds (bench/peer_toploc.py);
    * token-difr 0.1.2: its Gumbel-max verification (``token_difr.common._verify_vllm_gumbel_max``
      on the verifier's teacher-forced logits; its public ``verify_outputs`` needs vLLM on CUDA), a
      job flagged when any token is not the one the reference selects (exact-match rate < 1: the
      strictest threshold it has; it sees tokens only).
(c) ``test_side_by_side``: bytes committed per generated token, bytes opened per checked position and
    verifier time per checked position over worker time per generated token, for the three.

    pytest bench/test_bench_llm.py --benchmark-only -s       (POCV_BENCH_QUICK=1: smaller)
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.conftest import QUICK, quick, write_result

transformers = pytest.importorskip("transformers", reason="pip install transformers (the LLM kernel's dependency)")

import torch  # noqa: E402

from pocv.artifacts import ArtifactStore  # noqa: E402
from pocv.encoding import digest_encoded, encode_state, encoded_size  # noqa: E402
from pocv.jobs import JobSpec  # noqa: E402
from pocv.kernels import get_kernel, resolve_spec  # noqa: E402
from pocv.kernels._tolerance import torch_threads  # noqa: E402
from pocv.kernels.causal_lm import CausalLM, Variant, calibrate_record, make_record  # noqa: E402
from pocv.kernels.params import use_artifacts  # noqa: E402

pytestmark = pytest.mark.bench
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CFG: dict[str, Any] = {"vocab": 2048, "width": quick(64, 128), "layers": quick(2, 4), "heads": 4,
                       "prompt_tokens": 32, "new_tokens": quick(128, 1024), "block": 16, "fingerprint_k": 4,
                       "challenged_steps": quick(2, 5), "threads": 1}
#: the detection and side-by-side runs (b, c): tiny models of three architectures, jobs of 256 tokens
DET: dict[str, Any] = {"archs": ("llama", "gpt2", "qwen2"), "vocab": 512, "width": 64, "layers": 2, "heads": 4,
                       "prompt_tokens": 16, "new_tokens": quick(64, 256), "block": 16, "jobs": quick(1, 8),
                       "challenged_steps": 4, "threads": 1}
#: "another-model": the same architecture with other weights (its artifact is the lab's "<arch>-other",
#: filled in per architecture): the swapped model the retired transformer-decode's TOPLOC bench ran
ATTACKS: dict[str, Variant] = {"another-model": Variant(cache=False),
                               "int8-weights": Variant(quant="int8", cache=False),
                               "int4-weights": Variant(quant="int4", cache=False),
                               "bf16-when-fp32-ordered": Variant(dtype="bfloat16", cache=False),
                               "fp16-when-fp32-ordered": Variant(dtype="float16", cache=False)}
HONEST: tuple[tuple[str, Variant], ...] = (("default (KV cache across steps)", Variant()),
                                           ("eager attention", Variant(attn="eager", cache=False)),
                                           ("1 thread", Variant(threads=1, cache=False)),
                                           ("5 extra left-padding columns", Variant(extra_pad=5, cache=False)))
#: published figures of the systems not run here (issue 12's text), with their conditions
PUBLISHED = {
    "CommitLLM (lambdaclass)": "commits a Merkle receipt while serving normally, opens only challenged positions, "
                               "checks matmuls with Freivalds; 1.3 ms of CPU verification per challenged token on "
                               "Llama-70B; 12-14% tracing overhead on the worker",
    "GRAIL (Bittensor subnet 81)": "checks 32 beacon-drawn positions per rollout with a cross-GPU tolerance "
                                   "calibrated over about 300 million positions",
}
RESULTS: dict[str, Any] = {"config": {**CFG, "quick": QUICK}, "detection_config": {**DET, "quick": QUICK},
                           "published": PUBLISHED}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


RESULTS["versions"] = {n: _version(n) for n in ("transformers", "toploc", "token-difr")}


def _kernel() -> CausalLM:
    k = get_kernel("hf-causal-lm")
    assert isinstance(k, CausalLM)
    return k


# -- (a) the targets on one larger Llama ------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("llm-bench")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=CFG["vocab"], hidden_size=CFG["width"],
                                   intermediate_size=2 * CFG["width"], num_hidden_layers=CFG["layers"],
                                   num_attention_heads=CFG["heads"], num_key_value_heads=CFG["heads"],
                                   max_position_embeddings=2048)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)  # peaked next-token distributions, like a trained model
    model.save_pretrained(str(root / "model"))
    store = ArtifactStore(root / "store")
    ref = store.add(root / "model")
    with use_artifacts(store):
        report = calibrate_record({"model": ref, "block": CFG["block"]}, trials=1, steps=2, batch=2)
    RESULTS["calibration"] = {k: report[k] for k in ("tau_by_group", "false_fails", "checks", "downgrades")}
    cal = store.add_bytes(make_record(report))
    prompt = ",".join(str((7 * i + 3) % CFG["vocab"]) for i in range(CFG["prompt_tokens"]))
    params = {"model": ref, "prompt": prompt, "block": CFG["block"], "fingerprint_k": CFG["fingerprint_k"],
              "calibration": cal}
    steps = CFG["new_tokens"] // CFG["block"]
    with use_artifacts(store):
        spec = resolve_spec(JobSpec(kernel="hf-causal-lm", steps=steps, seed=1, params=params))
    return {"store": store, "spec": spec, "model_dir": root / "model", "prompt": prompt}


def _worker(store: ArtifactStore, spec: JobSpec, variant: Variant = Variant()) -> tuple[list[Any], float]:
    """pocv's worker: every step, each state encoded and hashed (what the prover does); the time."""
    k = _kernel()
    with use_artifacts(store):
        k.model(str(spec.params["model"]), "float32")  # loaded before the clock starts
        start = time.perf_counter()
        states = [k.init_state(spec)]
        for i in range(1, spec.steps + 1):
            states.append(k.step_with(states[-1], i, spec, "cpu", variant))
            digest_encoded(encode_state(states[-1]))
        return states, time.perf_counter() - start


def _best_of(n: int, fn: Any) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def test_costs(setup: dict[str, Any], benchmark: Any) -> None:
    spec = setup["spec"]
    k = _kernel()
    n = CFG["new_tokens"]
    with torch_threads(CFG["threads"]):
        model = transformers.AutoModelForCausalLM.from_pretrained(str(setup["model_dir"]), dtype=torch.float32)
        ids = torch.tensor([[int(t) for t in setup["prompt"].split(",")]])

        def plain() -> Any:
            with torch.no_grad():
                return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)

        # interleaved, best of 2 each: the machine is shared, the minimum is the least disturbed run
        times_w, times_p = [], []
        states: list[Any] = []
        out: Any = None
        for _ in range(2):
            k._kv = None
            states, t = _worker(setup["store"], spec)
            times_w.append(t)
            out, t = _best_of(1, plain)
            times_p.append(t)
        t_worker, t_plain = min(times_w), min(times_p)
        same = int((out[0, ids.shape[1]:].numpy() == states[-1]["tokens"].numpy()[0]).sum())
        steps = spec.steps
        chosen = [steps - 2 * j for j in range(CFG["challenged_steps"])]  # the last ones: the longest prefixes
        items = [(states[i - 1], states[i], i) for i in chosen]
        with use_artifacts(setup["store"]):
            one = benchmark.pedantic(k.judge_steps, args=(items, spec), rounds=1, iterations=1)
            _, t_one = _best_of(2, lambda: k.judge_steps(items, spec))
            start = time.perf_counter()
            per = [k.judge_steps([it], spec)[0] for it in items]
            t_per = time.perf_counter() - start
    assert all(c.ok for c in one)
    assert all(c.ok for c in per)
    positions = len(items) * CFG["block"]
    state_bytes = encoded_size(k.schema(spec))
    token_bytes = 4 * n
    fp_bytes = state_bytes - token_bytes
    RESULTS["costs"] = {
        "tokens_equal_to_plain_generate": f"{same}/{n}",
        "worker_s": t_worker, "plain_generate_s": t_plain, "commit_overhead": t_worker / t_plain,
        "worker_runs_s": times_w, "plain_generate_runs_s": times_p,
        "worker_s_per_token": t_worker / n,
        "challenged_steps": len(items), "challenged_positions": positions,
        "verify_one_pass_s": t_one, "verify_per_step_s": t_per,
        "verify_s_per_challenged_position_one_pass": t_one / positions,
        "verifier_per_position_over_worker_per_token": (t_one / positions) / (t_worker / n),
        "verify_all_challenged_over_generate": t_one / t_worker,
        "state_bytes": state_bytes, "token_buffer_bytes": token_bytes,
        "fingerprint_bytes_per_position": fp_bytes / CFG["block"],
        "opened_bytes_per_challenged_position": 2 * state_bytes / CFG["block"],
        "opened_bytes_per_challenged_position_beyond_tokens": 2 * fp_bytes / CFG["block"],
        "worker_stored_bytes_per_generated_token": state_bytes * (steps + 1) / n,
        "load_average": os.getloadavg(),
    }
    write_result("llm", RESULTS)
    print(RESULTS["costs"])


# -- (b, c) three architectures, 256-token jobs, pocv beside TOPLOC and token-difr ------------------------


def _tiny(arch: str, seed: int) -> Any:
    torch.manual_seed(seed)
    v, w, n, h = DET["vocab"], DET["width"], DET["layers"], DET["heads"]
    if arch == "llama":
        m: Any = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=v, hidden_size=w, intermediate_size=2 * w, num_hidden_layers=n, num_attention_heads=h,
            num_key_value_heads=2, max_position_embeddings=1024))
    elif arch == "qwen2":
        m = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
            vocab_size=v, hidden_size=w, intermediate_size=2 * w, num_hidden_layers=n, num_attention_heads=h,
            num_key_value_heads=2, max_position_embeddings=1024))
    else:
        m = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=v, n_embd=w, n_layer=n, n_head=h,
                                                                 n_positions=1024, bos_token_id=0, eos_token_id=0))
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(40.0)
    return m


@dataclasses.dataclass
class Lab:
    store: ArtifactStore
    models: dict[str, str]
    cal: dict[str, str]

    def spec(self, arch: str, seed: int) -> JobSpec:
        rng = np.random.default_rng(seed)
        prompt = ",".join(str(int(t)) for t in rng.integers(0, DET["vocab"], DET["prompt_tokens"]))
        params = {"model": self.models[arch], "prompt": prompt, "block": DET["block"], "calibration": self.cal[arch]}
        with use_artifacts(self.store):
            return resolve_spec(JobSpec(kernel="hf-causal-lm", steps=DET["new_tokens"] // DET["block"], seed=seed,
                                        params=params))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root: Path = tmp_path_factory.mktemp("llm-det")
    store = ArtifactStore(root / "store")
    models, cal = {}, {}
    for arch in DET["archs"]:
        _tiny(arch, 0).save_pretrained(str(root / arch))
        models[arch] = store.add(root / arch)
        _tiny(arch, 1).save_pretrained(str(root / f"{arch}-other"))  # the "another-model" attack's weights
        models[f"{arch}-other"] = store.add(root / f"{arch}-other")
        with use_artifacts(store), torch_threads(DET["threads"]):
            report = calibrate_record({"model": models[arch], "block": DET["block"]}, trials=1, steps=2, batch=2)
        assert report["false_fails"] == 0, report
        cal[arch] = store.add_bytes(make_record(report))
        RESULTS.setdefault("detection_calibration", {})[arch] = {
            k: report[k] for k in ("tau_by_group", "checks", "false_fails", "downgrades")}
    return Lab(store, models, cal)


@contextlib.contextmanager
def _capture_unembedding_input(model: Any) -> Iterator[list[torch.Tensor]]:
    """Every input of the model's output layer while the block runs (TOPLOC's activations)."""
    got: list[torch.Tensor] = []

    def hook(_m: Any, args: tuple[Any, ...]) -> None:
        got.append(args[0].detach().float().clone())

    handle = model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        yield got
    finally:
        handle.remove()


@dataclasses.dataclass
class Run:
    states: list[Any]
    hidden: torch.Tensor  # float32[B, T, d]: the worker's last hidden state that chose each token
    worker_s: float


def _run(lab: Lab, spec: JobSpec, v: Variant) -> Run:
    k = _kernel()
    j = k.job(spec)
    with use_artifacts(lab.store), torch_threads(v.threads or DET["threads"]):
        model = k.model(v.model or j.model, v.dtype or j.dtype, "cpu", v.attn, v.quant)
        k._kv = None
        with _capture_unembedding_input(model) as got:
            start = time.perf_counter()
            states = [k.init_state(spec)]
            for i in range(1, spec.steps + 1):
                states.append(k.step_with(states[-1], i, spec, "cpu", v))
                digest_encoded(encode_state(states[-1]))
            t = time.perf_counter() - start
    per_token = [h[:, -1, :] for h in got]  # one call per generated token (prefill: the last column)
    assert len(per_token) == j.n, (len(per_token), j.n)
    return Run(states=states, hidden=torch.stack(per_token, dim=1), worker_s=t)


def _prefill(lab: Lab, spec: JobSpec, tokens: np.ndarray[Any, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference model's teacher-forced pass over prompt + tokens: (hidden float32[B, T, d], logits
    float32[B, T, V]) at the positions that chose each generated token (TOPLOC's and token-difr's
    verifier input)."""
    k = _kernel()
    j = k.job(spec)
    with use_artifacts(lab.store):
        model = k.model(j.model, j.dtype, "cpu")
    prompt = list(j.prompts[0])
    ids = torch.tensor([prompt + [int(t) for t in tokens[0, :-1]]])
    t_len = tokens.shape[1]
    with torch.no_grad(), _capture_unembedding_input(model) as got:
        out = model(input_ids=ids, use_cache=False, logits_to_keep=t_len)
    return got[0][:, -t_len:, :], out.logits.float()


def _toploc(run_hidden: torch.Tensor, ref_hidden: torch.Tensor) -> dict[str, Any]:
    from bench import peer_toploc  # reason: imports toploc (optional: the bench extra)

    proofs = peer_toploc.toploc_proofs(run_hidden)
    judged = peer_toploc.toploc_judge(peer_toploc.toploc_verify(ref_hidden, proofs))
    judged["proof_bytes"] = sum(len(p) for seq in proofs for p in seq)
    return judged


def _difr(tokens: np.ndarray[Any, Any], logits: torch.Tensor) -> dict[str, Any]:
    """token-difr's verification of one sequence (greedy) on the verifier's logits float32[1, T, V]."""
    from token_difr.common import _get_probs, _verify_vllm_gumbel_max  # reason: optional peer

    lg = logits[0]
    t_len, vocab = lg.shape
    gold = torch.as_tensor(tokens[0].astype(np.int64))
    top_k = torch.full((t_len,), vocab, dtype=torch.long)
    top_p = torch.full((t_len,), 1.0, dtype=lg.dtype)
    probs = _get_probs(lg, 0.0, top_k.clone(), top_p)
    pred, _ranks, margins = _verify_vllm_gumbel_max(temperature=0.0, seed=0, logits_JV=lg, probs_JV=probs,
                                                    gold_col_idx_J=gold, top_k_tensor_J=top_k.clone(),
                                                    top_p_tensor_J=top_p)
    match = float((pred == gold).float().mean())
    return {"exact_match_rate": match, "mean_margin": float(margins.mean()), "flagged": match < 1.0}


def _peers_available() -> dict[str, str | None]:
    """None where the peer runs here, else why not."""
    out: dict[str, str | None] = {}
    try:
        import toploc  # noqa: F401  # reason: optional peer (bench extra, built from source)

        out["toploc"] = None
    except Exception as e:  # an ImportError or the wheel's undefined-symbol OSError
        out["toploc"] = f"{type(e).__name__}: {e}"
    try:
        import token_difr  # noqa: F401  # reason: optional peer (pip install --no-deps token-difr)

        out["token-difr"] = None
    except Exception as e:
        out["token-difr"] = f"{type(e).__name__}: {e}"
    return out


def _judge(lab: Lab, spec: JobSpec, run: Run, seed: int, peers: dict[str, str | None]) -> dict[str, Any]:
    k = _kernel()
    steps = spec.steps
    with use_artifacts(lab.store), torch_threads(DET["threads"]):
        verdicts = k.judge_steps([(run.states[i - 1], run.states[i], i) for i in range(1, steps + 1)], spec)
    drawn = np.random.default_rng(10_000 + seed).choice(steps, size=min(DET["challenged_steps"], steps),
                                                        replace=False)
    out: dict[str, Any] = {"pocv_caught": any(not verdicts[int(i)].ok for i in drawn),
                           "pocv_steps_failed": sum(not c.ok for c in verdicts) / steps,
                           "pocv_failed_steps": sum(not c.ok for c in verdicts), "pocv_steps": steps,
                           "pocv_worst": max(c.worst_ratio for c in verdicts)}
    tokens = run.states[-1]["tokens"].numpy()
    if peers.get("toploc") is None or peers.get("token-difr") is None:
        with torch_threads(DET["threads"]):
            ref_hidden, logits = _prefill(lab, spec, tokens)
        if peers.get("toploc") is None:
            t = _toploc(run.hidden, ref_hidden)
            out.update(toploc_flagged=not t["passed"], toploc_worst=t["worst_ratio"])
        if peers.get("token-difr") is None:
            d = _difr(tokens, logits)
            out.update(difr_flagged=d["flagged"], difr_match=d["exact_match_rate"])
    return out


@pytest.mark.parametrize("arch", DET["archs"])
def test_detection(lab: Lab, arch: str, benchmark: Any) -> None:
    peers = _peers_available()
    RESULTS["peers_unavailable"] = {k: v for k, v in peers.items() if v is not None}
    jobs = DET["jobs"]

    def sweep() -> dict[str, Any]:
        rows: dict[str, list[dict[str, Any]]] = {"honest": [], **{a: [] for a in ATTACKS}}
        for j in range(jobs):
            seed = 1000 + j
            spec = lab.spec(arch, seed)
            name, hv = HONEST[j % len(HONEST)]
            honest = _run(lab, spec, hv)
            rows["honest"].append({"variant": name, **_judge(lab, spec, honest, seed, peers)})
            for attack, v in ATTACKS.items():
                other = lab.models[f"{arch}-other"]
                cheat = _run(lab, spec, dataclasses.replace(v, model=other) if attack == "another-model" else v)
                same = int((cheat.states[-1]["tokens"] == honest.states[-1]["tokens"]).sum())
                rows[attack].append({"tokens_equal_to_honest": same, **_judge(lab, spec, cheat, seed, peers)})
        return rows

    rows = benchmark.pedantic(sweep, rounds=1, iterations=1)
    table: dict[str, Any] = {}
    for what, rs in rows.items():
        entry: dict[str, Any] = {"jobs": len(rs), "tokens_per_job": DET["new_tokens"],
                                 "pocv_flagged": sum(r["pocv_caught"] for r in rs),
                                 "pocv_flagged_rate": sum(r["pocv_caught"] for r in rs) / len(rs),
                                 "pocv_failed_steps_of_all": f"{sum(r['pocv_failed_steps'] for r in rs)}/"
                                                             f"{sum(r['pocv_steps'] for r in rs)}",
                                 "pocv_steps_failed_mean": float(np.mean([r["pocv_steps_failed"] for r in rs])),
                                 "pocv_worst_ratio_min": float(min(r["pocv_worst"] for r in rs)),
                                 "pocv_worst_ratio_max": float(max(r["pocv_worst"] for r in rs))}
        if "toploc_flagged" in rs[0]:
            entry["toploc_flagged"] = sum(r["toploc_flagged"] for r in rs)
            entry["toploc_worst_ratio_max"] = float(max(r["toploc_worst"] for r in rs))
        if "difr_flagged" in rs[0]:
            entry["difr_flagged"] = sum(r["difr_flagged"] for r in rs)
            entry["difr_exact_match_min"] = float(min(r["difr_match"] for r in rs))
        if what == "honest":
            entry["worker_variants"] = sorted({r["variant"] for r in rs})
        else:
            entry["tokens_equal_to_honest_mean"] = float(np.mean([r["tokens_equal_to_honest"] for r in rs]))
        table[what] = entry
    table["load_average"] = os.getloadavg()
    RESULTS.setdefault("detection", {})[arch] = table
    write_result("llm", RESULTS)
    print(arch, table)
    assert table["honest"]["pocv_flagged"] == 0
    for attack in ATTACKS:
        assert table[attack]["pocv_flagged"] == jobs, (arch, attack, table[attack])


def test_side_by_side(lab: Lab, benchmark: Any) -> None:
    """Bytes and verifier time per checked position / worker time per generated token, one honest
    256-token Llama job, the three systems on the same tokens."""
    peers = _peers_available()
    k = _kernel()
    spec = lab.spec("llama", 77)
    j = k.job(spec)
    n = j.n
    with torch_threads(DET["threads"]):
        run = min((_run(lab, spec, Variant()) for _ in range(2)), key=lambda r: r.worker_s)
        tokens = run.states[-1]["tokens"].numpy()
        with use_artifacts(lab.store):
            model = k.model(j.model, j.dtype, "cpu")
        ids = torch.tensor([list(j.prompts[0])])

        def plain() -> Any:
            with torch.no_grad():
                return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)

        gen, t_plain = _best_of(2, plain)
        assert np.array_equal(gen[0, ids.shape[1]:].numpy(), tokens[0])
        chosen = sorted(np.random.default_rng(3).choice(spec.steps, DET["challenged_steps"], replace=False) + 1)
        items = [(run.states[i - 1], run.states[i], int(i)) for i in chosen]
        with use_artifacts(lab.store):
            verdicts = benchmark.pedantic(k.judge_steps, args=(items, spec), rounds=1, iterations=1)
            _, t_pocv = _best_of(3, lambda: k.judge_steps(items, spec))
        assert all(c.ok for c in verdicts)
        pos = len(items) * DET["block"]
        state_bytes = encoded_size(k.schema(spec))
        fp_bytes = state_bytes - 4 * n
        out: dict[str, Any] = {
            "tokens": n, "plain_generate_s_per_token": t_plain / n,
            "pocv": {"worker_s_per_token": run.worker_s / n, "worker_over_plain_generate": run.worker_s / t_plain,
                     "committed_bytes_per_token_beyond_token": fp_bytes / DET["block"],
                     "commitment_record": "a 32-byte Merkle root over every state (one signed record per job)",
                     "checked_positions": pos,
                     "opened_bytes_per_checked_position_beyond_tokens": 2 * fp_bytes / DET["block"],
                     "verifier_s_per_checked_position": t_pocv / pos,
                     "verifier_per_position_over_worker_per_token": (t_pocv / pos) / (run.worker_s / n)}}
        (ref_hidden, logits), t_prefill = _best_of(3, lambda: _prefill(lab, spec, tokens))
        if peers.get("toploc") is None:
            from bench import peer_toploc  # reason: imports toploc (optional: the bench extra)

            proofs, t_build = _best_of(3, lambda: peer_toploc.toploc_proofs(run.hidden))
            res, t_check = _best_of(3, lambda: peer_toploc.toploc_verify(ref_hidden, proofs))
            size = sum(len(p) for seq in proofs for p in seq)
            assert peer_toploc.toploc_judge(res)["passed"]
            worker = t_plain + t_build  # decode (activations kept by a hook) + building the proofs
            out["toploc"] = {"worker_s_per_token": worker / n, "proof_build_s_per_token": t_build / n,
                             "committed_bytes_per_token": size / n, "checked_positions": n,
                             "opened_bytes_per_checked_position": size / n,
                             "verifier_s_per_checked_position": (t_prefill + t_check) / n,
                             "verifier_per_position_over_worker_per_token": ((t_prefill + t_check) / n) / (worker / n),
                             "note": "validates every position (a prefill of the whole response); the proofs "
                                     "travel whole"}
        if peers.get("token-difr") is None:
            d, t_difr = _best_of(3, lambda: _difr(tokens, logits))
            assert d["exact_match_rate"] == 1.0
            out["token-difr"] = {"worker_s_per_token": t_plain / n, "committed_bytes_per_token": 0,
                                 "checked_positions": n, "opened_bytes_per_checked_position": 0,
                                 "verifier_s_per_checked_position": (t_prefill + t_difr) / n,
                                 "verifier_per_position_over_worker_per_token":
                                     ((t_prefill + t_difr) / n) / (t_plain / n),
                                 "note": "commits nothing: recomputes every position and compares the tokens "
                                         "(greedy: argmax; sampling needs vLLM's seeded sampler on the worker)"}
    out["peers_unavailable"] = {k_: v for k_, v in peers.items() if v is not None}
    out["load_average"] = os.getloadavg()
    RESULTS["side_by_side"] = out
    write_result("llm", RESULTS)
    print(out)
