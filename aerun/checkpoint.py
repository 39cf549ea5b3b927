"""Checkpoints: written atomically, loaded with `weights_only=True` only.

A checkpoint rebuilds its run on its own: model, optimizer, scheduler and grad-scaler
states, the position in training, every RNG state, and the resolved config as plain
Python (no DictConfig, no pickled classes), so a weights-only load can read it.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from aerun import __version__
from aerun.errors import UserError
from aerun.io import write_bytes

FORMAT = "aerun-checkpoint-v2"  # v2: `optimizers` / `schedulers` by name (v1: one `optimizer`, `scheduler`)
READABLE_FORMATS = ("aerun-checkpoint-v1", FORMAT)


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Serialise in memory, then write atomically: a full disk is an OSError of an ordinary
    write (torch.save's own writer turns it into an opaque RuntimeError), and the old file stays."""
    state = dict(state, format=FORMAT, aerun_version=__version__, torch_version=str(torch.__version__))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getbuffer(), point="checkpoint")


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by aerun; one-line UserError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes); it was not written by a finished save")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive; older torch versions a pickle (protocol 2+ starts with 0x80).
    if not head.startswith(b"PK\x03\x04") and not head.startswith(b"\x80"):
        raise UserError(f"{path} is not a checkpoint file ({_describe(head)}, not a file torch.save writes); "
                        f"pass a run directory written by 'aerun train' or its best.pt / last.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc) or "Unsupported" in str(exc):
            raise UserError(f"refusing to load {path}: it holds Python objects other than tensors and plain "
                            f"data (a pickle that could run code); only aerun checkpoints are accepted") from None
        raise UserError(f"checkpoint {path} is corrupt: {first}") from None
    except Exception as exc:  # noqa: BLE001 - any other failure to parse is a broken file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is truncated or corrupt ({first})") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS or "model" not in state:
        raise UserError(f"{path} is not an aerun checkpoint (no '{FORMAT}' marker); "
                        f"pass a run directory written by 'aerun train'")
    return state


def _describe(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it looks like JSON"
    try:
        head.decode("utf-8")
        return "it looks like text"
    except UnicodeDecodeError:
        return f"it starts with bytes {head!r}"


# ----------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's GPU only: a resume may see another number of GPUs (one state per visible
        # GPU, restored by index, fails with an IndexError on a machine with fewer).
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(_plain_to_python_state(state["python"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # checkpoints before 2026-12: one state per visible GPU
            index = torch.cuda.current_device()
            cuda = cuda[index] if index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def _python_state_to_plain(state):
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _plain_to_python_state(plain):
    return plain["version"], tuple(plain["internal"]), plain["gauss"]


# ----------------------------------------------------------------------------- a run's checkpoints
class RunCheckpoints:
    """`last.pt` and `best.pt` of a run directory, as the training loop saves them: the train
    state plus what rebuilds the run on its own (config, input shape, RNG states). Only the
    process that owns the directory (DDP rank 0) writes."""

    def __init__(self, paths: dict[str, Path], config: dict, input_shape, params: int, writes: bool = True,
                 classes: list[str] | None = None):
        self.paths = paths  # role ("last", "best") -> file
        self.config, self.input_shape, self.params, self.writes = config, list(input_shape), params, writes
        self.classes = list(classes or [])  # the dataset's: a conditional model is rebuilt with their number

    @property
    def last_exists(self) -> bool:
        return self.paths["last"].is_file()

    def save(self, state, role: str) -> None:
        if not self.writes:
            return
        save_checkpoint(self.paths[role], dict(state.state_dict(), config=self.config, input_shape=self.input_shape,
                                               params=self.params, num_classes=len(self.classes),
                                               classes=self.classes,
                                               rng=capture_rng_state()))

    def describe_last(self) -> str:
        return (f"{self.paths['last']} keeps the last good weights" if self.last_exists
                else "no checkpoint had been written yet")
