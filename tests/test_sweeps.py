"""Sweeps: `aerun train -m` writes one summary table, `aerun summarize` rebuilds it, a bad job
fails alone, seeds are grouped, `resume=true` skips finished jobs, Optuna and the launchers run.

The sweeps run in this process through the real CLI (`aerun.cli.main`), on the tiny data."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
from pathlib import Path

import pytest

from aerun import runs
from aerun.cli import main
from aerun.precheck import check_config
from aerun.errors import UserError
from aerun.sweeps.jobs import effective_status
from aerun.sweeps.summary import build_summary, write_summary
from aerun.sweeps.resume import prepare_multirun_overrides, resolve_job_resume
from tests.conftest import compose, run_aerun


def sweep_overrides(data_root: Path, sweep_dir: Path | None, *extra: str) -> list[str]:
    """A seconds-long job per value on the tiny MNIST, into `sweep_dir`."""
    return ["debug=smoke", f"data.root={data_root}", "model=linear_ae", "data.max_train_samples=192",
            "data.val_size=32", "data.max_test_samples=64", "trainer.device=cpu", "trainer.batch_size=64",
            *([f"hydra.sweep.dir={sweep_dir}"] if sweep_dir else []), *extra]


def read_rows(sweep_dir: Path, name: str = "summary.csv") -> list[dict]:
    with open(sweep_dir / name, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def seed_sweep(data_root, tmp_path_factory) -> Path:
    """A 2x2 grid: two code sizes, each over seeds 0 and 1."""
    sweep_dir = tmp_path_factory.mktemp("seed_sweep") / "sweep"
    assert main(["train", "-m", *sweep_overrides(data_root, sweep_dir, "model.latent_dim=2,4", "seed=0,1")]) == 0
    return sweep_dir


def test_a_2x2_sweep_writes_a_4_row_summary_with_best_job(seed_sweep):
    rows = read_rows(seed_sweep)
    assert len(rows) == 4
    assert sorted((r["model.latent_dim"], r["seed"]) for r in rows) == [("2", "0"), ("2", "1"), ("4", "0"), ("4", "1")]
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        metrics = json.loads((Path(row["run_dir"]) / runs.METRICS).read_text())
        assert float(row["objective"]) == pytest.approx(metrics["objective"]["value"])
        assert float(row["test/mse"]) == pytest.approx(metrics["test"]["mse"])
        assert int(row["params"]) == metrics["params"] and int(row["epochs"]) == 1
        assert float(row["wall_time_s"]) > 0
    objectives = [float(r["objective"]) for r in rows]
    assert objectives == sorted(objectives)  # sorted by the objective, best first
    best = json.loads((seed_sweep / "best.json").read_text())
    assert best["objective"]["value"] == pytest.approx(min(objectives))
    assert Path(best["run_dir"]) == Path(rows[0]["run_dir"]) and (Path(best["run_dir"]) / runs.BEST).is_file()
    assert "model=linear_ae" in best["overrides"] and any(o.startswith("seed=") for o in best["overrides"])
    markdown = (seed_sweep / "summary.md").read_text()
    assert "| job | model.latent_dim | seed | status | objective (val/loss) |" in markdown
    assert "## Best job" in markdown and best["run_dir"] in markdown
    assert "Failed jobs" not in markdown


def test_seeds_are_grouped_mean_and_std_per_configuration(seed_sweep):
    rows = read_rows(seed_sweep)
    groups = read_rows(seed_sweep, "summary_by_config.csv")
    assert sorted(g["model.latent_dim"] for g in groups) == ["2", "4"]
    for group in groups:
        values = [float(r["objective"]) for r in rows if r["model.latent_dim"] == group["model.latent_dim"]]
        assert group["seeds"] == "2" and group["seeds_ok"] == "2"
        assert float(group["objective_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(group["objective_std"]) == pytest.approx(statistics.stdev(values))
    markdown = (seed_sweep / "summary.md").read_text()
    assert "## Mean ± std over seeds" in markdown and " ± " in markdown
    best = json.loads((seed_sweep / "best.json").read_text())
    best_group = min(groups, key=lambda g: float(g["objective_mean"]))
    assert best["best_configuration_over_seeds"]["overrides"] == [f"model.latent_dim={best_group['model.latent_dim']}"]


def test_summarize_rebuilds_the_table_without_clutter(seed_sweep, tmp_path):
    before = read_rows(seed_sweep)
    for name in ("summary.csv", "summary.md", "best.json", "summary_by_config.csv"):
        (seed_sweep / name).unlink()
    proc = run_aerun("summarize", str(seed_sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_rows(seed_sweep) == before
    assert (seed_sweep / "best.json").is_file() and (seed_sweep / "summary_by_config.csv").is_file()
    assert proc.stdout.startswith("# Sweep summary") and "| job | model.latent_dim | seed |" in proc.stdout
    # Hydra ran in the sweep dir and left nothing: no outputs/ here, no .hydra/ or log file there.
    assert not (tmp_path / "outputs").exists()
    assert not (seed_sweep / ".hydra").exists() and not list(seed_sweep.glob("*.log"))


def test_summarize_sort_by_and_its_errors(seed_sweep, tmp_path):
    summary, files = build_summary(seed_sweep, sort_by="test/psnr", descending=True)
    rows = list(csv.DictReader(files["summary.csv"].splitlines()))
    psnr = [float(r["test/psnr"]) for r in rows]
    assert psnr == sorted(psnr, reverse=True)
    _, files = build_summary(seed_sweep, sort_by="model.latent_dim")
    assert [r["model.latent_dim"] for r in csv.DictReader(files["summary.csv"].splitlines())] == ["2", "2", "4", "4"]
    with pytest.raises(UserError, match=r"summarize.sort_by=nope: no such column; choose one of job, model.latent_dim"):
        build_summary(seed_sweep, sort_by="nope")
    with pytest.raises(UserError, match=r"summarize.metrics: test/nosuch is in no job's metrics.json; the jobs have "
                                        r".*test/mse"):  # a typo is named, not dropped
        build_summary(seed_sweep, metrics=["val/loss", "test/nosuch"])
    proc = run_aerun("summarize", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "no job directories" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = run_aerun("summarize", str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 2 and "no such directory" in proc.stderr


def test_a_bad_job_fails_alone_and_is_listed(data_root, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    assert main(["train", "-m", *sweep_overrides(data_root, sweep_dir, "optim.lr=1e-3,-1")]) == 1  # all ran, one failed
    rows = {r["optim.lr"]: r for r in read_rows(sweep_dir)}
    assert rows["0.001"]["status"] == "ok" and float(rows["0.001"]["objective"]) > 0
    assert rows["-1"]["status"] == "failed" and rows["-1"]["reason"] == "optim.lr: must be > 0, got -1.0"
    assert rows["-1"]["objective"] == ""
    markdown = (sweep_dir / "summary.md").read_text()
    assert markdown.rstrip().endswith("optim.lr: must be > 0, got -1.0")  # failures come last
    assert "## Failed jobs (1)" in markdown
    out, err = capsys.readouterr()
    assert "## Failed jobs (1)" in out
    assert err.rstrip().splitlines()[-1] == "  job 1: failed: optim.lr: must be > 0, got -1.0"


def _copy_job(src: Path, dst: Path, status: dict | None, keep=(".hydra", runs.STATUS, runs.CONFIG_FILE)) -> Path:
    dst.mkdir(parents=True)
    for name in keep:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)
        elif (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    if status is not None:
        (dst / runs.STATUS).write_text(json.dumps(status))
    return dst


def test_mid_sweep_and_killed_jobs(seed_sweep, tmp_path):
    """A job whose process is gone is interrupted; one still holding its lock is running."""
    src = seed_sweep / "0"
    old = json.loads((src / runs.STATUS).read_text())
    killed = _copy_job(src, tmp_path / "sweep" / "0", {**old, "status": "running", "pid": 2 ** 22 + 12345})
    alive = _copy_job(src, tmp_path / "sweep" / "1", {**old, "status": "running", "pid": os.getpid()})
    (alive / ".lock").write_text(str(os.getpid()))
    _copy_job(src, tmp_path / "sweep" / "2", None, keep=(".hydra",))
    summary = write_summary(tmp_path / "sweep")
    status = {job.name: (job.status, job.reason) for job in summary.jobs}
    assert status["0"][0] == "interrupted" and "is gone" in status["0"][1]
    assert status["1"] == ("running", "")
    assert status["2"][0] == "interrupted" and "no status.json" in status["2"][1]
    assert len(read_rows(tmp_path / "sweep")) == 3 and not (tmp_path / "sweep" / "best.json").exists()
    assert "## Unfinished jobs (3)" in summary.markdown and "resume=true" in summary.markdown
    assert effective_status(killed, None)[0] == "interrupted"


def test_resume_arguments_are_checked(seed_sweep, data_root, tmp_path):
    base = sweep_overrides(data_root, None, "model.latent_dim=2,4", "seed=0,1")
    with pytest.raises(UserError, match="resume=true with -m: also pass hydra.sweep.dir"):
        prepare_multirun_overrides([*base, "resume=true"])
    assert prepare_multirun_overrides([*base, f"resume={seed_sweep}"]) == \
        [*base, "resume=true", f"hydra.sweep.dir={seed_sweep}"]
    assert prepare_multirun_overrides([*base, "resume=true", f"hydra.sweep.dir={seed_sweep}"]) == \
        [*base, "resume=true", f"hydra.sweep.dir={seed_sweep}"]
    assert prepare_multirun_overrides(base) == base  # no resume: untouched
    with pytest.raises(UserError, match="single run's directory"):
        prepare_multirun_overrides([*base, f"resume={seed_sweep / '0'}"])
    with pytest.raises(UserError, match="no such directory"):
        prepare_multirun_overrides([*base, f"resume={tmp_path / 'nope'}"])
    # resume=true into a sweep dir that does not exist yet starts it there (a resubmitted cluster job)
    fresh = tmp_path / "fresh"
    assert prepare_multirun_overrides([*base, "resume=true", f"hydra.sweep.dir={fresh}"])[-1] == f"hydra.sweep.dir={fresh}"
    with pytest.raises(UserError, match=r"resume: job 0 in .* ran with `model.latent_dim=2`, not `model.latent_dim=8`; "):
        prepare_multirun_overrides([*base[:-2], "model.latent_dim=8,4", "seed=0,1", f"resume={seed_sweep}"])
    with pytest.raises(UserError, match="Optuna"):
        prepare_multirun_overrides(["hparams_search=optuna", f"resume={seed_sweep}"])


def test_resolve_job_resume_decides_per_job(seed_sweep, tmp_path):
    job = seed_sweep / "0"
    overrides = json.loads((job / runs.STATUS).read_text())["overrides"]
    cfg = compose("train", [*overrides, "resume=true"])
    plan = resolve_job_resume(cfg, job, overrides)
    metrics = json.loads((job / runs.METRICS).read_text())
    assert plan.skip and plan.objective == pytest.approx(metrics["objective"]["value"])
    cfg_psnr = compose("train", [*overrides, "resume=true", "optimized_metric=test/psnr"])
    assert resolve_job_resume(cfg_psnr, job, overrides).objective == pytest.approx(metrics["test"]["psnr"])
    with pytest.raises(UserError, match=r"resume: the run in .* ran with `seed=0`, not `seed=5`"):
        resolve_job_resume(cfg, job, [o.replace("seed=0", "seed=5") for o in overrides])
    # a finished job whose trainer.max_epochs was raised continues from its last.pt
    more = resolve_job_resume(compose("train", [*overrides, "resume=true", "trainer.max_epochs=2"]), job,
                              [*overrides, "trainer.max_epochs=2"])
    assert not more.skip and more.resume == str(job)
    # no resume asked: train as usual
    assert resolve_job_resume(compose("train"), job, overrides).resume is None
    assert resolve_job_resume(cfg, tmp_path / "new", overrides).resume is None


def test_resume_true_skips_finished_jobs_and_continues_the_rest(seed_sweep, data_root, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(seed_sweep, sweep_dir)
    mtimes = {n: (sweep_dir / n / runs.METRICS).stat().st_mtime_ns for n in ("0", "2")}
    objective_1 = json.loads((sweep_dir / "1" / runs.METRICS).read_text())["objective"]["value"]
    # job 1 was killed after its checkpoint; job 3 failed
    status = json.loads((sweep_dir / "1" / runs.STATUS).read_text())
    (sweep_dir / "1" / runs.STATUS).write_text(json.dumps({**status, "status": "running", "pid": 2 ** 22 + 12345}))
    (sweep_dir / "1" / runs.METRICS).unlink()
    status = json.loads((sweep_dir / "3" / runs.STATUS).read_text())
    (sweep_dir / "3" / runs.STATUS).write_text(json.dumps({**status, "status": "failed", "reason": "boom"}))
    capsys.readouterr()
    overrides = sweep_overrides(data_root, None, "model.latent_dim=2,4", "seed=0,1")
    assert main(["train", "-m", *overrides, f"resume={sweep_dir}"]) == 0
    assert {n: (sweep_dir / n / runs.METRICS).stat().st_mtime_ns for n in ("0", "2")} == mtimes
    rows = {r["job"]: r for r in read_rows(sweep_dir)}
    assert len(rows) == 4 and {r["status"] for r in rows.values()} == {"ok"}
    assert float(rows["1"]["objective"]) == pytest.approx(objective_1, rel=1e-5)  # continued, not retrained
    out, _ = capsys.readouterr()
    assert "job 0 finished before" in out and "job 1 was interrupted: continuing" in out
    assert "job 3 was failed (boom): starting afresh" in out
    # a different sweep in the same dir is refused before any job runs
    changed = [o.replace("model.latent_dim=2,4", "model.latent_dim=8,4") for o in overrides]
    assert main(["train", "-m", *changed, f"resume={sweep_dir}"]) == 2


def test_a_missing_launcher_plugin_is_one_line():
    with pytest.raises(UserError, match=r"hydra/launcher=nope: no such Hydra plugin config \(installed: basic"):
        check_config("train", ["hydra/launcher=nope", "model.latent_dim=2,4"], True, None)
    check_config("train", ["hydra/launcher=basic", "hydra.launcher.foo=1", "model.latent_dim=2,4"], True, None)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*SQLAlchemy 2.0")  # optuna 2.10's storage module, imported, unused
def test_optuna_search_three_trials(data_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from omegaconf import OmegaConf

    sweep_dir = tmp_path / "search"
    # hparams_search makes it a sweep: no -m needed
    assert main(["train", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                 *sweep_overrides(data_root, sweep_dir)]) == 0
    rows = read_rows(sweep_dir)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert len({r["optim.lr"] for r in rows}) == 3
    assert all(1e-4 <= float(r["optim.lr"]) <= 1e-2 for r in rows)
    assert all(r["model.latent_dim"] in ("2", "4", "8", "16", "32", "64") for r in rows)
    result = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    best = json.loads((sweep_dir / "best.json").read_text())
    assert best["objective"]["value"] == pytest.approx(result.best_value)
    assert best["objective"]["value"] == pytest.approx(min(float(r["objective"]) for r in rows))


def test_optuna_vae_search_space_has_beta():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra import compose as hydra_compose, initialize_config_dir

    from aerun.precheck import CONFIG_DIR
    from aerun.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", ["hparams_search=optuna_vae"], return_hydra_config=True)
    assert cfg.model._target_ == "aerun.models.VAE"
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "model.latent_dim", "model.beta"}
    assert cfg.hydra.sweeper.direction == "minimize"

@pytest.mark.slow
def test_submitit_local_launcher(data_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    assert main(["train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                 *sweep_overrides(data_root, sweep_dir, "model.latent_dim=2")]) == 0
    rows = read_rows(sweep_dir)
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    status = json.loads((sweep_dir / "0" / runs.STATUS).read_text())
    assert status["pid"] != os.getpid()  # it ran in submitit's own process

@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel(data_root, tmp_path):
    """Through the `aerun` command itself: its prompt exit must not wait forever on the pool."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = run_aerun("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     *sweep_overrides(data_root, sweep_dir, "model.latent_dim=2,4"), cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(sweep_dir)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    pids = {json.loads((sweep_dir / r["job"] / runs.STATUS).read_text())["pid"] for r in rows}
    assert os.getpid() not in pids


def test_a_crashing_job_fails_alone_and_the_sweep_goes_on(data_root, tmp_path, monkeypatch):
    """An unexpected exception (a CUDA out-of-memory, say) in one job is that job's failure."""
    import aerun.commands.train as train_module

    real = train_module._build

    def flaky(plain, *args):
        if plain["model"]["latent_dim"] == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(plain, *args)

    monkeypatch.setattr(train_module, "_build", flaky)
    sweep_dir = tmp_path / "sweep"
    assert main(["train", "-m", *sweep_overrides(data_root, sweep_dir, "model.latent_dim=2,4,8")]) == 1
    rows = {r["model.latent_dim"]: r for r in read_rows(sweep_dir)}
    assert rows["2"]["status"] == "ok" and rows["8"]["status"] == "ok"
    assert rows["4"]["status"] == "failed"
    assert "out of memory (CUDA out of memory (simulated)); lower trainer.batch_size" in rows["4"]["reason"]
    assert "Traceback" in (sweep_dir / rows["4"]["job"] / "aerun.log").read_text()  # the details stay in the job's log
