"""`benchmarks/train_throughput.py` still runs: a --quick pass of a few rows on the tiny MNIST.
(Timings here mean nothing; the script's numbers come from `make bench` on real data.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

@pytest.mark.slow
def test_throughput_benchmark_quick_run(data_root, tmp_path):
    results = REPO / "benchmarks" / "results.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--quick", "--root", str(data_root),
         "--cache", str(tmp_path / "cache"), "--rows", "linear_ae/fp32/*", "process/aerun_help"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| linear_ae | fp32 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(cells[2:5]) and "–" not in cells[2:5], row  # (a), (b) and (c) were all measured
    assert "| aerun_help |" in proc.stdout
    after = results.stat().st_mtime_ns if results.exists() else None
    assert after == before  # a --quick run never overwrites the recorded results

@pytest.mark.slow
def test_cpu_options_benchmark_prints_both_rows():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cpu_options.py"), "--models", "linear_ae",
                           "--steps", "2", "--repeats", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| fused |") or line.startswith("| bf16 |")]
    assert len(rows) == 2 and all(float(r.strip("| ").split("|")[-1]) > 0 for r in rows), proc.stdout
