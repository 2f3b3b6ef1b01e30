"""``hf-causal-lm`` with ``stop_at_eos`` (issue 12): a sequence ends at the model's EOS token, every
later position is STOPPED (-2) with an all-zero fingerprint, and the verifier checks the layout
(nothing after EOS, nothing STOPPED without an EOS before it) and judges the EOS token itself by the
one rule, also from any later challenged step (the same forward pass). The rule's part runs on
synthetic logits (default run); the model runs are slow (they load transformers and calibrate)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pocv.errors import Reason
from pocv.jobs import JobSpec
from pocv.kernels._llm import STOPPED, Job, Variant, fingerprints, judge_positions, stop_layout
from pocv.kernels.params import use_artifacts
from tests.kernels import test_causal_lm as base

# -- the layout rule and the zero fingerprint (no model) -------------------------------------------------


def test_the_stop_layout_rule() -> None:
    eos = frozenset({7})
    ok = np.array([[1, 7, STOPPED, STOPPED, -1], [3, 4, 5, 6, -1]])
    assert stop_layout(ok, 4, eos) is None
    assert stop_layout(np.array([[1, 2, 3, 7, -1]]), 4, eos) is None  # EOS as the last filled token
    early = np.array([[1, 2, STOPPED, STOPPED, -1]])  # stopped without an EOS
    assert "without an EOS" in str(stop_layout(early, 4, eos))
    goes_on = np.array([[1, 7, 3, STOPPED, -1]])  # a token after the EOS
    assert "after the EOS token at position 1" in str(stop_layout(goes_on, 4, eos))
    hole = np.array([[1, 7, STOPPED, 4, -1]])
    assert stop_layout(hole, 4, eos) is not None
    assert "does not stop at EOS" in str(stop_layout(ok, 4, frozenset()))  # STOPPED in a job without stop
    assert stop_layout(np.array([[1, 7, 7, 2, -1]]), 4, frozenset()) is None  # EOS means nothing then


def test_a_stopped_position_needs_an_all_zero_fingerprint() -> None:
    job = Job(prompts=((1,),), temperature=0.0, top_k=0, top_p=1.0, block=3, k=4, n=6, dtype="float32",
              model="", eos=frozenset({9}))
    rows = np.random.default_rng(0).normal(0, 4, size=(1, 3, 32)).astype(np.float32)
    toks = np.array([[int(np.argmax(rows[0, 0])), STOPPED, STOPPED]], dtype=np.int32)
    fp = fingerprints(rows, toks, 4)
    assert all(not v[0, 1:].any() for v in fp.values())
    assert judge_positions(rows, toks, fp, 1, 0, job, 32.0, 2.0**-100).ok
    leak = {k: v.copy() for k, v in fp.items()}
    leak["fp.chosen"][0, 2] = 1.0  # a value where no token was generated
    bad = judge_positions(rows, toks, leak, 1, 0, job, 32.0, 2.0**-100)
    assert not bad.ok and bad.bad_state and "must be all zero" in bad.detail


# -- model runs (slow) ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EosLab:
    lab: base.Lab
    spec: JobSpec  # stop_at_eos=true on the model whose EOS is ``eos``
    eos: int
    at: int  # where sequence 0 emits it (4..10: step 2 or 3 of blocks of 4)
    plain: list[Any]  # the same job without stop_at_eos


@pytest.fixture(scope="module")
def eos_lab(tmp_path_factory: pytest.TempPathFactory) -> EosLab:
    """The test Llama re-saved with an EOS id that its greedy run of sequence 0 emits first at a
    position of step 2 or 3 (blocks of 4), not the last one; the calibration record of the same weights, renamed to
    the new artifact (the weights and dtype are those it was measured for)."""
    root: Path = tmp_path_factory.mktemp("llm-eos")
    lab = base.build(root, ("llama",))
    spec0 = lab.spec(steps=4)
    plain = base.run(lab, spec0)
    seq0 = plain[-1]["tokens"].numpy()[0]
    at = next((p for p in range(4, 11) if int(seq0[p]) not in seq0[:p].tolist()), None)
    if at is None:
        pytest.skip(f"sequence 0 of this run repeats its early tokens ({seq0.tolist()}): no EOS to pick")
    eos = int(seq0[at])
    model = base.tiny("llama", 0)
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    where = root / "llama-eos"
    model.save_pretrained(str(where))
    ref = lab.store.add(where)
    rec = json.loads(lab.store.read_bytes(lab.cal["llama"]))
    rec["params"]["model"] = ref
    cal = lab.store.add_bytes(json.dumps(rec, sort_keys=True).encode())
    lab.models["llama-eos"], lab.cal["llama-eos"] = ref, cal
    spec = lab.spec("llama-eos", steps=4, stop_at_eos=True)
    plain_eos = base.run(lab, lab.spec("llama-eos", steps=4))
    return EosLab(lab=lab, spec=spec, eos=eos, at=at, plain=plain_eos)


def _stop_sequence_0(states: list[Any], at: int, block: int = 4) -> list[Any]:
    """A cheat's chain: sequence 0 STOPPED from position ``at`` on, with all-zero fingerprints there
    (the rest, and sequence 1, as in ``states``)."""
    out = [dict(s) for s in states]
    for i in range(1, len(out)):
        t = out[i]["tokens"].clone()
        t[0, at:] = torch.where(t[0, at:] == -1, -1, STOPPED)
        out[i]["tokens"] = t
        for name in ("fp.topk_ids", "fp.topk", "fp.chosen", "fp.rms"):
            z = out[i][name].clone()
            for q in range(block):
                if (i - 1) * block + q >= at:
                    z[0, q] = 0
            out[i][name] = z
    return out


def _edit_tokens(states: list[Any], i: int, fn: Any) -> list[Any]:
    out = [dict(s) for s in states]
    t = out[i]["tokens"].numpy().copy()
    fn(t)
    out[i]["tokens"] = torch.from_numpy(t)
    return out


@pytest.mark.slow
def test_generation_stops_at_the_eos_token_and_passes(eos_lab: EosLab) -> None:
    lab, spec = eos_lab.lab, eos_lab.spec
    states = base.run(lab, spec)
    toks = states[-1]["tokens"].numpy()
    plain = eos_lab.plain[-1]["tokens"].numpy()
    at = eos_lab.at
    assert toks[0, at] == eos_lab.eos and (toks[0, at + 1:] == STOPPED).all()
    assert np.array_equal(toks[0, :at + 1], plain[0, :at + 1])  # up to the EOS, the tokens of a run without stop
    assert float(states[4]["fp.rms"][0, 3]) == 0.0 and not states[4]["fp.topk_ids"][0].any()  # no fingerprint
    # sequence 1 stops at its own EOS, if it emits one, else runs to the end
    ends1 = np.nonzero(plain[1] == eos_lab.eos)[0]
    n1 = int(ends1[0]) + 1 if ends1.size else plain.shape[1]
    assert np.array_equal(toks[1, :n1], plain[1, :n1]) and (toks[1, n1:] == STOPPED).all()
    out = base.check_all(lab, spec, states)
    assert all(o.reason is Reason.OK for o in out.values()), out
    # honest variants stop at the same place and pass too
    for v in (Variant(threads=1, cache=False), Variant(per_sequence=True, cache=False)):
        other = base.run(lab, spec, v)
        assert torch.equal(other[-1]["tokens"], states[-1]["tokens"])
        assert all(o.reason is Reason.OK for o in base.check_all(lab, spec, other).values())
    # without stop_at_eos (the default) the same model runs on past its EOS
    assert (plain >= 0).all()


@pytest.mark.slow
def test_a_worker_cannot_stop_a_sequence_without_an_eos(eos_lab: EosLab) -> None:
    """Stopping early is caught at the step where the stop is claimed (the layout, whatever the
    challenge draws there), and a faked EOS is caught by the rule, both at its own step and at any
    later challenged step of the stopped sequence (its EOS is judged in the same forward pass)."""
    lab, spec = eos_lab.lab, eos_lab.spec
    honest = base.run(lab, spec)
    # 1. STOPPED from position 2 on with no EOS: step 1 (positions 0..3) is FAIL, bad state
    k = base.get_kernel("hf-causal-lm")
    with use_artifacts(lab.store):
        first = k.step_with(honest[0], 1, spec, "cpu", Variant(stop_without_eos=2, cache=False))  # type: ignore[attr-defined]
    cheat = _stop_sequence_0(honest, 2)
    assert torch.equal(first["tokens"], cheat[1]["tokens"])  # the cheating worker's own step 1
    out = base.check_all(lab, spec, cheat)
    assert not out[1].ok and out[1].reason is Reason.BAD_STATE and "without an EOS" in out[1].detail, out[1]
    # 2. a fake EOS at position 3 (end of step 1), the rest STOPPED: the EOS fails the rule at step 1,
    #    and steps 2..4 fail too (each judges the EOS that stopped the sequence)

    faked = _stop_sequence_0(honest, 4)
    for i in range(1, 5):
        faked[i]["tokens"][0, 3] = eos_lab.eos
    with use_artifacts(lab.store):
        verdicts = k.judge_steps([(faked[i - 1], faked[i], i) for i in range(1, 5)], spec)
    assert all(not c.ok for c in verdicts), verdicts
    assert "EOS token that stopped" in verdicts[2].detail, verdicts[2]
    # 3. a token generated after the EOS (the sequence goes on): FAIL at the step that holds it
    at = eos_lab.at
    i = (at + 1) // 4 + 1  # the step that holds the position after the EOS

    def goes_on(t: np.ndarray[Any, Any]) -> None:
        t[0, at + 1] = 1

    out = base.check_all(lab, spec, [*honest[:i], _edit_tokens(honest, i, goes_on)[i], *honest[i + 1:]])
    assert not out[i].ok and f"after the EOS token at position {at}" in out[i].detail, out[i]
    # 4. STOPPED in a job that does not stop at EOS
    plain_spec = lab.spec("llama-eos", steps=4)
    out = base.check_all(lab, plain_spec, [*eos_lab.plain[:4], honest[4]])
    assert not out[4].ok and out[4].reason is Reason.BAD_STATE, out[4]
