"""Moved: the lying-prover simulator is :mod:`pocv.testing.liar` (import it from ``pocv.testing``).

This module re-exports it for callers not yet updated (bench/detection.py); new code imports
``pocv.testing``.
"""

from __future__ import annotations

from pocv.testing.liar import (  # noqa: F401
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
