"""Every input the fuzzer ever crashed a parser with, replayed. Files are named after what they
caught: ``regressions/<parser>-<Exception>-<module.function>.bin``. Crashes in code this suite
does not own stay listed in ``targets.KNOWN_OPEN`` (and BUGS-FOUND.md) as strict xfails until
fixed: a fix makes the test XPASS (red), which is the signal to delete the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.run import REGRESSIONS, crash_name
from tests.fuzz.targets import TARGETS, known_open, run_target

FILES = sorted(REGRESSIONS.glob("*.bin"))


def _parser(path: Path) -> str:
    return max((t for t in TARGETS if path.stem.startswith(t + "-")), key=len)


def _case(path: Path):  # type: ignore[no-untyped-def]
    bug = known_open(path.stem)
    marks = [pytest.mark.xfail(strict=True, reason=f"open bug {bug} in BUGS-FOUND.md")] if bug else []
    return pytest.param(path, id=path.stem, marks=marks)


def test_there_are_regression_files() -> None:
    assert FILES, "tests/fuzz/regressions/ is empty"


@pytest.mark.parametrize("path", [_case(p) for p in FILES])
def test_regression(path: Path) -> None:
    parser = _parser(path)
    exc = run_target(parser, path.read_bytes())
    assert exc is None, f"{crash_name(parser, exc)}: {exc!r}"
