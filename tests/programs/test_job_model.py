"""Random instruction sequences by random parties against a Python model of the job program.

Each step of the state machine is one whole lifecycle: POST by a random consumer, then random
instructions (COMMIT, VERDICT PASS/FAIL, CLAIM, slots passing) sent by random parties --
entitled or not, early or late -- until the job is settled. The model says which instructions
must succeed; after every transaction every party's tokens and lamports, and every vault, must
be what the model says. 1,000 lifecycles in the default run, 10,000 in the slow one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from solders.instruction import AccountMeta, Instruction

from pocv.market import jobprogram as J
from tests.programs.conftest import Party, World, make_world
from tests.programs.test_job_program import with_account

FEE = 5_000  # lamports per signature


@dataclass
class Model:
    """What the chain must hold: tokens and lamports per address, and the open job."""

    tokens: dict[object, int] = field(default_factory=dict)
    lamports: dict[object, int] = field(default_factory=dict)
    pairs: set[tuple[object, object]] = field(default_factory=set)
    lifecycles: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class JobMachine(RuleBasedStateMachine):
    world: World
    model: Model
    parties: list[Party]

    @initialize()
    def setup(self) -> None:
        self.world = make_world()
        self.world.chain.recording = False  # the model, not the replay, is the check here
        w = self.world
        self.extra_consumer = w.party()
        self.parties = [w.consumer, self.extra_consumer, w.worker, w.verifier, w.outsider]
        self.model = Model()
        for p in self.parties:
            self.model.tokens[p.token] = w.tokens(p.token) or 0
            self.model.lamports[p.pubkey] = w.lamports(p.pubkey)
        self.job_rent = w.chain.rent_exempt(J.JOB_SIZE)
        self.vault_rent = w.chain.rent_exempt(J.TOKEN_ACCOUNT_SIZE)
        self.pair_rent = w.chain.rent_exempt(J.PAIR_SIZE)

    def _send(self, ixs: list[Instruction], signer: Party, ok: bool, what: str) -> J.TxOutcome:
        out = self.world.send(ixs, [signer.key])
        assert out.landed, what
        assert out.ok == ok, f"{what}: model says {'ok' if ok else 'refused'}, chain says {out.error}"
        self.model.lamports[signer.pubkey] -= FEE
        return out

    @rule(data=st.data())
    def lifecycle(self, data: st.DataObject) -> None:
        w, m = self.world, self.model
        consumer = data.draw(st.sampled_from([w.consumer, self.extra_consumer]), "consumer")
        price = data.draw(st.integers(1, 10**6), "price")
        bond = data.draw(st.integers(0, 10**6), "bond")
        commit_in = data.draw(st.integers(1, 4), "commit_in")
        verdict_in = commit_in + data.draw(st.integers(J.MIN_VERDICT_WINDOW, 5), "window")
        t = w.terms(price=price, bond=bond, commit_in=commit_in, verdict_in=verdict_in, consumer=consumer)
        self._send([w.program.post(t, source=consumer.token)], consumer, True, "POST")
        m.tokens[consumer.token] -= price
        m.lamports[consumer.pubkey] -= self.job_rent + self.vault_rent
        if (w.worker.pubkey, consumer.pubkey) not in m.pairs:
            m.pairs.add((w.worker.pubkey, consumer.pubkey))
            m.lamports[consumer.pubkey] -= self.pair_rent
        vault, state, commit_slot = price, "POSTED", -1
        for _ in range(40):
            if state in J.SETTLEMENTS:
                break
            slot = w.chain.slot()
            action = data.draw(st.sampled_from(["commit", "pass", "fail", "claim", "wait"]), "action")
            entitled = {"commit": w.worker, "pass": w.verifier, "fail": w.verifier}.get(action, w.outsider)
            who = entitled if data.draw(st.booleans(), "the entitled party") else data.draw(
                st.sampled_from(self.parties), "who")
            if action == "wait":
                w.chain.warp(slot + data.draw(st.integers(1, 3), "slots"))
            elif action == "commit":
                ok = who is w.worker and state == "POSTED" and slot <= t.commit_deadline
                ix = w.program.commit(t, os.urandom(32), source=who.token)
                ix = ix if who is w.worker else _as_signer(ix, 0, who)
                self._send([ix], who, ok, f"COMMIT by {self.parties.index(who)} in {state} at {slot}")
                if ok:
                    vault += bond
                    m.tokens[who.token] -= bond
                    state, commit_slot = "COMMITTED", slot
            elif action in ("pass", "fail"):
                passed = action == "pass"
                early = data.draw(st.booleans(), "beacon too early") if state == "COMMITTED" else False
                beacon = commit_slot if early else commit_slot + 1
                ok = (who is w.verifier and state == "COMMITTED" and slot <= t.verdict_deadline and not early
                      and beacon < slot)
                if state == "COMMITTED" and not early and beacon >= slot:
                    continue  # no slot after the commit has passed yet: nothing to test here
                dest = (w.worker if passed else consumer).token
                ix = w.program.verdict(t, passed=passed, beacon_slot=max(beacon, 0), digest=os.urandom(32), dest=dest)
                ix = ix if who is w.verifier else _as_signer(ix, 0, who)
                self._send([ix], who, ok, f"VERDICT {action} by {self.parties.index(who)} in {state} at {slot}")
                if ok:
                    m.tokens[dest] += vault
                    state = "PASSED" if passed else "FAILED"
            else:
                refund = state == "POSTED"
                ok = (refund and slot > t.commit_deadline) or (state == "COMMITTED" and slot > t.verdict_deadline)
                dest = (consumer if refund else w.worker).token
                ix = w.program.claim(t, committed=not refund, dest=dest)
                self._send([ix], who, ok, f"CLAIM by {self.parties.index(who)} in {state} at {slot}")
                if ok:
                    m.tokens[dest] += vault
                    state = "REFUNDED" if refund else "EXPIRED"
            if state in J.SETTLEMENTS:
                m.lamports[consumer.pubkey] += self.job_rent + self.vault_rent
            self.check_balances()
        if state not in J.SETTLEMENTS:  # drive it home: a claim after both deadlines always settles
            w.chain.warp(max(w.chain.slot(), t.verdict_deadline + 1))
            refund = state == "POSTED"
            dest = (consumer if refund else w.worker).token
            self._send([w.program.claim(t, committed=not refund, dest=dest)], w.outsider, True, "final CLAIM")
            m.tokens[dest] += vault
            m.lamports[consumer.pubkey] += self.job_rent + self.vault_rent
            state = "REFUNDED" if refund else "EXPIRED"
        a = w.program.addresses(t)
        assert w.chain.get_account(a.job) is None and w.chain.get_account(a.vault) is None
        m.lifecycles += 1
        m.outcomes[state] = m.outcomes.get(state, 0) + 1
        LIFECYCLES.append(state)

    @invariant()
    def check_balances(self) -> None:
        if not hasattr(self, "model"):
            return
        for p in self.parties:
            assert self.world.tokens(p.token) == self.model.tokens[p.token], "tokens"
            assert self.world.lamports(p.pubkey) == self.model.lamports[p.pubkey], "lamports"


def _as_signer(ix: Instruction, index: int, who: Party) -> Instruction:
    m = ix.accounts[index]
    return with_account(ix, index, AccountMeta(who.pubkey, is_signer=True, is_writable=m.is_writable))


LIFECYCLES: list[str] = []


def _run(examples: int, steps: int) -> None:
    LIFECYCLES.clear()
    # one step is a whole lifecycle, so the smallest example is large by design
    JobMachine.TestCase.settings = settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                                            derandomize=True, suppress_health_check=[HealthCheck.large_base_example,
                                                                                     HealthCheck.too_slow])
    JobMachine.TestCase().runTest()


def test_one_thousand_random_lifecycles_leave_nothing_unaccounted() -> None:
    _run(examples=50, steps=25)
    assert len(LIFECYCLES) >= 1_000, len(LIFECYCLES)
    assert set(LIFECYCLES) == set(J.SETTLEMENTS), "every way a job ends was reached"


@pytest.mark.slow
def test_ten_thousand_random_lifecycles_leave_nothing_unaccounted() -> None:
    _run(examples=500, steps=25)
    assert len(LIFECYCLES) >= 10_000, len(LIFECYCLES)
