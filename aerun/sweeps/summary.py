"""A sweep's summary table: `summary.csv` (one row per job), `summary.md` (the table, a
mean ± std table per configuration when seeds repeat, the best job, failed and unfinished
jobs with reasons), `summary_by_config.csv` and `best.json`, written beside the job dirs.

It can be built at any time: mid-sweep, after a kill, or after the sweep (`aerun summarize`);
`aerun.sweeps.callback` rewrites it as each job of a sweep ends.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from aerun.errors import UserError
from aerun.sweeps.jobs import Job, _number, expected_jobs, find_job_dirs, read_job

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
GROUPED_CSV = "summary_by_config.csv"
BEST_JSON = "best.json"
# Metrics shown by default (those present in some job), per split.
DEFAULT_METRICS = ("val/loss", "val/mse", "test/loss", "test/mse", "test/psnr", "test/elbo", "test/kl")
STATS = ("best_epoch", "epochs", "wall_time_s", "params")
# Higher is better for these metric names; lower for all others.
MAXIMIZED = ("psnr", "psnr_noisy", "elbo")
MAXIMIZED_SUFFIXES = ("auroc", "auprc", "accuracy")  # anomaly/mse_auroc, finetune's test accuracy


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
    return "maximize" if metric in MAXIMIZED or metric.endswith(MAXIMIZED_SUFFIXES) else "minimize"


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
        raise UserError(f"summarize.sort_by={sort_by}: no such column; choose one of {', '.join(columns)}, "
                        f"or any train/<metric>, val/<metric> or test/<metric>")

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


@dataclass
class Table:
    """The columns of a summary, worked out once from the jobs."""

    sweep_dir: Path
    jobs: list[Job]
    keys: list[str]  # every override key, in first-seen order
    varying: list[str]  # ... those whose value differs between jobs: table columns
    objective_name: str | None
    direction: str
    wanted: list[str]  # metric columns
    shown: list[str]  # ... less the objective, which has its own column
    stats: list[str]
    ordered: list[Job] = field(default_factory=list)

    @property
    def objective_label(self) -> str:
        return f"objective ({self.objective_name})" if self.objective_name else "objective"

    @property
    def common(self) -> list[str]:
        return [f"{k}={self.jobs[0].values[k]}" for k in self.keys if k not in self.varying]


def _table(sweep_dir: Path, sort_by: str, descending: bool, metrics, direction: str) -> Table:
    jobs = sorted((read_job(p, sweep_dir) for p in find_job_dirs(sweep_dir)), key=Job.sort_key)
    if not jobs:
        raise UserError(f"dir={sweep_dir}: no job directories in it (a sweep dir holds <job>/status.json or "
                        f"<job>/.hydra/); pass the folder that 'aerun train -m' wrote")
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.values if k not in keys]
    varying = [k for k in keys if len({job.values.get(k) for job in jobs}) > 1]
    names = {job.objective_name for job in jobs if job.objective_name}
    objective_name = names.pop() if len(names) == 1 else None
    dirn = direction_of(objective_name or next(iter(names), None), direction)
    wanted = [m for m in (metrics or DEFAULT_METRICS) if any(_metric(j, m) is not None for j in jobs)]
    finished = [j for j in jobs if j.metrics]
    unknown = [m for m in (metrics or []) if m not in wanted]
    if unknown and finished:  # asked for by name, yet in no finished job's metrics.json
        have = sorted({f"{split}/{name}" for j in finished for split in ("train", "val", "test")
                       for name, v in (j.metrics.get(split) or {}).items() if isinstance(v, (int, float))})
        raise UserError(f"summarize.metrics: {', '.join(unknown)} is in no job's metrics.json; the jobs have "
                        f"{', '.join(have)}")
    shown = [m for m in wanted if m != objective_name]
    stats = [s for s in STATS if any(_metric(j, s) is not None for j in jobs)]
    table = Table(sweep_dir, jobs, keys, varying, objective_name, dirn, wanted, shown, stats)
    columns = ["job", *varying, "status", "objective", *shown, *stats]
    table.ordered = _sorted_jobs(jobs, sort_by, descending, dirn, columns + [k for k in keys if k not in columns])
    return table


def build_summary(sweep_dir, sort_by: str = "objective", descending: bool = False,
                  metrics: list[str] | None = None, direction: str = "auto") -> tuple[Summary, dict[str, str]]:
    """Read every job under `sweep_dir`; returns the Summary and {file name: text} to write."""
    sweep_dir = Path(sweep_dir)
    t = _table(sweep_dir, sort_by, descending, metrics, direction)
    expected = expected_jobs(sweep_dir)
    files = {SUMMARY_CSV: _jobs_csv(t)}
    md = _md_head(t, expected, sort_by, descending)
    group_md, grouped_csv, best_group = _seed_groups(t)
    md += group_md
    if grouped_csv is not None:
        files[GROUPED_CSV] = grouped_csv
    best_md, best = _best_job(t, best_group)
    md += best_md
    if best is not None:
        files[BEST_JSON] = None  # written as JSON by write_summary
    failed = [j for j in t.jobs if j.status == "failed"]
    unfinished = [j for j in t.jobs if j.status in ("interrupted", "running")]
    md += _problems(t, failed, unfinished)
    files[SUMMARY_MD] = "\n".join(md)
    return Summary(sweep_dir, t.jobs, files[SUMMARY_MD], best, failed, unfinished, expected), files


def _jobs_csv(t: Table) -> str:
    """summary.csv: everything, full precision."""
    csv_columns = ["job", "status", "reason", *t.keys, "objective_name", "objective",
                   *dict.fromkeys([*t.wanted, "best_epoch", "epochs", "steps", "wall_time_s", "train_time_s",
                                   "images_per_s", "params"]), "model_class", "run_dir", "overrides"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns)
    for job in t.ordered:
        row = {"job": job.name, "status": job.status, "reason": job.reason, **job.values,
               "objective_name": job.objective_name, "objective": job.objective,
               "model_class": (job.metrics or {}).get("model"), "run_dir": str(job.path.resolve()),
               "overrides": " ".join(job.overrides)}
        values = [row[c] if c in row else _metric(job, c) for c in csv_columns]
        writer.writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def _md_head(t: Table, expected: int | None, sort_by: str, descending: bool) -> list[str]:
    counts: dict[str, int] = {}
    for job in t.jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    order = ("ok", "running")
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: order.index(kv[0])
                                                     if kv[0] in order else 2))
    pending = f"; {expected - len(t.jobs)} not started yet" if expected and expected > len(t.jobs) else ""
    md = [f"# Sweep summary: {t.sweep_dir.resolve()}", "",
          f"{len(t.jobs)} jobs: {tally}{pending}. Updated {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    if t.common:
        md += [f"Common overrides: `{' '.join(t.common)}`", ""]
    md += [f"Objective: {t.objective_name or 'per job'} ({'higher' if t.direction == 'maximize' else 'lower'} is "
           f"better). Sorted by {sort_by}{' (descending)' if descending else ''}. Job dirs are relative to the "
           f"sweep dir.", ""]
    header = ["job", *t.varying, "status", t.objective_label, *t.shown,
              *[{"best_epoch": "best epoch", "wall_time_s": "wall s"}.get(s, s) for s in t.stats]]
    rows = [[job.name, *[_short(job.values.get(k, "")) for k in t.varying], job.status, _fmt(job.objective),
             *[_fmt(_metric(job, m), m) for m in t.shown], *[_fmt(_metric(job, s), s) for s in t.stats]]
            for job in t.ordered]
    return md + [_md_table(header, rows), ""]


def _seed_groups(t: Table) -> tuple[list[str], str | None, dict | None]:
    """Repeats over seeds: mean ± std per configuration (md lines, the grouped csv, the best group)."""
    if "seed" not in t.varying:
        return [], None, None
    config_keys = [k for k in t.varying if k != "seed"]
    groups: dict[tuple, list[Job]] = {}
    for job in t.jobs:
        groups.setdefault(tuple(job.values.get(k, "") for k in config_keys), []).append(job)
    if not any(len(g) > 1 for g in groups.values()):
        return [], None, None
    group_rows = []
    for config, members in groups.items():
        ok = [j for j in members if j.status == "ok"]
        stat = {m: _mean_std([_number(_metric(j, m)) for j in ok]) for m in [*t.shown, "wall_time_s"]}
        stat["objective"] = _mean_std([j.objective for j in ok])
        group_rows.append((config, members, ok, stat))
    sign = -1 if t.direction == "maximize" else 1
    group_rows.sort(key=lambda g: (g[3]["objective"][0] is None, sign * (g[3]["objective"][0] or 0)))
    header = [*config_keys, "seeds ok", f"{t.objective_label} mean ± std", *t.shown, "wall s"]
    rows = [[*map(_short, config), f"{len(ok)}/{len(members)}", _pm(*stat["objective"]),
             *[_pm(*stat[m], m) for m in t.shown], _pm(*stat["wall_time_s"], "wall_time_s")]
            for config, members, ok, stat in group_rows]
    title = "## Mean ± std over seeds (per configuration, best first)" if config_keys else "## Mean ± std over seeds"
    md = [title, "", _md_table(header, rows), ""]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*config_keys, "seeds", "seeds_ok", "objective_mean", "objective_std",
                     *[f"{m}_{s}" for m in t.shown for s in ("mean", "std")]])
    for config, members, ok, stat in group_rows:
        writer.writerow([*config, len(members), len(ok), *["" if v is None else v for v in stat["objective"]],
                         *["" if v is None else v for m in t.shown for v in stat[m]]])
    top, best_group = group_rows[0], None
    if top[3]["objective"][0] is not None:
        best_group = {"overrides": [f"{k}={v}" for k, v in zip(config_keys, top[0])],
                      "objective_mean": top[3]["objective"][0], "objective_std": top[3]["objective"][1],
                      "seeds": [j.values.get("seed") for j in top[2]]}
    return md, buffer.getvalue(), best_group


def _best_job(t: Table, best_group: dict | None) -> tuple[list[str], dict | None]:
    finished = [j for j in t.jobs if j.status == "ok" and j.objective is not None and not math.isnan(j.objective)]
    if not finished:
        return [], None
    pick = (max if t.direction == "maximize" else min)(finished, key=lambda j: j.objective)
    best = {"job": pick.name, "run_dir": str(pick.path.resolve()), "overrides": pick.overrides,
            "objective": {"name": pick.objective_name, "value": pick.objective}, "direction": t.direction,
            "metrics": {m: _metric(pick, m) for m in t.wanted if _metric(pick, m) is not None}}
    md = ["## Best job", "", f"Job `{pick.name}`: {pick.objective_name} = {_fmt(pick.objective)}", "",
          f"- overrides: `{' '.join(pick.overrides) or '(none)'}`", f"- run dir: `{pick.path.resolve()}`"]
    if best_group:
        best["best_configuration_over_seeds"] = best_group
        spread = _pm(best_group["objective_mean"], best_group["objective_std"])
        if best_group["overrides"]:
            md.append(f"- best configuration over seeds: `{' '.join(best_group['overrides'])}` ({spread})")
        else:  # only the seed varies: one configuration
            md.append(f"- over the {len(best_group['seeds'])} seeds: {t.objective_name or 'objective'} {spread}")
    return md + [""], best


def _problems(t: Table, failed: list[Job], unfinished: list[Job]) -> list[str]:
    """Failed and unfinished jobs, last, every one with its reason."""
    md = []
    if failed:
        md += [f"## Failed jobs ({len(failed)})", ""]
        md += [f"- job `{j.name}` (`{' '.join(_varying(j, t.varying)) or ' '.join(j.overrides)}`): "
               f"{j.reason or 'no reason recorded'}" for j in failed] + [""]
    if unfinished:
        md += [f"## Unfinished jobs ({len(unfinished)})", ""]
        md += [f"- job `{j.name}` (`{' '.join(_varying(j, t.varying)) or ' '.join(j.overrides)}`): {j.status}"
               f"{': ' + j.reason if j.reason else ''}" for j in unfinished]
        md += ["", "Re-run the same sweep command with `resume=true hydra.sweep.dir=<this dir>` to finish them.", ""]
    return md


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


