"""Where a run executes: device, precision, and the processes of a ``torchrun`` launch.

``torchrun --nproc_per_node=N -m alignlab train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
every process then builds the same model from the same seed (so fixed feedback tensors are
identical without communication), wraps it in ``DistributedDataParallel`` and takes its shard
of each global batch. Gradients — of weights and of learned feedback (KP's B, PFA's R) — are
all-reduced by DDP, so the ranks never drift. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class CollectiveTimeout(RuntimeError):
    """A process waited too long for the others (one stopped, or they disagree on what comes next)."""


@dataclass
class Placement:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    rank: int = 0
    world: int = 1
    timeout: float = 300.0  # seconds a collective may wait (torchrun)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """Mixed precision around forward + loss (nothing for fp32)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (a no-op scaler otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def shard(self, x: torch.Tensor, y: torch.Tensor):
        """This rank's part of a global batch, moved to the device."""
        if self.world > 1:
            x, y = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
        nb = self.device.type == "cuda"
        return x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def all_sum(self, *values: float) -> list[float]:
        """Sum numbers over ranks (identity on one process)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


def _is_collective_failure(err: RuntimeError) -> bool:
    text = str(err)
    return isinstance(err, dist.DistError) or any(w in text for w in ("gloo", "NCCL", "Timed out", "timed out"))


@contextlib.contextmanager
def stuck_collectives_named(p: Placement):
    """Under torchrun, turn a collective that timed out or lost its peers into a one-line error
    naming the rank (gloo reports a timeout as a plain RuntimeError)."""
    try:
        yield
    except RuntimeError as err:
        if p.world == 1 or not _is_collective_failure(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CollectiveTimeout(
            f"rank {p.rank} of {p.world}: a collective (gradient all-reduce, buffer broadcast or metric sum) did "
            f"not complete within ddp_timeout={p.timeout:g} s or lost its peers; see the other ranks' errors "
            f"({first[-160:]})") from err


def place(device: str, precision: str, timeout: float = 300.0) -> Placement:
    """The placement of this process; starts the process group under torchrun, whose collectives
    fail after ``timeout`` seconds instead of waiting forever."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Placement(resolve_device(device), precision)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
    return Placement(dev, precision, rank, world, timeout)


def finish(p: Placement) -> None:
    if p.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
