"""The data cache: decoded images as uint8 .npy files in AERUN_CACHE, read back memory-mapped.

A folder of images is decoded once into `<cache>/data/<kind>-<key>.npy`; the key hashes
everything the array depends on (the files' names, sizes and mtimes, the decode options), so
a changed folder gets a new entry and the stale one is never read again. A file is written
under a temporary name and renamed into place (os.replace): a run killed mid-write leaves at
most a `.tmp` file, which nothing reads, and never a half-written cache under the real name.
Files are written with plain sequential writes, not through a writable memory map: a full
disk is then an OSError (one line), where a write fault on a map would kill the process
(SIGBUS). The cache folder may be deleted at any time between runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from aerun.errors import UserError

log = logging.getLogger("aerun.data")

CACHE_ENV = "AERUN_CACHE"
FORMAT = 1  # part of every key: bump it when what a cached array holds changes
CHUNK_BYTES = 64 << 20  # rows copied per write when arranging: bounded memory, large writes


def cache_dir() -> Path:
    """<AERUN_CACHE or ~/.cache/aerun>/data: beside the data, which may be read-only."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aerun").expanduser() / "data"


def key_of(*parts) -> str:
    """A short stable hash of JSON-able parts."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def open_mapped(path: Path) -> np.ndarray:
    """A .npy file memory-mapped read-only: reads come from the file's pages (the page cache,
    which the kernel evicts under pressure, not this process's own memory). Read-only, not
    copy-on-write ("c"): a private writable map is charged to the commit limit and to
    RLIMIT_DATA at its full size, so a file larger than RAM + swap could not be mapped."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def tensor_of(array: np.ndarray):
    """torch.from_numpy of a (possibly read-only, memory-mapped) array, without a copy. torch
    warns that it does not support read-only tensors; nothing in aerun writes into a
    dataset's images (batches are copied out with index_select), so the warning is silenced."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def open_cached(path: Path, n: int) -> np.ndarray | None:
    """The cached uint8 [n, C, H, W] array at `path`, or None if there is none (or it is not one)."""
    if not path.is_file():
        return None
    try:
        array = open_mapped(path)
    except (OSError, ValueError) as e:  # a damaged file: decode again and replace it
        log.warning("ignoring the unreadable cache file %s (%s)", path, e)
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] != n:
        log.warning("ignoring the cache file %s: it holds %s %s, expected %d uint8 images", path, array.dtype,
                    list(array.shape), n)
        return None
    return array


def write_cached(path: Path, shape: tuple[int, ...], rows: Callable[[], Iterable[np.ndarray]]) -> np.ndarray:
    """Write the uint8 array of `shape` whose rows (in order, any number per chunk) `rows()`
    yields to `path` atomically; return it memory-mapped. Nothing is left at `path` if `rows`
    raises (a corrupt image) or the disk fills."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    expected = int(np.prod(shape))
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
            written = 0
            for chunk in rows():
                chunk = np.ascontiguousarray(chunk, dtype=np.uint8)
                f.write(memoryview(chunk).cast("B"))
                written += chunk.size
            if written != expected:
                raise RuntimeError(f"cache writer produced {written} bytes, expected {expected}")
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UserError(f"cannot write the data cache {path.parent}: {e.strerror or e}; free space there or "
                            f"set {CACHE_ENV} to another folder") from None
        raise
    return open_mapped(path)


def reuse_freed_heap() -> None:
    """Fix glibc's malloc thresholds at their dynamic maxima (mmap 32 MiB, trim 64 MiB), once.

    glibc serves a large allocation with a fresh mmap and raises that threshold only after such
    a block is freed. The built-in readers free large buffers (decompressed IDX bytes) while
    loading, which leaves the thresholds high, so the training step's temporaries are reused
    from the heap. A memory-mapped dataset frees nothing, so every step mmaps, zero-fills and
    unmaps its temporaries again: ~470,000 page faults and 12-20% of a CNN epoch on the CPU
    (benchmarks/folder_data.py). Setting them here gives this path the same heap the built-in
    one ends up with. (A process-wide setting: it belongs where aerun starts a CPU run.)"""
    global _HEAP_SET
    if _HEAP_SET:
        return
    _HEAP_SET = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its own allocator's policy stands
        pass


_HEAP_SET = False


def cache_path(kind: str, key: str) -> Path:
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the data cache folder {cache_dir()}: {e.strerror or e}; "
                        f"set {CACHE_ENV} to a writable folder") from None
    return folder / f"{kind}-{key}.npy"


def arrange(pieces: list[tuple[np.ndarray, str, np.ndarray]]) -> list[np.ndarray]:
    """Rows `idx` of each memory-mapped `images` (identified by its cache `key`), one piece after
    another in one cached file; returns a memory-mapped view per piece.

    A split of a memory-mapped dataset (train without its validation images, one class) is a
    set of rows, and indexing a tensor with them would copy them into memory. Written once per
    choice of rows (a seed, a split size, a class filter) and read memory-mapped after that."""
    key = key_of("arranged", [(k, hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64)).hexdigest())
                              for _, k, idx in pieces])
    shape_chw = pieces[0][0].shape[1:]
    sizes = [len(idx) for _, _, idx in pieces]
    path = cache_path("split", key)
    arranged = open_cached(path, sum(sizes))
    if arranged is None:
        log.info("arranging %d images of a memory-mapped dataset into %s (once per split)", sum(sizes), path)
        row_bytes = max(1, int(np.prod(shape_chw)))
        step = max(1, CHUNK_BYTES // row_bytes)

        def rows():
            for images, _, idx in pieces:
                for start in range(0, len(idx), step):
                    yield images[idx[start:start + step]]  # sorted rows: the file is read front to back

        arranged = write_cached(path, (sum(sizes), *shape_chw), rows)
    ends = np.cumsum([0, *sizes])
    return [arranged[a:b] for a, b in zip(ends[:-1], ends[1:])]
