"""`aerun summarize <sweep dir>`: one table from a sweep's run directories.

It reads what every job left (`status.json`, `metrics.json`, `.hydra/overrides.yaml`)
and writes beside them, atomically:

- `summary.csv`: one row per job (overrides, status and reason, objective, metrics,
  epochs, wall time, parameters, run dir);
- `summary.md`: the same as a table, a mean ± std table per configuration when the
  sweep repeats seeds, the best job, and the failed / unfinished jobs with reasons;
- `summary_by_config.csv`: the mean ± std table, when there is one;
- `best.json`: the best job's run dir, overrides and objective.

It works at any time: mid-sweep, after a kill (a job whose process is gone is
`interrupted`), or after the sweep. A sweep rewrites these files as each job ends
(see `aerun.sweep.SweepSummary`); this command rebuilds them by hand.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aerun import runs
from aerun.errors import UserError

log = logging.getLogger("aerun.summarize")

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
GROUPED_CSV = "summary_by_config.csv"
BEST_JSON = "best.json"
# Overrides that say how a job ran, not what it is: never table columns.
IGNORED_KEYS = ("resume",)
# Metrics shown by default (those present in some job), per split.
DEFAULT_METRICS = ("val/loss", "val/mse", "test/loss", "test/mse", "test/psnr", "test/elbo", "test/kl")
STATS = ("best_epoch", "epochs", "wall_time_s", "params")
# Higher is better for these metric names; lower for all others.
MAXIMIZED = ("psnr", "psnr_noisy", "elbo")


# ----------------------------------------------------------------------------- one job
@dataclass
class Job:
    path: Path
    name: str  # the run dir relative to the sweep dir ("0", "1", ...)
    status: str  # ok | running | interrupted | failed
    reason: str
    overrides: list[str]  # key=value as the job got them, less hydra.* and resume
    metrics: dict | None
    objective_name: str | None = None
    objective: float | None = None

    @property
    def values(self) -> dict[str, str]:
        """override key -> value ('model' -> 'vae', 'optim.lr' -> '0.001')."""
        return dict(_split_override(o) for o in self.overrides)

    def sort_key(self):
        return (0, int(self.name)) if self.name.isdigit() else (1, self.name)


def _split_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value if "=" in text else "<deleted>"


def clean_overrides(overrides) -> list[str]:
    """A job's overrides without Hydra's own (hydra.*, hydra/...) and without resume."""
    out = []
    for o in overrides or []:
        key = _split_override(str(o))[0]
        if key.startswith("hydra") or key in IGNORED_KEYS:
            continue
        out.append(str(o))
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def effective_status(job_dir: Path, status: dict | None) -> tuple[str, str]:
    """(status, reason) of a job, from its status.json and whether its process still lives.

    `running` is believed only while the process that wrote it still holds the run's
    lock; a job killed hard (SIGKILL, a node lost) is `interrupted`. A status written on
    another host (a cluster node) cannot be checked from here and is kept as it is.
    """
    if status is None:
        if (job_dir / runs.METRICS).is_file():
            return "ok", ""
        return "interrupted", "no status.json: stopped before training started"
    state = str(status.get("status", "unknown"))
    reason = " ".join(str(status.get("reason") or "").split())
    if state != "running":
        return state, reason
    host = status.get("host")
    if host is not None and host != socket.gethostname():
        return "running", f"on {host}"
    pid = status.get("pid")
    lock = job_dir / ".lock"
    try:
        lock_pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        lock_pid = 0
    if pid and lock_pid == pid and _pid_alive(int(pid)):
        return "running", ""
    if pid and lock_pid == 0 and pid == os.getpid():
        # This very process ran the job and let go of the lock without a final status:
        # an unexpected exception (a bug, or a crash the sweep callback records).
        return "failed", "the job ended with an unexpected error; see its aerun.log"
    return "interrupted", f"its process ({pid or 'unknown pid'}) is gone: killed before it could record a result"


def objective_from_metrics(metrics: dict, name: str | None) -> tuple[str | None, float | None]:
    """The value of `split/metric` in a metrics.json ('auto' = val/loss, or test/loss without val)."""
    if not metrics:
        return None, None
    if name in (None, "auto"):
        stored = metrics.get("objective") or {}
        if name is None and stored.get("name"):
            return stored["name"], _number(stored.get("value"))
        name = "val/loss" if metrics.get("val") else "test/loss"
    split, _, metric = name.partition("/")
    return name, _number((metrics.get(split) or {}).get(metric))


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_job(job_dir: Path, sweep_dir: Path) -> Job:
    status = runs.read_json(job_dir / runs.STATUS)
    overrides = None
    saved = job_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        try:
            overrides = OmegaConf.to_container(OmegaConf.load(saved))
        except Exception:  # noqa: BLE001 - a half-written file: fall back to status.json
            overrides = None
    if overrides is None and status:
        overrides = status.get("overrides")
    state, reason = effective_status(job_dir, status)
    metrics = runs.read_json(job_dir / runs.METRICS) if state == "ok" else None
    if state == "ok" and metrics is None:
        state, reason = "failed", "status ok but metrics.json is missing or unreadable"
    name, value = objective_from_metrics(metrics, None)
    if name is None and state == "ok" and status and status.get("objective"):
        name, value = status["objective"].get("name"), _number(status["objective"].get("value"))
    relative = job_dir.relative_to(sweep_dir).as_posix() if job_dir != sweep_dir else "."
    return Job(job_dir, relative, state, reason, clean_overrides(overrides), metrics, name, value)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Every directory under `sweep_dir` that a job ran in (it has status.json or .hydra/)."""
    found = set()
    for root, dirs, files in os.walk(sweep_dir):
        here = Path(root)
        if runs.STATUS in files or (".hydra" in dirs and (here / ".hydra" / "overrides.yaml").is_file()):
            if here != sweep_dir:
                found.add(here)
            dirs[:] = []  # a job dir holds no other jobs
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != runs.TENSORBOARD]
    return sorted(found)


