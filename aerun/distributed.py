"""DistributedDataParallel plumbing for `torchrun -m aerun train trainer.strategy=ddp`.

Every rank holds the whole dataset in memory and takes its slice of each global batch
from the same epoch permutation, so N ranks with batch B/N each step exactly like one
process with batch B. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from aerun.errors import UserError


@dataclass(frozen=True)
class DistContext:
    enabled: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def process_rank() -> int:
    """This process's rank under torchrun (0 otherwise); the CLI needs it before torch loads."""
    return int(os.environ.get("RANK", "0") or 0)


def setup(strategy: str, device_name: str, timeout_s: float = 600.0) -> tuple[DistContext, torch.device | None]:
    """Join the process group for strategy=ddp; (context, the device this rank must use or None).

    A collective that waits longer than `timeout_s` for a peer fails instead of hanging (a peer
    that died is noticed at once: its connections close)."""
    if strategy != "ddp":
        return DistContext(), None
    if not launched_by_torchrun():
        raise UserError("trainer.strategy=ddp: start aerun with torchrun, e.g. "
                        "torchrun --nproc_per_node=2 -m aerun train trainer.strategy=ddp ...")
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise UserError("trainer.device=cuda: no CUDA device is available here; use trainer.device=cpu (gloo)")
    if not dist.is_initialized():
        import datetime

        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return DistContext(True, rank, local_rank, world), device


def teardown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def broadcast_object(ctx: DistContext, value):
    """Rank 0's value on every rank."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank if `flag` is true on any (a stop request, a divergence)."""
    if not ctx.enabled:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def first_bad_step(ctx: DistContext, step: int | None) -> tuple[int, int] | None:
    """(step, rank) of the earliest non-finite step over all ranks, or None when every rank is
    finite; `step` is this rank's first bad step (None if it has none). Every rank calls it."""
    if not ctx.enabled:
        return (step, ctx.rank) if step is not None else None
    import torch.distributed as dist

    never = 2 ** 62
    code = torch.tensor([never if step is None else step * ctx.world_size + ctx.rank], dtype=torch.long)
    if dist.get_backend() == "nccl":
        code = code.cuda()
    dist.all_reduce(code, op=dist.ReduceOp.MIN)
    value = int(code.item())
    return None if value == never else divmod(value, ctx.world_size)


def local_permutation(perm: torch.Tensor, global_batch: int, ctx: DistContext) -> torch.Tensor:
    """This rank's slice of every full global batch: [n] -> [steps * global_batch / world]."""
    if not ctx.enabled:
        return perm
    if global_batch % ctx.world_size:
        raise UserError(f"trainer.batch_size={global_batch} is the global batch and must be divisible by the "
                        f"number of processes ({ctx.world_size})")
    steps = perm.numel() // global_batch
    local = global_batch // ctx.world_size
    # [steps * B] -> [steps, world, B / world] -> this rank's column
    return perm[: steps * global_batch].view(steps, ctx.world_size, local)[:, ctx.rank].reshape(-1)


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def steps_per_epoch(ctx: DistContext, n_train: int, global_batch: int) -> int:
    """DDP drops the last incomplete global batch, so every rank takes equal slices."""
    steps = n_train // global_batch
    if steps == 0:
        raise UserError(f"trainer.batch_size={global_batch} is larger than the training split ({n_train} images)")
    return steps
