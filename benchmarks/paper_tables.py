"""The issues' measurements against the papers they come from, each one table from one command.

    python benchmarks/paper_tables.py --data-root ../shared/datasets [--only svae,rbm,...] [--force]

Tables (in benchmarks/paper_tables.md, one section each; `--only` refreshes some, the others stay):
  svae           N-VAE vs S-VAE at d = 2, 5, 10, 20: IW-NLL (K=500) and k-NN accuracy with 100/600/1000 labels
                 (Davidson et al. 2018, Tables 1 and 2)
  vaegan         VAE-GAN vs the same conv VAE at equal epochs: sample quality (Larsen et al. 2016)
  cvae           conditional VAE: the judge's accuracy on `generate class=k` samples, for every k
  rbm            a 500-unit RBM by CD-1, CD-3 and PCD: AIS test log-likelihood (Salakhutdinov & Murray 2008)
  deep_ae        784-1000-500-250-30 with pretrain none / greedy / rbm, tied or not (Hinton & Salakhutdinov 2006)
  architectures  conv AE downsampling / upsampling; LSTM / GRU / transformer AEs vs mlp_ae and PCA
  one_class      one-class AUROC per MNIST digit, conv AE and conv VAE (Ruff et al. 2018, Table 1)
  ood            MNIST vs FashionMNIST both ways, every score (Nalisnick et al. 2019)
  samplers       which distribution to sample a latent space from: Frechet distance, precision, recall
  rate_distortion  the conv AE as a codec against PCA and JPEG

Every step is the real `aerun` CLI in a subprocess, run from the repository root; runs go to
outputs/paper/<table>/ and a step whose output exists is not run again (unless --force), so
the script can be stopped and started. The commands appear in each section as they ran,
with $DATA_ROOT for the data root.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/paper_tables.py` from a checkout, installed or not
RESULTS = REPO / "benchmarks" / "paper_tables.md"
SECTIONS = REPO / "benchmarks" / "paper_tables"


class Bench:
    """Runs the CLI, skipping what is done; remembers each table's commands for its section."""

    def __init__(self, data_root: Path, force: bool, smoke: bool = False):
        self.data_root = data_root.resolve()
        self.force, self.smoke = force, smoke
        self.out = REPO / "outputs" / ("paper_smoke" if smoke else "paper")
        self.commands: list[str] = []
        self.table = ""

    def begin(self, table: str) -> None:
        self.table, self.commands = table, []

    def aerun(self, args: list[str], done: Path) -> Path:
        shown = "aerun " + " ".join(a if "$DATA_ROOT" in a else shlex.quote(a) for a in args)
        self.commands.append(shown)
        if done.exists() and not self.force:
            return done
        argv = [a.replace("$DATA_ROOT", str(self.data_root)) for a in args]
        log = self.out / "logs" / f"{self.table}-{len(self.commands):03d}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{self.table}] {shown}", flush=True)
        started = time.time()
        with open(log, "w") as sink:
            sink.write(f"$ {shown}\n")
            sink.flush()
            proc = subprocess.run([sys.executable, "-m", "aerun", *argv], cwd=REPO, stdout=sink,
                                  stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0 or not done.exists():
            tail = " / ".join(log.read_text().strip().splitlines()[-4:])
            raise RuntimeError(f"`{shown}` exited {proc.returncode} (log {log}): {tail}")
        print(f"[{self.table}]   {time.time() - started:.0f} s", flush=True)
        return done

    def run_dir(self, name: str, folder: str | None = None) -> Path:
        return self.out / (folder or self.table) / name

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, REPO)

    def train(self, name: str, *overrides: str, folder: str | None = None) -> Path:
        """`aerun train <overrides> data.root=$DATA_ROOT hydra.run.dir=outputs/paper/<table>/<name>`
        (`folder` instead of the table's: a run several tables read, trained once)."""
        run = self.run_dir(name, folder)
        if run.exists() and (self.force or not (run / "metrics.json").is_file()):
            shutil.rmtree(run)  # an unfinished run from an earlier start: train it again
        smoke = []
        if self.smoke:  # tiny runs that still pass every stage of a staged model, on any class filter
            overrides = tuple(o for o in overrides if not o.startswith(("trainer.max_epochs=", "model.pretrain_epochs=")))
            staged = any(o.startswith("model.pretrain=") for o in overrides)  # 4 one-epoch stages, 1 to fine-tune
            smoke = ["debug=smoke", f"trainer.max_epochs={5 if staged else 4}", "data.val_size=0.1",
                     *(["model.pretrain_epochs=1"] if staged else [])]
        self.aerun(["train", *overrides, *smoke, "trainer.progress=false", "data.root=$DATA_ROOT",
                    f"hydra.run.dir={self.rel(run)}"], run / "metrics.json")
        return run

    def command(self, command: str, run: Path, out_name: str, result: str, *options: str) -> Path:
        """`aerun <command> run=<run> <options> hydra.run.dir=<run>_<out_name>`; returns that directory."""
        out = run.parent / f"{run.name}_{out_name}"
        done = out / result
        if done.exists() and (run / "metrics.json").stat().st_mtime > done.stat().st_mtime:
            done.unlink()  # the run was trained again since
        self.aerun([command, f"run={self.rel(run)}", *options, f"hydra.run.dir={self.rel(out)}"], done)
        return out


