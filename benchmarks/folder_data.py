"""Your own data at MNIST scale: a 60,000-image PNG folder against the built-in MNIST reader,
and a memory-mapped dataset larger than the process's memory limit.

Rows (each printed as a markdown table with the command that measures it):
  load        `dataset_from_config` in a fresh process: the PNG folder with an empty AERUN_CACHE
              (decode + cache write + the split's arranged file), the same again (cached memory
              map), and the built-in MNIST IDX reader for reference.
  throughput  aerun's engine as `aerun train` builds it (`commands.train.build_loop` on a silent
              rank, `engine.train_one_epoch`, like train_throughput.py's row (b)), cnn_ae fp32 at
              batch 128 on the CPU: the same number of steps over the memory-mapped folder split
              and over the built-in in-memory split, alternating, median images/s.
  process     whole `aerun train model=cnn_ae trainer.max_epochs=1` processes, folder (cached)
              against built-in, median wall time.
  rss         `aerun train data=npz data.path=<random uint8 .npy>` (linear_ae, one epoch) under
              RLIMIT_DATA = half the file's size, sampling /proc/<pid>/status every 0.1 s.
              RLIMIT_DATA caps what the process holds privately (heap, anonymous maps, private
              writable file maps) and not read-only file maps, whose pages the kernel may evict:
              the run can only finish if the dataset is never copied into its own memory.
              (RLIMIT_AS would count the mapped file and torch's address-space reservations;
              RLIMIT_RSS is not enforced by Linux.)

    python benchmarks/folder_data.py                      # every row (about 10 minutes on 2 cores)
    python benchmarks/folder_data.py --rows load,throughput --quick

MNIST comes from --root (default $AERUN_DATA_ROOT or ../shared/datasets); everything written
goes under --work (default /tmp/aerun-folder-bench): the PNG folder, the .npy, the caches.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
AERUN = [sys.executable, "-m", "aerun"]
DEFAULT_ROOT = Path(os.environ.get("AERUN_DATA_ROOT", REPO.parent / "shared" / "datasets"))
STATUS_KEYS = ("VmHWM", "RssAnon", "RssFile", "VmData")


def export_png(root: Path, out: Path) -> Path:
    """MNIST's training set as out/<label>/<index>.png (once; a hidden marker says it is whole)."""
    import numpy as np
    from PIL import Image

    from aerun.data import idx

    if (out / ".complete").is_file():
        return out
    found, missing, _ = idx.locate(root, "MNIST")
    if missing:
        raise SystemExit(f"MNIST not found under {root} (missing {', '.join(missing)}); pass --root")
    train, _ = idx.read_splits(found)
    images, labels = train.images[:, 0].numpy(), train.labels.numpy()  # [N, 28, 28], [N]
    for label in range(10):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(np.ascontiguousarray(image)).save(out / str(label) / f"{i:05d}.png")
    (out / ".complete").write_text(f"{len(images)} images\n")
    return out


def child_load(config: str) -> None:
    """(In a subprocess) time dataset_from_config for a JSON data config; print the result as JSON."""
    from aerun.data import dataset_from_config

    started = time.perf_counter()
    ds = dataset_from_config(json.loads(config), seed=0)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "train": len(ds.train), "val": len(ds.val), "test": len(ds.test)}))