def expected_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep will run, from its multirun.yaml (grid sweeps and Optuna)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
        sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None)
        target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
        if target.endswith("BasicSweeper"):
            task = [str(o) for o in OmegaConf.to_container(cfg.hydra.overrides.task)]
            return len(grid_jobs(task))
        if sweeper is not None and "n_trials" in sweeper:
            return int(sweeper.n_trials)
    except Exception:  # noqa: BLE001 - the count is a nicety
        return None
    return None


def grid_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of `overrides`, in its order (job i = list i)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra.")])
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


# ----------------------------------------------------------------------------- the tables
@dataclass
class Summary:
    sweep_dir: Path
    jobs: list[Job]
    markdown: str
    best: dict | None
    failed: list[Job] = field(default_factory=list)
    unfinished: list[Job] = field(default_factory=list)
    expected: int | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for job in self.jobs:
            out[job.status] = out.get(job.status, 0) + 1
        return out


def direction_of(objective_name: str | None, direction: str = "auto") -> str:
    if direction in ("minimize", "maximize"):
        return direction
    metric = (objective_name or "").rpartition("/")[2]
    return "maximize" if metric in MAXIMIZED else "minimize"


def _fmt(value, key: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if key == "params" else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if key.endswith("_time_s"):
            return f"{value:.1f}"
        return f"{value:.4g}"
    return str(value)


def _short(value: str) -> str:
    """An override value for the table: 0.006074996073425695 (an Optuna trial) -> 0.006075."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and math.isfinite(number) else value


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric(job: Job, name: str):
    if not job.metrics:
        return None
    if "/" in name:
        split, _, metric = name.partition("/")
        value = (job.metrics.get(split) or {}).get(metric)
    else:
        value = job.metrics.get(name)
    return None if isinstance(value, (list, dict)) else value


def _override_value(value: str):
    """'0.001' -> 0.001 so that sweeps sort by number, other text as it is."""
    try:
        return float(value)
    except ValueError:
        return value


def _sorted_jobs(jobs: list[Job], sort_by: str, descending: bool, direction: str, columns: list[str]) -> list[Job]:
    if sort_by == "job":
        ordered = sorted(jobs, key=Job.sort_key)
        return ordered[::-1] if descending else ordered
    if sort_by not in columns and sort_by.partition("/")[0] not in ("train", "val", "test"):
        raise UserError(f"summarize.sort_by={sort_by}: no such column; choose one of {', '.join(columns)}")

    def value(job: Job):
        if sort_by == "objective":
            v = job.objective if job.status == "ok" else None
            return None if v is None or math.isnan(v) else (-v if direction == "maximize" else v)
        if sort_by == "status":
            return job.status
        if sort_by in job.values:
            return _override_value(job.values[sort_by])
        return _metric(job, sort_by)

    present = [j for j in sorted(jobs, key=Job.sort_key) if value(j) is not None]
    missing = [j for j in sorted(jobs, key=Job.sort_key) if value(j) is None]
    # Numbers before text when a column mixes both; missing values always last.
    present.sort(key=lambda j: (0, value(j), "") if isinstance(value(j), (int, float)) else (1, 0, str(value(j))),
                 reverse=descending)
    return present + missing


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(mean, std, key="") -> str:
    if mean is None:
        return ""
    if std is None:
        return _fmt(mean, key)
    return f"{_fmt(mean, key)} ± {std:.1f}" if key.endswith("_time_s") else f"{_fmt(mean, key)} ± {std:.2g}"


def build_summary(sweep_dir, sort_by: str = "objective", descending: bool = False,
                  metrics: list[str] | None = None, direction: str = "auto") -> tuple[Summary, dict[str, str]]:
    """Read every job under `sweep_dir`; returns the Summary and {file name: text} to write."""
    sweep_dir = Path(sweep_dir)
    jobs = sorted((read_job(p, sweep_dir) for p in find_job_dirs(sweep_dir)), key=Job.sort_key)
    if not jobs:
        raise UserError(f"dir={sweep_dir}: no job directories in it (a sweep dir holds <job>/status.json or "
                        f"<job>/.hydra/); pass the folder that 'aerun train -m' wrote")
    expected = expected_jobs(sweep_dir)

    # Override keys: those that differ between jobs are columns; the rest are shown once.
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.values if k not in keys]
    varying = [k for k in keys if len({job.values.get(k) for job in jobs}) > 1]
    common = [f"{k}={jobs[0].values[k]}" for k in keys if k not in varying]

    names = {job.objective_name for job in jobs if job.objective_name}
    objective_name = names.pop() if len(names) == 1 else None
    objective_label = f"objective ({objective_name})" if objective_name else "objective"
    dirn = direction_of(objective_name or next(iter(names), None), direction)
    wanted = list(metrics) if metrics else [m for m in DEFAULT_METRICS if any(_metric(j, m) is not None for j in jobs)]
    shown = [m for m in wanted if m != objective_name]  # the objective has its own column
    stats = [s for s in STATS if any(_metric(j, s) is not None for j in jobs)]
    columns = ["job", *varying, "status", "objective", *shown, *stats]
    ordered = _sorted_jobs(jobs, sort_by, descending, dirn, columns + [k for k in keys if k not in columns])

    # ---- summary.csv: everything, full precision
    csv_columns = ["job", "status", "reason", *keys, "objective_name", "objective",
                   *dict.fromkeys([*wanted, "best_epoch", "epochs", "steps", "wall_time_s", "train_time_s",
                                   "images_per_s", "params"]), "model_class", "run_dir", "overrides"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns)
    for job in ordered:
        row = {"job": job.name, "status": job.status, "reason": job.reason, **job.values,
               "objective_name": job.objective_name, "objective": job.objective,
               "model_class": (job.metrics or {}).get("model"), "run_dir": str(job.path.resolve()),
               "overrides": " ".join(job.overrides)}
        values = [row[c] if c in row else _metric(job, c) for c in csv_columns]
        writer.writerow(["" if v is None else v for v in values])
    files = {SUMMARY_CSV: buffer.getvalue()}

    # ---- summary.md
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: ("ok", "running").index(kv[0])
                                                     if kv[0] in ("ok", "running") else 2))
    pending = f"; {expected - len(jobs)} not started yet" if expected and expected > len(jobs) else ""
    md = [f"# Sweep summary: {sweep_dir.resolve()}", "",
          f"{len(jobs)} jobs: {tally}{pending}. Updated {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    if common:
        md += [f"Common overrides: `{' '.join(common)}`", ""]
    md += [f"Objective: {objective_name or 'per job'} ({'higher' if dirn == 'maximize' else 'lower'} is better). "
           f"Sorted by {sort_by}{' (descending)' if descending else ''}. Job dirs are relative to the sweep dir.", ""]
    header = ["job", *varying, "status", objective_label, *shown,
              *[{"best_epoch": "best epoch", "wall_time_s": "wall s"}.get(s, s) for s in stats]]
    rows = [[job.name, *[_short(job.values.get(k, "")) for k in varying], job.status, _fmt(job.objective),
             *[_fmt(_metric(job, m), m) for m in shown], *[_fmt(_metric(job, s), s) for s in stats]]
            for job in ordered]
    md += [_md_table(header, rows), ""]

    # ---- repeats over seeds: mean ± std per configuration
    best_group = None
    if "seed" in varying:
        config_keys = [k for k in varying if k != "seed"]
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            groups.setdefault(tuple(job.values.get(k, "") for k in config_keys), []).append(job)
        if any(len(g) > 1 for g in groups.values()):
            group_rows, grouped_csv = [], []
            for config, members in groups.items():
                ok = [j for j in members if j.status == "ok"]
                stat = {m: _mean_std([_number(_metric(j, m)) for j in ok]) for m in [*shown, "wall_time_s"]}
                stat["objective"] = _mean_std([j.objective for j in ok])
                group_rows.append((config, members, ok, stat))
            sign = -1 if dirn == "maximize" else 1
            group_rows.sort(key=lambda g: (g[3]["objective"][0] is None, sign * (g[3]["objective"][0] or 0)))
            header = [*config_keys, "seeds ok", f"{objective_label} mean ± std", *shown, "wall s"]
            rows = [[*map(_short, config), f"{len(ok)}/{len(members)}", _pm(*stat["objective"]),
                     *[_pm(*stat[m], m) for m in shown], _pm(*stat["wall_time_s"], "wall_time_s")]
                    for config, members, ok, stat in group_rows]
            md += ["## Mean ± std over seeds (per configuration, best first)", "",
                   _md_table(header, rows), ""]
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow([*config_keys, "seeds", "seeds_ok", "objective_mean", "objective_std",
                             *[f"{m}_{s}" for m in shown for s in ("mean", "std")]])
            for config, members, ok, stat in group_rows:
                writer.writerow([*config, len(members), len(ok),
                                 *["" if v is None else v for v in stat["objective"]],
                                 *["" if v is None else v for m in shown for v in stat[m]]])
            files[GROUPED_CSV] = buffer.getvalue()
            top = group_rows[0]
            if top[3]["objective"][0] is not None:
                best_group = {"overrides": [f"{k}={v}" for k, v in zip(config_keys, top[0])],
                              "objective_mean": top[3]["objective"][0], "objective_std": top[3]["objective"][1],
                              "seeds": [j.values.get("seed") for j in top[2]]}

    # ---- the best job
    finished = [j for j in jobs if j.status == "ok" and j.objective is not None and not math.isnan(j.objective)]
    best = None
    if finished:
        pick = (max if dirn == "maximize" else min)(finished, key=lambda j: j.objective)
        best = {"job": pick.name, "run_dir": str(pick.path.resolve()), "overrides": pick.overrides,
                "objective": {"name": pick.objective_name, "value": pick.objective}, "direction": dirn,
                "metrics": {m: _metric(pick, m) for m in wanted if _metric(pick, m) is not None}}
        if best_group:
            best["best_configuration_over_seeds"] = best_group
        md += ["## Best job", "",
               f"Job `{pick.name}`: {pick.objective_name} = {_fmt(pick.objective)}", "",
               f"- overrides: `{' '.join(pick.overrides) or '(none)'}`",
               f"- run dir: `{pick.path.resolve()}`"]
        if best_group:
            md.append(f"- best configuration over seeds: `{' '.join(best_group['overrides']) or '(none)'}` "
                      f"({_pm(best_group['objective_mean'], best_group['objective_std'])})")
        md.append("")
        files[BEST_JSON] = None  # written as JSON below

    # ---- failures last, every one with its reason
    failed = [j for j in jobs if j.status == "failed"]
    unfinished = [j for j in jobs if j.status in ("interrupted", "running")]
    if failed:
        md += [f"## Failed jobs ({len(failed)})", ""]
        md += [f"- job `{j.name}` (`{' '.join(_varying(j, varying)) or ' '.join(j.overrides)}`): {j.reason or 'no reason recorded'}"
               for j in failed] + [""]
    if unfinished:
        md += [f"## Unfinished jobs ({len(unfinished)})", ""]
        md += [f"- job `{j.name}` (`{' '.join(_varying(j, varying)) or ' '.join(j.overrides)}`): {j.status}"
               f"{': ' + j.reason if j.reason else ''}" for j in unfinished]
        md += ["", "Re-run the same sweep command with `resume=true hydra.sweep.dir=<this dir>` to finish them.", ""]
    files[SUMMARY_MD] = "\n".join(md)
    summary = Summary(sweep_dir, jobs, files[SUMMARY_MD], best, failed, unfinished, expected)
    return summary, files


def _varying(job: Job, varying: list[str]) -> list[str]:
    return [f"{k}={job.values[k]}" for k in varying if k in job.values]


def write_summary(sweep_dir, sort_by: str = "objective", descending: bool = False,
                  metrics: list[str] | None = None, direction: str = "auto") -> Summary:
    """Rebuild summary.csv, summary.md (+ summary_by_config.csv, best.json) in `sweep_dir`."""
    from aerun.io import write_json, write_text

    summary, files = build_summary(sweep_dir, sort_by, descending, metrics, direction)
    sweep_dir = Path(sweep_dir)
    for name, text in files.items():
        if name == BEST_JSON:
            write_json(sweep_dir / BEST_JSON, summary.best)
        else:
            write_text(sweep_dir / name, text)
    for stale in (GROUPED_CSV, BEST_JSON):
        if stale not in files and (sweep_dir / stale).is_file():
            (sweep_dir / stale).unlink()
    return summary


# ----------------------------------------------------------------------------- the command
def prepare_overrides(overrides: list[str], multirun: bool) -> list[str]:
    """Hydra runs in the sweep dir itself and writes nothing there (no .hydra/, no log file):
    no run directory is made under outputs/ for a summary."""
    if any(o.split("=", 1)[0] == "hydra.run.dir" for o in overrides):
        return overrides
    return [*overrides, "hydra.run.dir=${dir}"]


def validate(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "dir") or cfg.dir in (None, ""):
        raise UserError("dir: missing; pass the sweep directory, e.g. aerun summarize outputs/multirun/2026-01-01/12-00-00")
    path = Path(str(cfg.dir)).expanduser()
    if not path.exists():
        raise UserError(f"dir={cfg.dir}: no such directory")
    if not path.is_dir():
        raise UserError(f"dir={cfg.dir}: not a directory; pass the sweep directory that 'aerun train -m' wrote")
    options = cfg.summarize
    if options.metrics is not None:
        for name in options.metrics:
            split = str(name).partition("/")[0]
            if "/" not in str(name) or split not in ("train", "val", "test"):
                raise UserError(f"summarize.metrics: '{name}' is not a train/<name>, val/<name> or test/<name> metric")


def run(cfg: DictConfig):
    """Hydra's task: rebuild the summary files and print the markdown table."""
    validate(cfg)
    options = cfg.summarize
    direction = options.direction.value if hasattr(options.direction, "value") else str(options.direction)
    summary = write_summary(Path(str(cfg.dir)).expanduser(), sort_by=options.sort_by, descending=options.descending,
                            metrics=list(options.metrics) if options.metrics is not None else None,
                            direction=direction)
    print(summary.markdown)
    log.info("wrote %s and %s in %s", SUMMARY_CSV, SUMMARY_MD, summary.sweep_dir)
    return summary.best["objective"]["value"] if summary.best else None