def shared_cnn_ae_16(bench: Bench) -> Path:
    """The textbook conv AE with 16-d codes, 10 epochs: architectures, samplers and rate_distortion read it."""
    return bench.train("cnn_ae_16", "model=cnn_ae", "model.latent_dim=16", "trainer.max_epochs=10", folder="shared")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def section(bench: Bench, title: str, body: str, notes: str = "") -> str:
    commands = "\n".join(f"    {c}" for c in bench.commands)
    return f"## {title}\n\n{body}\n\n{notes}\n\nCommands (each run once; `python benchmarks/paper_tables.py --only " \
           f"{bench.table}` runs them all):\n\n{commands}\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.paper_tables_apps import APP_TABLES
    from benchmarks.paper_tables_models import MODEL_TABLES

    tables = {**MODEL_TABLES, **APP_TABLES}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--only", default=",".join(tables), help="comma-separated tables: " + ", ".join(tables))
    parser.add_argument("--force", action="store_true", help="train and run everything again")
    parser.add_argument("--smoke", action="store_true", help="debug=smoke runs into outputs/paper_smoke/; "
                        "prints the tables, writes no results (a check of this script on tiny data)")
    args = parser.parse_args(argv)
    chosen = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in tables]
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; choose from {', '.join(tables)}")
    bench = Bench(args.data_root, args.force, args.smoke)
    SECTIONS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in chosen:
        bench.begin(name)
        started = time.time()
        try:
            text = tables[name](bench)
        except Exception as exc:  # noqa: BLE001 - one table failing must not lose the others
            print(f"[{name}] FAILED: {exc}", flush=True)
            failed.append(name)
            continue
        if args.smoke:
            print(text)
            continue
        (SECTIONS / f"{name}.md").write_text(text + f"\n_Wall time of this table's steps run now: "
                                             f"{(time.time() - started) / 60:.1f} min._\n")
    if args.smoke:
        return 1 if failed else 0
    parts = [(SECTIONS / f"{name}.md").read_text() for name in tables if (SECTIONS / f"{name}.md").is_file()]
    header = ("# The papers' tables, measured (written by `benchmarks/paper_tables.py`)\n\n"
              f"MNIST and FashionMNIST as IDX files under --data-root; 2 CPU cores; {time.strftime('%Y-%m-%d')}.\n")
    RESULTS.write_text(header + "\n" + "\n".join(parts))
    print(f"wrote {RESULTS}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
