"""``hf-causal-lm``: verified text generation with any Hugging Face ``transformers`` causal LM.

The job (typed parameters, all in the job id):

* ``model``: a directory artifact with ``config.json`` and ``*.safetensors`` (and, for text
  prompts, the tokenizer files); loaded with ``local_files_only``, ``use_safetensors`` and no
  remote code, never downloaded (set ``HF_HUB_OFFLINE=1``);
* the prompts: ``prompt`` (token ids in the spec itself, ``"1,2,3"``, several prompts separated
  by ``;``) or ``prompts`` (a JSON artifact ``{"token_ids": [[...], ...]}`` or, tokenized with
  the model directory's tokenizer, ``{"text": ["...", ...]}``); B prompts = a batch of B sequences;
* ``dtype`` float32 | bfloat16 | float16 (the ordered precision of the weights and activations);
* ``temperature`` (0: greedy), ``top_k`` (0: off), ``top_p`` (1: off): the sampling rule;
* ``block`` tokens per step; ``steps`` x ``block`` new tokens per sequence at most;
* ``stop_at_eos`` (default false: every sequence runs ``steps`` x ``block`` tokens): a sequence ends
  at its first EOS token (the model artifact's ``eos_token_id``, config.json or
  generation_config.json); every later position holds STOPPED (-2) and an all-zero fingerprint, and
  once every sequence has ended the remaining steps cost no model call;
* ``fingerprint_k``: top-k logits in each position's fingerprint;
* ``calibration``: the calibration record of (model, dtype) (:func:`calibrate_record`).

Sampling is replayable anywhere: the position's Gumbel noise ``g_v = -log(-log(u_v))`` comes from
BLAKE3's XOF keyed by (job seed, sequence, position) (``u`` = 53-bit uniforms), and the token is
``argmax_v (logit_v / T + g_v)`` over the tokens the top-k / top-p filter allows (the Gumbel-max
trick: an exact sample of the filtered softmax). Greedy is ``argmax logit``.

A step generates ``block`` tokens per sequence (why a block: a challenged step costs the verifier
one teacher-forced forward pass whose price is set by the prefix length, so a block checks
``block`` positions for the price of one; and a block amortizes hashing the token buffer into
the commitment). State (B sequences, N = steps x block new tokens, K = fingerprint_k):

* ``tokens`` int32[B, N]: every token generated so far, ``-1`` beyond (the job's result);
* ``fp.topk_ids`` int32[B, block, K], ``fp.topk`` float32[B, block, K]: the K largest logits of
  each position of this step's block and their token ids;
* ``fp.chosen`` float32[B, block]: the logit of the chosen token; ``fp.rms`` float32[B, block]:
  the root mean square of the position's logits.

Never the KV cache: 8 K + 12 bytes per position beyond its token (K = 4: 44 bytes). The worker
keeps its KV cache between its own consecutive steps (an in-process cache keyed by the state's
tokens), so committing costs one prefill per job, not per step.

The check (:meth:`CausalLM.verify_step`, batched: :meth:`CausalLM.judge_steps`): the verifier
runs ONE teacher-forced forward pass over prompt + committed tokens and, for every position of
the block, with its own logits ``e`` (float32 of the ordered dtype), the record's ``tau`` and
``u = 2^-24``, noise ``b(x) = tau u (|x| + rms(e)) + floor`` and position noise
``B = tau u (max|e| + rms(e)) + floor``:

1. tokens before the block are the previous state's, tokens after it are ``-1``; with
   ``stop_at_eos``, every position after a sequence's first EOS is STOPPED and no position is
   STOPPED without an EOS before it (else FAIL, bad state: a worker cannot end a sequence early);
   the EOS token that stopped a sequence before the block is judged by rule 2 in the same pass;
2. the claimed token is the one its own logits select, except within the noise: greedy
   ``e[c] >= max e - 2B``; sampling ``c`` allowed by the filter loosened by the noise and
   ``e[c]/T + g_c >= max_{v allowed under the tightened filter} (e[v]/T + g_v) - 2B/T``;
3. the fingerprint lies within the bound: ``|chosen - e[c]| <= b(e[c])``, ``|topk_j - e[id_j]|
   <= b(e[id_j])``, ids distinct, every ``e[id_j] >= (K-th largest e) - 2B``, and
   ``|rms - rms(e)| <= 2 tau u rms(e) + floor``.

``tau`` comes from the job's calibration record for exactly this model artifact and dtype: a
job without one runs, but is not judged (NotCalibrated).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Final

import numpy as np
import torch
from blake3 import blake3

from pocv.encoding import State, Tensor
from pocv.errors import ArtifactError, EvidenceError, NotCalibrated, SetupError, SpecError, StateError
from pocv.jobs import JobSpec
from pocv.kernels import register
from pocv.kernels._llm import (
    FILL,
    PAD,
    STOPPED,
    Job,
    Variant,
    allowed,
    fingerprints,
    gumbel,
    judge_positions,
    needed_tau,
    position_noise,
    select,
    stop_layout,
    token_verdict,
)
from pocv.kernels._tolerance import U32, StepFn, ToleranceKernel, torch_threads
from pocv.kernels._util import as_numpy, strict_fp32
from pocv.kernels.base import Comparison, Schema
from pocv.kernels.params import Artifact, Bool, Enum, Float, Int, Param, Str, artifact_bytes, artifact_path

FLOOR: Final = 2.0**-100
RECORD_TYPE: Final = "pocv calibration record"
MAX_PROMPTS: Final = 256
MAX_PROMPT_TOKENS: Final = 32768
MAX_NEW_TOKENS: Final = 1 << 16
MAX_FINGERPRINT_K: Final = 32
_MODEL_CACHE: Final = 6
DTYPES: Final[dict[str, torch.dtype]] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                         "float16": torch.float16}
_PROMPT_RE: Final = r"\d{1,9}(,\d{1,9})*(;\d{1,9}(,\d{1,9})*)*"


def _check_record(data: bytes, ref: str) -> dict[str, Any]:
    where = f"calibration record {ref}"
    try:
        rec = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise NotCalibrated(f"{where} is not JSON: {e}") from e
    if not isinstance(rec, dict) or rec.get("type") != RECORD_TYPE or rec.get("version") != 1:
        raise NotCalibrated(f"{where} is not a pocv calibration record (type {RECORD_TYPE!r}, version 1)")
    tau = rec.get("tau")
    if not isinstance(tau, dict) or not isinstance(tau.get("fp"), int | float) or not 0 < tau["fp"] < 1e12:
        raise NotCalibrated(f"{where}: expected a positive tau for group 'fp', got {tau!r:.120}")
    floor = rec.get("floor")
    if not isinstance(floor, int | float) or not 0 <= floor < 1:
        raise NotCalibrated(f"{where}: floor must be a number in [0, 1), got {floor!r}")
    params = rec.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise NotCalibrated(f"{where} names no model artifact")
    return rec


@register
class CausalLM(ToleranceKernel):
    name: ClassVar[str] = "hf-causal-lm"
    version: ClassVar[int] = 1
    summary: ClassVar[str] = ("text generation with any transformers causal LM (model artifact); tokens + "
                              "per-position logit fingerprints, checked in one teacher-forced pass (tolerance)")
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    tau: ClassVar[float] = math.nan  # from the calibration record, never guessed
    floor: ClassVar[float] = FLOOR
    calibrated_by_record: ClassVar[bool] = True
    params: ClassVar[dict[str, Param]] = {
        "model": Artifact(required=True, what="model directory: config.json + *.safetensors (+ tokenizer)"),
        "prompt": Str("", max_len=256, pattern=f"({_PROMPT_RE})?"),
        "prompts": Artifact(what='prompts: JSON {"token_ids": [[...], ...]} or {"text": [...]}'),
        "dtype": Enum("float32", tuple(DTYPES)),
        "temperature": Float(0.0, 0.0, 100.0),
        "top_k": Int(0, 0, 1 << 24),
        "top_p": Float(1.0, 1e-6, 1.0),
        "block": Int(16, 1, 4096),
        "fingerprint_k": Int(4, 1, MAX_FINGERPRINT_K),
        "stop_at_eos": Bool(False),
        "calibration": Artifact(what="calibration record: pocv.kernels.causal_lm.calibrate_record"),
    }

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str, str, str], Any] = {}
        self._prompts: dict[tuple[str, str, str], tuple[tuple[int, ...], ...]] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self._kv: tuple[bytes, Any, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- the job --------------------------------------------------------------------------------

    def job(self, spec: JobSpec) -> Job:
        P = self.typed(spec)
        prompts = self._prompt_ids(str(P["model"]), str(P["prompt"]), str(P["prompts"]))
        longest = self._config(str(P["model"]))["positions"]
        n = spec.steps * int(P["block"])
        if longest is not None and max(len(p) for p in prompts) + n > longest:
            raise SpecError(f"{self.name}: the longest prompt ({max(len(p) for p in prompts)} tokens) + {n} new tokens "
                            f"exceed the model's {longest} positions")
        eos: frozenset[int] = frozenset()
        if P["stop_at_eos"]:
            eos = self._config(str(P["model"]))["eos"]
            if not eos:
                raise SpecError(f"{self.name}: stop_at_eos=true, but model artifact {P['model']} names no "
                                f"eos_token_id (config.json or generation_config.json)")
        return Job(prompts=prompts, temperature=float(P["temperature"]), top_k=int(P["top_k"]),
                   top_p=float(P["top_p"]), block=int(P["block"]), k=int(P["fingerprint_k"]),
                   n=spec.steps * int(P["block"]), dtype=str(P["dtype"]), model=str(P["model"]), eos=eos)

    def _prompt_ids(self, model: str, prompt: str, ref: str) -> tuple[tuple[int, ...], ...]:
        key = (model, prompt, ref)
        if key in self._prompts:
            return self._prompts[key]
        if bool(prompt) == bool(ref):
            raise SpecError(f"{self.name} takes its prompts from exactly one of 'prompt' (token ids) and 'prompts' "
                            f"(an artifact); got prompt={prompt!r:.40} and prompts={ref!r}")
        if prompt:
            out = tuple(tuple(int(t) for t in p.split(",")) for p in prompt.split(";"))
        else:
            try:
                doc = json.loads(artifact_bytes(ref))
            except (ValueError, RecursionError) as e:
                raise SpecError(f"prompts artifact {ref} is not JSON: {e}") from e
            if isinstance(doc, dict) and isinstance(doc.get("token_ids"), list):
                raw = doc["token_ids"]
                if not all(isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
                           for p in raw):
                    raise SpecError(f"prompts artifact {ref}: token_ids must be lists of integers")
                out = tuple(tuple(p) for p in raw)
            elif isinstance(doc, dict) and isinstance(doc.get("text"), list) and all(
                    isinstance(t, str) for t in doc["text"]):
                out = self._tokenize(model, doc["text"])
            else:
                raise SpecError(f'prompts artifact {ref} must be {{"token_ids": [[...], ...]}} or {{"text": [...]}}')
        vocab = self._config(model)["vocab"]
        if not 1 <= len(out) <= MAX_PROMPTS:
            raise SpecError(f"{self.name}: 1..{MAX_PROMPTS} prompts, got {len(out)}")
        for p in out:
            if not 1 <= len(p) <= MAX_PROMPT_TOKENS or not all(0 <= t < vocab for t in p):
                raise SpecError(f"{self.name}: each prompt is 1..{MAX_PROMPT_TOKENS} token ids in 0..{vocab - 1}, "
                                f"got one of {len(p)} tokens ({list(p[:8])}...)")
        if len(self._prompts) > 64:
            self._prompts.clear()
        self._prompts[key] = out
        return out

    def _tokenize(self, model: str, texts: list[str]) -> tuple[tuple[int, ...], ...]:
        _offline()
        from transformers import AutoTokenizer  # heavy: only for text prompts

        path = artifact_path(model)
        try:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        except Exception as e:
            raise ArtifactError(f"model artifact {model} has no usable tokenizer for text prompts: "
                                f"{type(e).__name__}: {e}") from e
        return tuple(tuple(int(t) for t in tok(t)["input_ids"]) for t in texts)

    def _config(self, model: str) -> dict[str, Any]:
        if model in self._configs:
            return self._configs[model]
        path = artifact_path(model) / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ArtifactError(f"model artifact {model} has no readable config.json: {e}") from e
        vocab = cfg.get("vocab_size")
        if not isinstance(vocab, int) or vocab < 2:
            raise ArtifactError(f"model artifact {model}: config.json must give vocab_size, got {vocab!r}")
        longest = cfg.get("max_position_embeddings", cfg.get("n_positions"))
        eos: set[int] = set()
        sources = [cfg]
        with contextlib.suppress(OSError, ValueError):
            sources.append(json.loads((path.parent / "generation_config.json").read_text()))
        for src in sources:
            ids = src.get("eos_token_id") if isinstance(src, dict) else None
            for t in ids if isinstance(ids, list) else [ids]:
                if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab:
                    eos.add(t)
        self._configs[model] = {"vocab": vocab, "positions": longest if isinstance(longest, int) else None,
                                "eos": frozenset(eos)}
        return self._configs[model]

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().check_params(params)
        if not out["prompt"] and not out["prompts"]:
            raise SpecError(f"{self.name}: give the prompts as 'prompt' (token ids, e.g. \"1,2,3;4,5\") or "
                            f"'prompts' (an artifact)")
        if out["prompt"] and out["prompts"]:
            raise SpecError(f"{self.name}: give 'prompt' or 'prompts', not both")
        return out

    def check_limits(self, spec: JobSpec) -> None:
        n = spec.steps * int(spec.params["block"])
        if n > MAX_NEW_TOKENS:
            raise SpecError(f"{self.name}: steps x block = {n:,} new tokens; at most {MAX_NEW_TOKENS:,}")
        with contextlib.suppress(SetupError):  # sizes need the artifacts; without them, require() says so
            super().check_limits(spec)

    def schema(self, spec: JobSpec) -> Schema:
        j = self.job(spec)
        b, blk, k = j.batch, j.block, j.k
        return {"tokens": ("int32", (b, j.n)), "fp.topk_ids": ("int32", (b, blk, k)),
                "fp.topk": ("float32", (b, blk, k)), "fp.chosen": ("float32", (b, blk)),
                "fp.rms": ("float32", (b, blk))}

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        return {name: (torch.full(shape, PAD, dtype=torch.int32) if name == "tokens"
                       else torch.zeros(shape, dtype=torch.int32 if dt == "int32" else torch.float32))
                for name, (dt, shape) in self.schema(spec).items()}

    # -- the model --------------------------------------------------------------------------------

    def model(self, ref: str, dtype: str, device: str = "cpu", attn: str = "sdpa", quant: str = "") -> Any:
        key = (ref, dtype, device, attn, quant)
        m: Any = self._models.get(key)
        if m is None:
            _offline()
            from transformers import AutoModelForCausalLM  # heavy (seconds): imported when a job first needs a model
            from transformers.utils import logging as hf_logging  # reason: quiet its progress bars

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

            path = artifact_path(ref)
            if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
                raise ArtifactError(f"model artifact {ref} must be a directory with config.json and *.safetensors")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = AutoModelForCausalLM.from_pretrained(
                        str(path), dtype=torch.float32 if quant else DTYPES[dtype], attn_implementation=attn,
                        local_files_only=True, use_safetensors=True, trust_remote_code=False)
            except Exception as e:
                raise ArtifactError(f"model artifact {ref} cannot be loaded by transformers: "
                                    f"{type(e).__name__}: {str(e)[:300]}") from e
            if quant:
                _quantize(m, quant)
                m = m.to(DTYPES[dtype])
            m = m.eval().requires_grad_(False).to(device)
            if len(self._models) >= _MODEL_CACHE:
                self._models.clear()
            self._models[key] = m
        return m

    # -- generation (the worker) --------------------------------------------------------------------

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        return self.step_with(state, i, spec, device)

    def step_with(self, state: State, i: int, spec: JobSpec, device: str = "cpu",
                  variant: Variant | None = None) -> dict[str, Tensor]:
        """Step ``i`` computed the way ``variant`` says (the default: the job's definition)."""
        variant = Variant() if variant is None else variant
        j = self.job(spec)
        tokens = self._tokens(state, j, (i - 1) * j.block, "previous")
        with _context(device, j.dtype, variant):
            new, fp = self._generate(tokens, (i - 1) * j.block, spec, j, device, variant)
        out_tokens = tokens.copy()
        out_tokens[:, (i - 1) * j.block: i * j.block] = new
        result: dict[str, torch.Tensor] = {"tokens": torch.from_numpy(out_tokens)}
        result.update({k: torch.from_numpy(v) for k, v in fp.items()})
        return {k: v.to(device) for k, v in result.items()}

    def _tokens(self, state: State, j: Job, n: int, which: str) -> np.ndarray[Any, Any]:
        t = as_numpy(state["tokens"]).astype(np.int64)
        if t.shape != (j.batch, j.n):
            raise StateError(f"{which} state: tokens must be int32{(j.batch, j.n)}, got {t.shape}")
        vocab = self._config(j.model)["vocab"]
        head, tail = t[:, :n], t[:, n:]
        if not (((head >= 0) & (head < vocab)) | ((head == STOPPED) & bool(j.eos))).all():
            raise StateError(f"{which} state: the first {n} tokens of each sequence must be ids in 0..{vocab - 1}"
                             + (f" or {STOPPED} (stopped after EOS)" if j.eos else ""))
        if not (tail == PAD).all():
            raise StateError(f"{which} state: tokens from position {n} on must be {PAD} (not generated yet)")
        why = stop_layout(t, n, j.eos)
        if why is not None:
            raise StateError(f"{which} state: {why}")
        return t.astype(np.int32)

    def _contexts(self, j: Job, tokens: np.ndarray[Any, Any], n: int) -> list[list[int]]:
        return [list(p) + [int(x) if x >= 0 else FILL for x in tokens[b, :n]] for b, p in enumerate(j.prompts)]

    def _generate(self, tokens: np.ndarray[Any, Any], n: int, spec: JobSpec, j: Job, device: str,
                  v: Variant) -> tuple[np.ndarray[Any, Any], dict[str, np.ndarray[Any, Any]]]:
        model = self.model(v.model or j.model, v.dtype or j.dtype, device, v.attn, v.quant)
        temp, top_k, top_p = v.sampling or (j.temperature, j.top_k, j.top_p)
        ctxs = self._contexts(j, tokens, n)
        if v.window:
            ctxs = [c[-v.window:] for c in ctxs]
        # a sequence whose EOS came in an earlier step is stopped: no model runs for it
        done = np.array([n > 0 and (int(tokens[b, n - 1]) == STOPPED or int(tokens[b, n - 1]) in j.eos)
                         for b in range(j.batch)], dtype=bool)
        new = np.full((j.batch, j.block), STOPPED, dtype=np.int32)
        if done.all():  # every sequence has stopped: the job's remaining steps cost no model call
            self._kv = None
            rows0 = np.zeros((j.batch, j.block, max(j.k, 1)), dtype=np.float32)
            return new, fingerprints(rows0, new, j.k)
        groups = [[b] for b in range(j.batch)] if v.per_sequence else [list(range(j.batch))]
        parts: list[np.ndarray[Any, Any]] = []
        use_cache = v == Variant() and len(groups) == 1
        key = _cache_key(spec, tokens) if use_cache else b""
        for g in groups:
            r, t, kv = self._decode(model, [ctxs[b] for b in g], g, n, j.block, spec.seed, (temp, top_k, top_p),
                                    device, v.extra_pad, key, done[g], j.eos, v.stop_without_eos)
            new[g] = t
            parts.append(r)
            if use_cache and kv is not None:
                after = tokens.copy()
                after[:, n:n + j.block] = new
                self._kv = (_cache_key(spec, after), *kv)
        rows = np.concatenate(parts, axis=0)
        if v.forced_fingerprints:
            full = tokens.copy()
            full[:, n:n + j.block] = new
            rows = self._forced(model, j, full, n + j.block, range(n, n + j.block), device, v.extra_pad)
        return new, fingerprints(rows, new, j.k)

    def _decode(self, model: Any, ctxs: list[list[int]], seqs: list[int], n: int, blk: int, seed: int,
                sampling: tuple[float, int, float], device: str, extra: int, key: bytes,
                done: np.ndarray[Any, Any] | None = None, eos: frozenset[int] = frozenset(),
                stop_without_eos: int = -1,
                ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], tuple[Any, ...] | None]:
        """Generate ``blk`` tokens after each context: (logit rows float32[B, blk, V], tokens int32[B, blk],
        the KV cache to continue from, None when every sequence has stopped). ``key``: the worker's
        cached KV of its previous step, if it was taken at exactly these tokens. ``done``: the
        sequences already stopped (their tokens are STOPPED; a sequence stops after an ``eos`` token)."""
        temp, top_k, top_p = sampling
        stopped = np.zeros(len(seqs), dtype=bool) if done is None else done.copy()
        hit = self._kv if key and self._kv is not None and self._kv[0] == key else None
        self._kv = None
        with torch.no_grad():
            if hit is not None:
                _, cache, mask, pos, pending = hit
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                pos = pos + 1
                out = model(input_ids=pending[:, None], attention_mask=mask, position_ids=pos[:, None], cache=cache,
                            use_cache=True)
            else:
                ids, mask, posm = _left_pad(ctxs, extra, device)
                pos = posm[:, -1]
                out = model(input_ids=ids, attention_mask=mask, position_ids=posm, use_cache=True, logits_to_keep=1)
            rows: list[np.ndarray[Any, Any]] = []
            toks: list[np.ndarray[Any, Any]] = []
            tok = torch.zeros(len(seqs), dtype=torch.long)
            for jj in range(blk):
                row = out.logits[:, -1, :].float().cpu().numpy()
                rows.append(row)
                choice = np.array([select(row[b].astype(np.float64), temp, top_k, top_p,
                                          gumbel(seed, s, n + jj, row.shape[-1]) if temp > 0 else None)
                                   for b, s in enumerate(seqs)], dtype=np.int64)
                if stop_without_eos >= 0 and n + jj >= stop_without_eos:  # a cheat: sequence 0 ends, no EOS
                    stopped |= np.array([s == 0 for s in seqs])
                choice[stopped] = STOPPED
                toks.append(choice)
                stopped |= np.isin(choice, list(eos)) if eos else False
                cache = _cache_of(out)
                if stopped.all():  # every sequence has ended: the rest of the block is STOPPED, no model call
                    rest = blk - jj - 1
                    rows += [np.zeros_like(row)] * rest
                    toks += [np.full(len(seqs), STOPPED, dtype=np.int64)] * rest
                    return np.stack(rows, axis=1), np.stack(toks, axis=1).astype(np.int32), None
                tok = torch.from_numpy(np.where(choice >= 0, choice, FILL)).to(device)
                if jj < blk - 1:
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                    pos = pos + 1
                    out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                                cache=cache, use_cache=True)
        return np.stack(rows, axis=1), np.stack(toks, axis=1).astype(np.int32), (cache, mask, pos, tok)

    # -- teacher forcing (the verifier) ---------------------------------------------------------------

    def _forced(self, model: Any, j: Job, tokens: np.ndarray[Any, Any], m: int, positions: Sequence[int],
                device: str, extra: int = 0) -> np.ndarray[Any, Any]:
        """Logit rows float32[B, len(positions), V] of the generated ``positions`` (each < m),
        teacher-forced over prompt + tokens[:, :m-1] in one forward pass. Left padding aligns every
        row: generated position p is column L - m + p; only the needed columns reach the LM head."""
        ctxs = self._contexts(j, tokens, m - 1)
        ids, mask, pos = _left_pad(ctxs, extra, device)
        cols = torch.tensor([ids.shape[1] - m + p for p in positions], dtype=torch.long, device=device)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=cols)
        rows: np.ndarray[Any, Any] = out.logits.float().cpu().numpy()
        return rows

    # -- the check ---------------------------------------------------------------------------------

    def verify_step(self, prev: State, claimed: State, i: int, spec: JobSpec, device: str = "cpu") -> Comparison:
        return self.judge_steps([(prev, claimed, i)], spec, device)[0]

    def verify_steps(self, items: Sequence[tuple[State, State, int]], spec: JobSpec,
                     device: str = "cpu") -> list[Comparison]:
        """The batched form of :meth:`verify_step` (the hook a batched ``Kernel.judge_many`` calls)."""
        return self.judge_steps(items, spec, device)

    def judge_steps(self, items: Sequence[tuple[State, State, int]], spec: JobSpec,
                    device: str = "cpu") -> list[Comparison]:
        """Judge several challenged steps of one response with ONE teacher-forced forward pass over the
        longest claimed token sequence (when the claimed sequences agree on their common prefix;
        otherwise one pass per distinct sequence). The rule per position is the module docstring's.
        A step whose states break the schema or the token layout is ``bad_state`` (as :meth:`judge`)."""
        j = self.job(spec)
        tau, floor = self.bound(spec)
        out: list[Comparison | None] = [None] * len(items)
        ok_items: list[tuple[int, np.ndarray[Any, Any], dict[str, np.ndarray[Any, Any]], int]] = []
        for idx, (prev, claimed, i) in enumerate(items):
            why = self.check_schemas(prev, claimed, spec)
            if why is not None:
                out[idx] = Comparison(False, why, bad_state=True)
                continue
            try:
                n = (i - 1) * j.block
                before = self._tokens(prev, j, n, "previous")
                after = self._tokens(claimed, j, n + j.block, "claimed")
            except EvidenceError as e:
                out[idx] = Comparison(False, str(e), bad_state=True)
                continue
            if not np.array_equal(before[:, :n], after[:, :n]):
                b, p = (int(x[0]) for x in np.nonzero(before[:, :n] != after[:, :n]))
                out[idx] = Comparison(False, f"sequence {b} position {p}: the claimed state changes a token of an "
                                             f"earlier step ({before[b, p]} -> {after[b, p]})")
                continue
            ok_items.append((idx, after, {k: as_numpy(claimed[k]) for k in claimed if k.startswith("fp.")}, i))
        if ok_items:
            model = self.model(j.model, j.dtype, device)
            groups: list[tuple[np.ndarray[Any, Any], int, list[int]]] = []  # (tokens, filled length, members)
            for pos_, (_, toks, _, i) in sorted(enumerate(ok_items), key=lambda e: -e[1][3]):
                m = i * j.block
                for g in groups:
                    if np.array_equal(g[0][:, :m], toks[:, :m]):
                        g[2].append(pos_)
                        break
                else:
                    groups.append((toks, m, [pos_]))
            with _context(device, j.dtype, Variant()):
                for toks, m, members in groups:
                    starts = sorted({(ok_items[p][3] - 1) * j.block for p in members})
                    # the EOS that stopped a sequence before a judged block is judged too (rule 2), in the
                    # same pass: a claimed stop is checked wherever a stopped position is challenged
                    ends = {p: _stops_before(ok_items[p][1], (ok_items[p][3] - 1) * j.block, j) for p in members}
                    extra = sorted({at for d in ends.values() for at in d.values()})
                    cols = [s + q for s in starts for q in range(j.block)] + extra
                    rows = self._forced(model, j, toks, m, cols, device)
                    for p in members:
                        idx, claimed_toks, fp, i = ok_items[p]
                        n = (i - 1) * j.block
                        at = starts.index(n) * j.block
                        mine = rows[:, at:at + j.block]
                        out[idx] = judge_positions(mine, claimed_toks[:, n:n + j.block], fp, spec.seed, n, j, tau,
                                                   floor)
                        for b, at_eos in ends[p].items():
                            if not out[idx].ok:  # type: ignore[union-attr]
                                break
                            row = rows[b, len(starts) * j.block + extra.index(at_eos)].astype(np.float64)
                            bad = token_verdict(row, int(claimed_toks[b][at_eos]),
                                                float(position_noise(row, tau, floor)), spec.seed, b, at_eos, j)
                            if bad is not None:
                                out[idx] = dataclasses.replace(bad, detail=f"the EOS token that stopped the "
                                                                           f"sequence: {bad.detail}")
        return [c if c is not None else Comparison(False, "not judged", bad_state=True) for c in out]

    def _judge_with(self, states: Sequence[State], spec: JobSpec, rec: dict[str, Any]) -> list[Comparison]:
        """Every step of a run judged (one pass) under the record ``rec`` (calibration's own use)."""
        ref = "calibrating"
        self._records[ref] = rec
        try:
            job = dataclasses.replace(spec, params={**spec.params, "calibration": ref})
            return self.judge_steps([(states[i - 1], states[i], i) for i in range(1, len(states))], job)
        finally:
            self._records.pop(ref, None)

    # -- tolerance: the record ---------------------------------------------------------------------

    def record(self, spec: JobSpec) -> dict[str, Any]:
        ref = str(spec.params.get("calibration") or "")
        if not ref:
            raise NotCalibrated(f"kernel {self.name}@{self.version} takes its bound from a calibration record of the "
                                f"model and dtype, and this job names none: run "
                                f"pocv.kernels.causal_lm.calibrate_record for model {spec.params.get('model')} "
                                f"dtype {spec.params.get('dtype')}, add the record and set calibration=<ref>")
        rec = self._records.get(ref)
        if rec is None:
            rec = _check_record(artifact_bytes(ref), ref)
            if rec.get("kernel") != f"{self.name}@{self.version}":
                raise NotCalibrated(f"calibration record {ref} is for {rec.get('kernel')}, not "
                                    f"{self.name}@{self.version}")
            self._records[ref] = rec
        got = (rec["params"].get("model"), rec["params"].get("dtype"))
        want = (spec.params.get("model"), spec.params.get("dtype"))
        if got != want:
            raise NotCalibrated(f"calibration record {ref} was measured for model {got[0]} dtype {got[1]}; this job "
                                f"orders model {want[0]} dtype {want[1]}")
        return rec

    def require(self, spec: JobSpec) -> None:
        super().require(spec)
        self.record(spec)
        self.job(spec)

    def bound(self, spec: JobSpec) -> tuple[float, float]:
        rec = self.record(spec)
        return float(rec["tau"]["fp"]), float(rec["floor"])

    def scales(self, expected: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        rms = as_numpy(expected["fp.rms"]).astype(np.float64)
        return {"fp.topk": np.abs(as_numpy(expected["fp.topk"]).astype(np.float64)) + rms[..., None],
                "fp.chosen": np.abs(as_numpy(expected["fp.chosen"]).astype(np.float64)) + rms,
                "fp.rms": 2 * rms}

    def ratios(self, expected: State, claimed: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        """Per fingerprint value, ``|c - e| / (u * scale)`` at the positions where both states hold the
        same tokens (a near-tie broken differently makes the rest of the block incomparable; the token
        rule judges those). Top-k values are matched by token id."""
        te, tc = as_numpy(expected["tokens"]), as_numpy(claimed["tokens"])
        ie, ic = as_numpy(expected["fp.topk_ids"]), as_numpy(claimed["fp.topk_ids"])
        blk = ie.shape[1]
        filled = int((te[0] != PAD).sum())
        n = filled - blk
        same = np.cumprod(te[:, n:filled] == tc[:, n:filled], axis=1).astype(bool)  # [B, blk]
        same &= te[:, n:filled] >= 0  # STOPPED positions hold no fingerprint
        scales = self.scales(expected, spec)
        out: dict[str, list[np.ndarray[Any, Any]]] = {"fp": []}
        for name in ("fp.chosen", "fp.rms"):
            e, c = as_numpy(expected[name]).astype(np.float64), as_numpy(claimed[name]).astype(np.float64)
            out["fp"].append((np.abs(c - e) / (U32 * scales[name]))[same])
        ve, vc = as_numpy(expected["fp.topk"]).astype(np.float64), as_numpy(claimed["fp.topk"]).astype(np.float64)
        match = ie[..., :, None] == ic[..., None, :]  # [B, blk, K, K]
        diff = np.abs(ve[..., :, None] - vc[..., None, :]) / (U32 * scales["fp.topk"][..., :, None])
        out["fp"].append(diff[match & same[..., None, None]])
        return {"fp": np.concatenate(out["fp"]) if out["fp"] else np.zeros(0)}

    def calibrate_record(self, params: dict[str, Any], *, trials: int = 4, seed: int = 0, margin: float = 4.0,
                         steps: int = 4, batch: int = 3) -> dict[str, Any]:
        """This kernel's own calibration (:func:`calibrate_record`); ``make_record`` gives the record."""
        return calibrate_record(params, trials=trials, seed=seed, margin=margin, steps=steps, batch=batch)

    def make_record(self, report: dict[str, Any]) -> bytes:
        """The calibration record (artifact bytes) of a :meth:`calibrate_record` report."""
        return make_record(report)

    # -- calibration variants -------------------------------------------------------------------------

    def honest_variants(self) -> dict[str, StepFn]:
        n = max(2, min(os.cpu_count() or 2, 16))
        table = {"default": Variant(cache=False), f"threads-{n}": Variant(threads=n, cache=False),
                 "threads-1": Variant(threads=1, cache=False), "eager-attention": Variant(attn="eager", cache=False),
                 "one-sequence-at-a-time": Variant(per_sequence=True, cache=False),
                 "extra-left-padding": Variant(extra_pad=5, cache=False),
                 "teacher-forced-fingerprints": Variant(forced_fingerprints=True, cache=False)}
        return {k: self._variant_fn(v) for k, v in table.items()}

    def downgrade_variants(self) -> dict[str, StepFn]:
        table = {"int8-weights": Variant(quant="int8", cache=False), "int4-weights": Variant(quant="int4", cache=False),
                 "bfloat16": Variant(dtype="bfloat16", cache=False), "float16": Variant(dtype="float16", cache=False)}
        return {k: self._variant_fn(v) for k, v in table.items()}

    def _variant_fn(self, v: Variant) -> StepFn:
        def fn(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
            return self.step_with(state, i, spec, "cpu", v)
        return fn


# -- helpers ---------------------------------------------------------------------------------------


def _offline() -> None:
    """Never reach the Hugging Face hub at run time: artifacts are local."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextlib.contextmanager
def _context(device: str, dtype: str, v: Variant) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if device.startswith("cuda") and dtype == "float32":
            stack.enter_context(strict_fp32())
        stack.enter_context(torch_threads(v.threads))
        yield


def _left_pad(ctxs: list[list[int]], extra: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(c) for c in ctxs) + extra
    ids = torch.zeros((len(ctxs), length), dtype=torch.long)
    mask = torch.zeros((len(ctxs), length), dtype=torch.long)
    for b, c in enumerate(ctxs):
        ids[b, length - len(c):] = torch.tensor(c, dtype=torch.long)
        mask[b, length - len(c):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _stops_before(tokens: np.ndarray[Any, Any], n: int, j: Job) -> dict[int, int]:
    """Per sequence stopped at position ``n`` (STOPPED there), the position of the EOS token that
    stopped it, when that lies before ``n`` (in an earlier step)."""
    out: dict[int, int] = {}
    if not j.eos or n == 0:
        return out
    for b in range(tokens.shape[0]):
        if int(tokens[b, n]) == STOPPED:
            out[b] = int(np.argmax(np.isin(tokens[b, :n], list(j.eos))))
    return out


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _cache_key(spec: JobSpec, tokens: np.ndarray[Any, Any]) -> bytes:
    return bytes(blake3(spec.canonical_json() + b"\0" + np.ascontiguousarray(tokens, "<i4").tobytes()).digest())


def _quantize(m: torch.nn.Module, how: str) -> None:
    """Round every 2-D weight to int8 / int4 (symmetric, per row) or add relative noise (a cheat)."""
    gen = torch.Generator().manual_seed(1234)
    for name, p in m.named_parameters():
        if p.dim() != 2:
            continue
        w = p.data
        if how.startswith("noise:"):
            rel = float(how.split(":", 1)[1])
            p.data = w + rel * w.std() * torch.randn(w.shape, generator=gen)
            continue
        qmax = {"int8": 127, "int4": 7}[how]
        s = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-30) / qmax
        p.data = torch.round(w / s).clamp(-qmax, qmax) * s
        del name


# -- calibration ---------------------------------------------------------------------------------


def _random_prompts(rng: np.random.Generator, vocab: int, batch: int, max_len: int) -> str:
    """A ``prompt`` parameter of ``batch`` random prompts of 1..max_len tokens (at most 256 characters)."""
    per = max(1, (256 // batch - 1) // (len(str(vocab - 1)) + 1))
    lens = rng.integers(1, max(2, min(max_len, per) + 1), size=batch)
    return ";".join(",".join(str(int(t)) for t in rng.integers(0, vocab, size=int(n))) for n in lens)


def calibrate_record(params: dict[str, Any], *, trials: int = 4, steps: int = 4, batch: int = 3, seed: int = 0,
                     margin: float = 4.0, max_prompt: int = 12) -> dict[str, Any]:
    """Calibrate ``hf-causal-lm`` for one model and dtype (``params``: model, dtype, and the sampling
    and block parameters to exercise) in the artifact store in use. Each trial draws ``batch`` random
    prompts, runs the job with every honest worker variant (the default with its KV cache across
    steps, 1 and N threads, eager attention, one sequence at a time, extra left padding, fingerprints
    from a prefill) and judges each with every honest verifier variant (one teacher-forced pass at N
    and 1 threads, SDPA and eager): the largest tau any position needs, x ``margin``, rounded up to a
    power of two, is the record's ``tau['fp']``. Then it counts false FAILs against that tau with the
    verifier's own rule (must be 0) and runs the downgrades (int8 / int4 weights, bf16 / fp16 when
    not ordered) to record whether each was caught in every trial and by how much.
    Returns the report; :func:`make_record` turns it into the record's bytes."""
    from pocv.kernels import get_kernel, resolve_spec  # reason: the registry imports this module lazily

    kernel = get_kernel("hf-causal-lm")
    assert isinstance(kernel, CausalLM)
    rng = np.random.default_rng(seed)
    vocab = kernel._config(str(params["model"]))["vocab"]
    n_threads = max(2, min(os.cpu_count() or 2, 16))
    workers = {"default (KV cache across steps)": Variant(), f"threads-{n_threads}": Variant(threads=n_threads,
                                                                                            cache=False),
               "threads-1": Variant(threads=1, cache=False), "eager-attention": Variant(attn="eager", cache=False),
               "one-sequence-at-a-time": Variant(per_sequence=True, cache=False),
               "extra-left-padding": Variant(extra_pad=5, cache=False),
               "prefill-fingerprints": Variant(forced_fingerprints=True, cache=False)}
    verifiers = {"verifier": ("sdpa", None), "verifier threads-1": ("sdpa", 1), "verifier eager": ("eager", None)}
    ordered = str(params.get("dtype", "float32"))
    downs = {"int8-weights": Variant(quant="int8", cache=False), "int4-weights": Variant(quant="int4", cache=False)}
    downs.update({d: Variant(dtype=d, cache=False) for d in ("bfloat16", "float16") if d != ordered})
    runs: list[tuple[JobSpec, dict[str, list[State]], dict[str, list[State]]]] = []
    worst_by: dict[str, float] = {}
    positions = 0
    for t in range(trials):
        p = {k: v for k, v in params.items() if k not in {"prompt", "prompts", "calibration"}}
        p["prompt"] = _random_prompts(rng, vocab, batch, max_prompt)
        spec = resolve_spec(JobSpec(kernel="hf-causal-lm", steps=steps, seed=seed * 1000 + t, params=p))
        j = kernel.job(spec)
        honest: dict[str, list[State]] = {}
        cheats: dict[str, list[State]] = {}
        for table, out in ((workers, honest), (downs, cheats)):
            for name, v in table.items():
                chain: list[State] = [kernel.init_state(spec)]
                for i in range(1, steps + 1):
                    chain.append(kernel.step_with(chain[-1], i, spec, "cpu", v))
                out[name] = chain
        for wname, states in honest.items():
            toks = as_numpy(states[-1]["tokens"])
            for vname, (attn, th) in verifiers.items():
                model = kernel.model(j.model, j.dtype, "cpu", attn)
                with torch_threads(th):
                    rows = kernel._forced(model, j, toks, j.n, range(j.n), "cpu")
                for i in range(1, steps + 1):
                    n = (i - 1) * j.block
                    fp = {k: as_numpy(states[i][k]) for k in states[i] if k.startswith("fp.")}
                    need = needed_tau(rows[:, n:n + j.block], toks[:, n:n + j.block], fp, spec.seed, n, j)
                    key = f"{wname} vs {vname}"
                    worst_by[key] = max(worst_by.get(key, 0.0), float(need.max()))
                    positions += need.size if vname == "verifier" else 0
        runs.append((spec, honest, cheats))
    top = max(worst_by.values(), default=0.0)
    tau = 2.0 ** math.ceil(math.log2(max(top * margin, 4.0)))
    rec = {"kernel": f"{kernel.name}@{kernel.version}", "tau": {"fp": tau}, "floor": FLOOR, "type": RECORD_TYPE,
           "version": 1, "params": {"model": params["model"], "dtype": ordered}}
    false_fails = checks = 0
    caught = dict.fromkeys(downs, 0)
    for spec, honest, cheats in runs:
        for run in honest.values():
            verdicts = kernel._judge_with(run, spec, rec)
            checks += len(verdicts)
            false_fails += sum(not c.ok for c in verdicts)
        for name, run in cheats.items():
            caught[name] += any(not c.ok for c in kernel._judge_with(run, spec, rec))
    return {"kernel": rec["kernel"], "calibrated_by_record": True, "params": rec["params"],
            "exercised": {k: v for k, v in params.items() if k not in {"model", "dtype"}},
            "trials": trials, "steps": steps, "batch": batch, "positions": positions,
            "workers": list(workers), "verifiers": list(verifiers),
            "honest_max_by_pair": dict(sorted(worst_by.items(), key=lambda kv: -kv[1])),
            "margin": margin, "tau_by_group": {"fp": tau}, "floor": FLOOR,
            "checks": checks, "false_fails": false_fails,
            "downgrades": {n: {"caught": caught[n], "of": trials} for n in downs},  # jobs caught of trials
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads()}}


def make_record(report: dict[str, Any]) -> bytes:
    """The calibration record (canonical JSON bytes) of a :func:`calibrate_record` report."""
    rec = {**report, "type": RECORD_TYPE, "version": 1, "tau": dict(report["tau_by_group"])}
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


__all__ = ["PAD", "CausalLM", "Job", "Variant", "allowed", "calibrate_record", "fingerprints", "gumbel",
           "judge_positions", "make_record", "needed_tau", "select"]
