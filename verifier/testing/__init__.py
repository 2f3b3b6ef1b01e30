"""Test doubles for testing code built on pocv: lying provers, a loopback Solana RPC, stand-ins.

Nothing here is used by the protocol itself, and ``import pocv`` never imports this package:
import it explicitly in your own tests (``from pocv.testing import make_liar, skip``). Names
load on first use, so taking a lying prover does not load the market (solders, LiteSVM).

Lying provers (:mod:`pocv.testing.liar`): real :class:`~pocv.prover.Prover` subclasses that
write a real trace, sign a real commitment and answer with real Merkle proofs, and lie in one
named way, so a test can check that *its* verifier, scheduler or settlement catches them::

    from pocv.testing import fabricate, make_liar

    liar = make_liar(fabricate(0.1), trace_dir=tmp_path / "t")   # fakes 10% of the steps
    commitment = liar.run(spec)
    verdict = verifier.check(commitment, challenge, liar.respond(challenge))
    assert verdict.passed == (not liar.faked.intersection(challenge.indices))

* :class:`Strategy` and its factories -- sampled lies ``fabricate``, ``skip``,
  ``replay_earlier``, ``stop_early``, ``downgrade``, ``noise`` (caught iff a faked step is
  challenged; ``liar.faked`` says which) and certain ones ``replay_s0``, ``wrong_version``,
  ``answer_differently``, ``partial_answer``, ``refuse``, ``timeout``, ``forge`` (caught whenever
  challenged); ``SAMPLED`` / ``CERTAIN`` name them all. ``strategy.at(i, ...)`` lies at exactly
  those steps (for disputes).
* :class:`LyingProver` / :func:`make_liar`; :class:`LazyProver` (skips a seeded fraction of its
  steps, ``pocv demo``'s cheater); :class:`VariantProver` (an *honest* worker on another
  implementation of the step); :func:`answer_within` (a deadline); :func:`equivocate` (two
  signed roots for one job); :func:`grind_root_only` (re-rolling against root-only challenges).

Market (:mod:`pocv.testing.rpc`, :mod:`pocv.testing.market`): :class:`LoopbackServer` serves
Solana JSON-RPC over the embedded LiteSVM chain on 127.0.0.1 (``with LoopbackServer(backend) as
url:``), so an RPC client can be tested without a validator; ``stand_in_commit`` /
``stand_in_verify`` make up commitments and verdicts for a market round without computing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

__all__ = [
    "CERTAIN",
    "FORGERIES",
    "SAMPLED",
    "GrindResult",
    "LazyProver",
    "LoopbackRpc",
    "LoopbackServer",
    "LyingProver",
    "Strategy",
    "VariantProver",
    "answer_differently",
    "answer_within",
    "downgrade",
    "equivocate",
    "expected_failures",
    "fabricate",
    "fabricated_leaves",
    "forge",
    "grind_root_only",
    "implementations",
    "make_liar",
    "noise",
    "partial_answer",
    "pick_steps",
    "refuse",
    "replay_earlier",
    "replay_s0",
    "root_only_beacon",
    "skip",
    "stand_in_commit",
    "stand_in_root",
    "stand_in_verdict",
    "stand_in_verify",
    "stop_early",
    "strategies_for",
    "timeout",
    "wrong_version",
]

#: the module that defines each public name (imported on first use)
_MODULES: Final = {"liar": "pocv.testing.liar", "rpc": "pocv.testing.rpc", "market": "pocv.testing.market"}
_RPC: Final = frozenset({"LoopbackRpc", "LoopbackServer"})


def _module_of(name: str) -> str | None:
    if name not in __all__:
        return None
    if name in _RPC:
        return _MODULES["rpc"]
    return _MODULES["market"] if name.startswith("stand_in_") else _MODULES["liar"]


def __getattr__(name: str) -> Any:
    module = _module_of(name)
    if module is None:
        raise AttributeError(f"module 'pocv.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from pocv.testing.liar import (
        CERTAIN,
        FORGERIES,
        SAMPLED,
        GrindResult,
        LazyProver,
        LyingProver,
        Strategy,
        VariantProver,
        answer_differently,
        answer_within,
        downgrade,
        equivocate,
        expected_failures,
        fabricate,
        fabricated_leaves,
        forge,
        grind_root_only,
        implementations,
        make_liar,
        noise,
        partial_answer,
        pick_steps,
        refuse,
        replay_earlier,
        replay_s0,
        root_only_beacon,
        skip,
        stop_early,
        strategies_for,
        timeout,
        wrong_version,
    )
    from pocv.testing.market import stand_in_commit, stand_in_root, stand_in_verdict, stand_in_verify
    from pocv.testing.rpc import LoopbackRpc, LoopbackServer
