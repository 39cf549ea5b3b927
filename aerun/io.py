"""Atomic file writes: every file aerun writes goes to a temp file, then os.replace,
so a reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temp path beside `path`; on success it replaces `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


GRID_TARGET_WIDTH = 1200  # px: a grid of 28-px digits is upscaled to about this width, at most 4x


def grid_scale(width: int) -> int:
    """The whole-number upscale that brings a grid `width` px wide near GRID_TARGET_WIDTH (1..4)."""
    return min(4, max(1, GRID_TARGET_WIDTH // max(1, width)))


def save_image_grid(tensor, path, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> None:
    """A torchvision image grid, written atomically as PNG; small grids (MNIST's 28-px tiles)
    are upscaled by a whole number with nearest-neighbour pixels, so they are readable when
    opened as they are. The exact values stay in the .npy/.npz files written beside them."""
    from torchvision.utils import make_grid, save_image

    grid = make_grid(tensor.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)
    scale = grid_scale(grid.shape[-1])
    grid = grid.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)  # [C, H*s, W*s]
    with atomic_path(path, suffix=".png") as tmp:
        save_image(grid, str(tmp), format="png")
