"""The benchmark scripts still run: a --quick pass of train_throughput.py on the tiny MNIST, the family
and memory scripts, and a CPU rehearsal of the GPU session script. (Timings here mean nothing.)"""

from __future__ import annotations

import os
import re
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


@pytest.mark.slow
def test_family_throughput_measures_b_and_c_for_families_with_their_own_step(data_root, tmp_path):
    out = tmp_path / "families.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "family_throughput.py"), "--root", str(data_root),
                           "--rows", "vaegan,rbm,rbm_binary,mlp_ae_500", "--steps", "2", "--warmup", "1", "--repeats", "2",
                           "--max-wait", "0", "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in out.read_text().splitlines() if line.startswith("| ")}
    for family in ("vaegan", "rbm", "rbm_binary", "mlp_ae_500"):
        cells = [c.strip() for c in rows[family].strip("|").split("|")]
        assert float(cells[1].split()[0].replace(",", "")) > 0 and float(cells[3]) > 0, rows[family]
    ratios = re.findall(r"(\d+\.\d+)x with model.reconstruction=(\w+)", out.read_text())
    assert [kind for _, kind in ratios] == ["probabilities", "binary"] and all(float(r) > 0 for r, _ in ratios)


def test_the_rbm_and_ae_time_ratio_pairs_the_repeats():
    from benchmarks.family_throughput import paired_time_ratio
    from benchmarks.train_throughput import Measurements

    rbm, ae = Measurements([100.0, 50.0, 90.0]), Measurements([200.0, 100.0, 90.0])  # images/s per repeat
    assert paired_time_ratio({"rbm": rbm, "ae": ae}, "rbm", "ae") == 2.0  # unpaired medians would say 100/90


@pytest.mark.slow
def test_paper_tables_smoke_runs_a_table_end_to_end(tmp_path):
    from tests.datasets_fixture import make_mnist_like

    root = make_mnist_like(tmp_path / "data", n_train=1200, n_test=256)
    results = REPO / "benchmarks" / "paper_tables.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "paper_tables.py"), "--smoke", "--only",
                           "rate_distortion", "--data-root", str(root), "--force"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "## Rate-distortion" in proc.stdout and "| autoencoder | 8 |" in proc.stdout
    assert (results.stat().st_mtime_ns if results.exists() else None) == before  # smoke never writes results


def test_the_largest_batch_search_grows_then_halves_the_gap():
    from benchmarks.gpu_memory import largest_fitting

    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= 5000

    assert largest_fitting(fits, 1024, 2 ** 20, bisect=3) == (4096, 5632)
    assert tried[:3] == [1024, 4096, 16384]  # x4 up to the first failure, then 3 halvings of the gap
    assert largest_fitting(lambda b: True, 1024, 3000, bisect=3) == (3000, None)  # capped: never a failure
    assert largest_fitting(lambda b: False, 1024, 3000, bisect=3) == (None, 1024)


@pytest.mark.slow
def test_gpu_memory_script_rehearses_on_the_cpu(data_root, tmp_path):
    out = tmp_path / "memory.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_memory.py"), "--device", "cpu", "--root",
                           str(data_root), "--rows", "vae,rbm", "--max-batch", "1024", "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| vae |") or line.startswith("| rbm |")]
    assert len(rows) == 2 and all("1,024 (--max-batch)" in r for r in rows), rows


@pytest.mark.slow
def test_the_gpu_session_script_rehearses_its_checks_on_the_cpu(data_root, tmp_path):
    """benchmarks/gpu_session.sh runs on a lent GPU for minutes, once: its steps must work before then."""
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(out), "DATA_ROOT": str(data_root), "PYTHON": sys.executable,
           "STEPS": "env,smoke_fp32,cross_device,ddp", "BUDGET_S": "400"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_session.sh")], capture_output=True, text=True,
                          timeout=480, env=env, cwd=tmp_path)
    summary = (out / "summary.md").read_text()
    log = (out / "session.log").read_text()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("env", "smoke_fp32", "cross_device", "ddp"):
        assert f"| {name} | ok |" in summary, summary + log[-3000:]
    assert "evaluated on cpu" in log and "after resume: epochs 2" in log, log[-3000:]
