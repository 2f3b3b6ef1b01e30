"""`pocv bench`: help, and `--report-only` on synthetic results (no benchmark runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifier.bench_cli import bench_dir
from verifier.cli import main


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True

CORE = {
    "machine": {"cpu": "Test CPU", "cores": 2, "torch_threads": 2, "python": "3.11", "torch": "2.x", "gpu": None,
                "when": "2026-01-01T00:00:00Z"},
    "overhead/gemm-int8": {"params": {"n": 64}, "steps": 10, "bare_s": 1.0, "proved_s": 1.02, "ratio": 1.02},
    "verifier_over_prover/gemm-int8": {"params": {"n": 64}, "steps": 1000, "k": 66, "prover_s": 10.0,
                                       "verifier_s": 0.9, "ratio": 0.09, "bundle_bytes": 1000},
}


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--report-only" in out and "--suite" in out


def test_bench_dir_found() -> None:
    d = bench_dir()
    assert d is not None and (d / "report.py").is_file()


def test_report_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "core.json").write_text(json.dumps(CORE))
    (tmp_path / "broken.json").write_text('{"machine": ')  # a partial write: skipped with a note
    (tmp_path / "kernels.json").write_text(json.dumps({"x": {"ratio": float("nan"), "target_max": 1}}))
    (tmp_path / "other.json").write_text(json.dumps({"y": {"ratio": 3, "target_min": 2}}))
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    report = tmp_path / "REPORT.md"
    assert out.out.strip() == str(report)
    text = report.read_text()
    assert "Test CPU, 2 cores" in text
    assert "| 1.02 | <= 1.05 | met |" in text, text
    assert "| 0.09 | 0.066 | <= 0.08 | **missed** |" in text
    assert "`broken.json`: cannot be read as JSON" in text
    assert "the `kernels` layout was not recognised" in text  # partial: shown generically, with a note
    assert "other (generic)" in text and "| y | 3 | >= 2 | met |" in text
    if _have_matplotlib():  # in the bench extra; without it the report says so and has no plots
        assert "![core: report-core-ratios](report-core-ratios.png)" in text
        assert (tmp_path / "report-core-ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in text
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_report_only_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "core.json").write_text(json.dumps(CORE))
    assert main(["bench", "--report-only", "--out", str(tmp_path), "--output", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["suites"] == []
    assert summary["met"] == 1 and summary["missed"] == 1
    assert summary["report"] == str(tmp_path / "REPORT.md")


def test_missing_bench_dir(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import verifier.bench_cli as bc

    monkeypatch.setattr(bc, "bench_dir", lambda: None)
    assert main(["bench", "--report-only"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bench/ not found" in err


def test_failing_suite_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """A stand-in bench/ whose merkle suite fails: the report is still written, the exit is 3."""
    import shutil

    import verifier.bench_cli as bc

    real = bench_dir()
    assert real is not None
    fake = tmp_path / "bench"
    fake.mkdir()
    shutil.copy(real / "report.py", fake / "report.py")
    (fake / "conftest.py").write_text("")
    (fake / "test_bench_merkle.py").write_text(
        "def test_fails(benchmark):\n    benchmark(int)\n    assert False\n")
    monkeypatch.setattr(bc, "bench_dir", lambda: fake)
    assert main(["bench", "--suite", "merkle", "--output", "json"]) == 3
    out = capsys.readouterr()
    summary = json.loads(out.out)  # pytest's own output went to stderr
    assert summary["ok"] is False
    assert [(r["suite"], r["status"], r["returncode"]) for r in summary["suites"]] == [("merkle", "failed", 1)]
    assert (fake / "out" / "REPORT.md").is_file()
    assert main(["bench", "--suite", "kernels"]) == 3  # selected by name but not present
    assert "not present" in capsys.readouterr().err