def _load_in_subprocess(config: dict, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child-load", json.dumps(config)], capture_output=True,
                          text=True, env={**os.environ, **env}, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def folder_config(folder: Path) -> dict:
    return {"name": "folder", "path": str(folder), "val_size": 0.1, "test_size": 10_000}


def builtin_config(root: Path) -> dict:
    # the first 50,000 training images: the same 45,000 / 5,000 / 10,000 split sizes as the folder's
    return {"name": "mnist", "root": str(root), "val_size": 0.1, "download": False, "max_train_samples": 50_000}


def load_rows(folder: Path, root: Path, work: Path) -> list[tuple[str, str, str]]:
    import shutil

    cache = work / "cache-load"
    shutil.rmtree(cache, ignore_errors=True)
    env = {"AERUN_CACHE": str(cache)}
    first = _load_in_subprocess(folder_config(folder), env)
    second = _load_in_subprocess(folder_config(folder), env)
    builtin = _load_in_subprocess(builtin_config(root), env)
    size = sum(p.stat().st_size for p in cache.rglob("*.npy")) / 2**20
    split = f"{first['train']} / {first['val']} / {first['test']} images"
    return [("folder load, first run (decode 60,000 PNG + cache write + split file)", f"{first['seconds']:.1f} s",
             f"{split}; cache {size:.0f} MiB"),
            ("folder load, second run (cached memory map)", f"{second['seconds']:.2f} s", split),
            ("built-in MNIST load (IDX .gz, in memory; max_train_samples=50000)", f"{builtin['seconds']:.2f} s",
             f"{builtin['train']} / {builtin['val']} / {builtin['test']} images")]


def mapped_file(tensor) -> str:
    """The file whose memory map holds the tensor's data (/proc/self/maps), or 'no file'."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high and len(fields) >= 6:
            return fields[5]
    return "no file"


def _engine(dataset, plain: dict):
    """The Loop `aerun train` builds for `dataset`, on a rank that writes nothing."""
    import contextlib
    import tempfile

    import torch

    from aerun import distributed
    from aerun.build import build_model
    from aerun.commands.train import build_loop

    torch.manual_seed(0)
    model = build_model(plain["model"], dataset.image_shape)
    model = model.to(memory_format=torch.channels_last)
    silent = distributed.DistContext(enabled=False, rank=1)
    params = sum(p.numel() for p in model.parameters())
    return build_loop(plain, Path(tempfile.mkdtemp()), silent, torch.device("cpu"), model, dataset, params,
                      contextlib.ExitStack(), None)


def _timed_steps(loop, train, steps: int, batch: int) -> float:
    """images/s of `steps` batches over a view of the first steps*batch training images."""
    import torch

    from aerun.data import Split
    from aerun.engine import EpochAccumulator, train_one_epoch

    n = steps * batch
    loop.train = Split(train.images[:n], train.labels[:n])  # a slice: still the memory map for the folder
    loop.state.batch_in_epoch = 0
    accumulator = EpochAccumulator(torch.device("cpu"))
    started = time.perf_counter()
    train_one_epoch(loop, accumulator)
    accumulator.means()
    seconds = time.perf_counter() - started
    loop.state.epoch += 1
    return n / seconds


def throughput_rows(folder: Path, root: Path, work: Path, steps: int, repeats: int) -> list[tuple[str, str, str]]:
    """Alternating pairs of timings; a pair counts only if other processes stayed off the CPU
    (train_throughput.py's BackgroundMeter), up to 4x `repeats` tries."""
    import torch

    from aerun.config import to_plain
    from aerun.data import dataset_from_config
    from aerun.precheck import compose

    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_throughput import QUIET_CORES, BackgroundMeter

    os.environ["AERUN_CACHE"] = str(work / "cache-load")  # the load rows' cache: no decode here
    plain = to_plain(compose("train", ["model=cnn_ae", "trainer.device=cpu", "trainer.progress=false"]))
    datasets = {"folder (memory-mapped)": dataset_from_config(folder_config(folder), 0),
                "built-in (in memory)": dataset_from_config(builtin_config(root), 0)}
    loops = {name: _engine(ds, plain) for name, ds in datasets.items()}
    batch, names, meter = plain["trainer"]["batch_size"], list(datasets), BackgroundMeter()
    for name in names:  # warm-up: the map's pages read once, threads started
        _timed_steps(loops[name], datasets[name].train, max(5, steps // 5), batch)
    pairs, tries = [], 0
    while sum(p["quiet"] for p in pairs) < repeats and tries < 4 * repeats:
        meter.wait_for_quiet(60)
        pair, quiet = {}, True
        for name in (names if tries % 2 == 0 else names[::-1]):
            meter.start()
            pair[name] = _timed_steps(loops[name], datasets[name].train, steps, batch)
            background = meter.stop()
            quiet = quiet and (background is None or background < QUIET_CORES)
        pairs.append({**pair, "quiet": quiet})
        tries += 1
    used = [p for p in pairs if p["quiet"]] or pairs
    medians = {name: statistics.median(p[name] for p in used) for name in names}
    ratio = statistics.median(p[names[0]] / p[names[1]] for p in used)
    mapped = mapped_file(datasets[names[0]].train.images)
    rows = [(f"engine, cnn_ae fp32 batch {batch}, {name}", f"{medians[name]:,.0f} images/s",
             f"median of {len(used)} undisturbed of {len(pairs)} x {steps} steps: "
             f"{', '.join(f'{p[name]:,.0f}' for p in used)}") for name in names]
    rows.append(("engine: folder / built-in, per pair", f"{ratio:.3f}", f"goal >= 0.95; torch {torch.__version__}, "
                 f"{torch.get_num_threads()} threads; the folder's train split is a view of the memory map of {mapped}"))
    return rows


def process_rows(folder: Path, root: Path, work: Path, repeats: int) -> list[tuple[str, str, str]]:
    """Whole training processes, alternating; a pair counts if other processes stayed quiet."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_throughput import QUIET_CORES, BackgroundMeter

    common = ["model=cnn_ae", "trainer.max_epochs=1", "trainer.device=cpu", "trainer.progress=false"]
    variants = {"folder (cached)": ["data=folder", f"data.path={folder}", "data.test_size=10000"],
                "built-in": [f"data.root={root}", "data.max_train_samples=50000"]}  # the same split sizes
    env, meter, pairs = {**os.environ, "AERUN_CACHE": str(work / "cache-load")}, BackgroundMeter(), []
    while sum(p["quiet"] for p in pairs) < repeats and len(pairs) < 3 * repeats:
        meter.wait_for_quiet(60)
        pair = {"quiet": True}
        for name, extra in list(variants.items())[::1 if len(pairs) % 2 == 0 else -1]:
            run_dir = work / "runs" / f"{name.split()[0]}-{len(pairs)}"
            meter.start()
            started = time.perf_counter()
            subprocess.run([*AERUN, "train", *common, *extra, f"hydra.run.dir={run_dir}"], env=env, check=True,
                           capture_output=True, cwd=work)
            pair[name] = time.perf_counter() - started
            background = meter.stop()
            pair["quiet"] = pair["quiet"] and (background is None or background < QUIET_CORES)
        pairs.append(pair)
    used = [p for p in pairs if p["quiet"]] or pairs
    medians = {name: statistics.median(p[name] for p in used) for name in variants}
    rows = [(f"`aerun train model=cnn_ae trainer.max_epochs=1`, {name}", f"{medians[name]:.1f} s",
             f"{len(used)} undisturbed of {len(pairs)}: " + ", ".join(f"{p[name]:.1f}" for p in used))
            for name in variants]
    ratio = statistics.median(p["built-in"] / p["folder (cached)"] for p in used)
    rows.append(("process: built-in / folder time, per pair", f"{ratio:.3f}", "goal >= 0.95"))
    return rows


def make_random_npy(path: Path, gigabytes: float) -> int:
    """uint8 [N, 1, 64, 64] random images filling about `gigabytes` (written once)."""
    import numpy as np

    n = int(gigabytes * 1e9) // (64 * 64)
    if path.is_file() and path.stat().st_size >= n * 64 * 64:
        return path.stat().st_size
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.uint8, shape=(n, 1, 64, 64))
    for start in range(0, n, 50_000):
        out[start:start + 50_000] = rng.integers(0, 256, size=out[start:start + 50_000].shape, dtype=np.uint8)
    out.flush()
    del out
    os.replace(path.with_suffix(".tmp.npy"), path)
    return path.stat().st_size


def _watch(command: list[str], env: dict, limit: int, cwd: Path) -> dict:
    """Run `command` under RLIMIT_DATA=limit; its peak /proc status values (MiB), wall time, exit status."""
    def limited():
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    started, peak = time.perf_counter(), {k: 0 for k in STATUS_KEYS}
    proc = subprocess.Popen(command, env=env, cwd=cwd, preexec_fn=limited, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            break
        for key in STATUS_KEYS:
            match = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
            if match:
                peak[key] = max(peak[key], int(match.group(1)) // 1024)
        time.sleep(0.1)
    stderr = proc.communicate()[1]
    return {**peak, "seconds": time.perf_counter() - started, "rc": proc.returncode,
            "last": (stderr.strip().splitlines() or [""])[-1]}


def rss_rows(work: Path, gigabytes: float) -> list[tuple[str, str, str]]:
    import shutil

    npy = work / f"random-{gigabytes:g}GB.npy"
    size = make_random_npy(npy, gigabytes)
    limit = size // 2
    cache = work / "cache-rss"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "AERUN_CACHE": str(cache), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    command = [*AERUN, "train", "data=npz", f"data.path={npy}", "data.val_size=0.01", "data.test_size=5000",
               "model=linear_ae", "trainer.max_epochs=1", "trainer.batch_size=256", "trainer.device=cpu",
               "trainer.progress=false"]
    # the control: the same file read into the process's own memory under the same limit
    control = _watch([sys.executable, "-c", f"import numpy; numpy.load({str(npy)!r}).sum()"], env, limit, work)
    rows = [(f"control: np.load of the same .npy (no memory map) under RLIMIT_DATA {limit / 2**30:.2f} GiB",
             f"exit {control['rc']}", control["last"][:120])]
    for label in ("first run (writes the split file)", "second run (cached)"):
        run_dir = work / "runs" / f"rss-{label.split()[0]}"
        shutil.rmtree(run_dir, ignore_errors=True)
        got = _watch([*command, f"hydra.run.dir={run_dir}"], env, limit, work)
        rows.append((f"train from a {size / 2**30:.2f} GiB .npy under RLIMIT_DATA {limit / 2**30:.2f} GiB, {label}",
                     f"RssAnon {got['RssAnon']} MiB",
                     f"exit {got['rc']} in {got['seconds']:.0f} s; peak VmHWM {got['VmHWM']} MiB = RssAnon + RssFile "
                     f"(RssFile {got['RssFile']} MiB: the map's pages, evictable), VmData {got['VmData']} MiB"
                     + ("" if got["rc"] == 0 else f"; {got['last']}")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="load,throughput,process,rss")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--work", type=Path, default=Path("/tmp/aerun-folder-bench"))
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--rss-gb", type=float, default=3.0, help="size of the random .npy (GB)")
    parser.add_argument("--child-load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_load:
        return child_load(args.child_load)
    rows_wanted = set(args.rows.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    folder = export_png(args.root, args.work / "mnist-png") if rows_wanted - {"rss"} else None
    steps, repeats = (20, 1) if args.quick else (100, 9)
    rows = []
    if "load" in rows_wanted or not (args.work / "cache-load").is_dir():
        rows += load_rows(folder, args.root, args.work) if folder else []
    if "throughput" in rows_wanted:
        rows += throughput_rows(folder, args.root, args.work, steps, repeats)
    if "process" in rows_wanted:
        rows += process_rows(folder, args.root, args.work, 1 if args.quick else 3)
    if "rss" in rows_wanted:
        rows += rss_rows(args.work, args.rss_gb)  # not smaller with --quick: torch alone needs ~0.9 GB VmData
    print(f"\n`python benchmarks/folder_data.py --rows {args.rows}` ({os.cpu_count()} CPU cores, "
          f"load {os.getloadavg()[0]:.2f})\n")
    print("| measurement | value | detail |\n|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
