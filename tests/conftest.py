"""Shared fixtures. Tests mirror the package: tests/test_<module>.py for verifier/<module>.py."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from solders.keypair import Keypair

# CI profile: deterministic, no deadline (2 shared cores), bounded examples.
settings.register_profile("ci", deadline=None, derandomize=True, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def worker_key() -> Keypair:
    return Keypair.from_seed(bytes([1]) * 32)


@pytest.fixture
def verifier_key() -> Keypair:
    return Keypair.from_seed(bytes([2]) * 32)


@pytest.fixture(autouse=True)
def _own_challenge_book(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own verifier challenge book (pocv challenge / verify), never ~/.local/state."""
    monkeypatch.setenv("POCV_CHALLENGE_BOOK", str(tmp_path_factory.mktemp("book")))
