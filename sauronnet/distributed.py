"""Several processes training one model (torchrun + torch.distributed): the world, its batch split, and the few
collectives the trainer needs.

A run launched by ``torchrun`` has one process per device; :func:`world_from_env` reads torchrun's variables
(cli.py hands it the process environment) and :func:`start` opens the process group (NCCL on CUDA, gloo on the CPU).
Everything here is a no-op for a single process, so the trainer calls it unconditionally.

How the global batch is shared (:func:`batch_positions`): the plans' batch size is the *global* batch; rank ``r``
takes the contiguous positions nnU-Net gives it (the first ``B mod W`` ranks one sample more). A sample is a
pure function of (seed, epoch, batch index, position in the global batch), and whether it is forced to contain
foreground depends on its global position, so the global batch — and its 33 % foreground rate — is the one a
single process would draw, whatever the number of processes.

How the loss stays the single-process loss: every term that is a mean over samples is weighted by the rank's
share of the global batch (:attr:`World.share`), so DDP's gradient average gives the global mean; batch Dice sums
its statistics over the ranks with a differentiable all-reduce (:meth:`World.sum`), whose backward sums the
gradients the same way.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NoReturn

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: seconds a process waits in a collective for the others before it gives up (rank 0's final validation runs
#: after the last collective, so no rank waits through it)
DEFAULT_TIMEOUT_S = 1800
#: torchrun's variables; WORLD_SIZE > 1 means a distributed run
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def batch_positions(global_batch: int, world_size: int, rank: int) -> range:
    """The positions of the global batch that ``rank`` computes (nnU-Net's split: the first ``B mod W`` ranks
    take one more).

    Raises:
        ValueError: when the global batch has fewer samples than there are processes.
    """
    if global_batch < world_size:
        raise ValueError(f"the plans' batch size {global_batch} cannot be split across {world_size} processes "
                         f"(each needs at least one sample): launch at most {global_batch} processes, or raise "
                         "batch_size in plans.json")
    sizes = [global_batch // world_size + (1 if r < global_batch % world_size else 0) for r in range(world_size)]
    start = sum(sizes[:rank])
    return range(start, start + sizes[rank])


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` of ``local_size`` on its
    node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    #: the global batch size (the plans'); set by :meth:`with_batch`
    global_batch: int = 1
    positions: range = field(default=range(0, 1))

    def __post_init__(self):
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank {self.rank} outside a world of {self.size} processes")

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def with_batch(self, global_batch: int) -> World:
        """This world with its share of a global batch of ``global_batch`` samples."""
        return World(self.rank, self.size, self.local_rank, self.local_size, global_batch,
                     batch_positions(global_batch, self.size, self.rank))

    @property
    def share(self) -> float:
        """Weight of a per-sample mean computed on this rank: (local batch · world size) / global batch, so that
        DDP's average over ranks of the weighted means is the mean over the global batch (1 in one process)."""
        return len(self.positions) * self.size / self.global_batch

    # ---- collectives (identity in one process) ------------------------------------------------------------------
    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, differentiable: its backward sums the gradients over ranks as well."""
        if not self.distributed:
            return t
        from torch.distributed.nn.functional import all_reduce
        return all_reduce(t, op=dist.ReduceOp.SUM)

    def sample_mean(self, local_mean: torch.Tensor) -> torch.Tensor:
        """The global-batch mean of a quantity whose mean over this rank's samples is ``local_mean`` (no grad)."""
        if not self.distributed:
            return local_mean
        t = local_mean.detach().double() * (len(self.positions) / self.global_batch)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.to(local_mean.dtype)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.size

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects; tensors arrive on the CPU)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def check_identical(self, fingerprints: Mapping[str, int], where: str) -> None:
        """Stops the run with a clear error when any fingerprint differs between ranks.

        Args:
            fingerprints: name → int64 fingerprint of state that must be identical on every rank.
            where: when the check runs (for the message), e.g. "after epoch 3".

        Raises:
            RuntimeError: naming what diverged.
        """
        if not self.distributed:
            return
        names = sorted(fingerprints)
        values = torch.tensor([fingerprints[n] for n in names], dtype=torch.int64, device=_collective_device())
        low, high = values.clone(), values.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if diverged := [n for n, lo, hi in zip(names, low.tolist(), high.tolist()) if lo != hi]:
            raise RuntimeError(f"the {self.size} training processes diverged {where}: {', '.join(diverged)} differ "
                               "between ranks, so they would prune or update different networks. This is a bug; "
                               "please report it with training.log. Resume from checkpoint_latest.pth with --continue.")


class DistributedRunError(RuntimeError):
    """A distributed run lost one of its processes (it crashed, was killed, or its node went down) or timed out."""


#: what the backends' messages say when a peer is gone or silent (gloo raises a plain RuntimeError)
_LOST_PEER_MARKERS = ("connection reset", "connection closed", "connection refused", "broken pipe", "timed out",
                      "timeout", "nccl", "gloo", "socket")


def lost_peer(error: BaseException) -> bool:
    """True when ``error`` is a collective that failed because another process is gone or silent."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _LOST_PEER_MARKERS)


def _collective_device() -> torch.device:
    """Where small collective tensors live: the current CUDA device under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world_from_env(env: Mapping[str, str]) -> World:
    """The world torchrun describes in ``env`` (one process when WORLD_SIZE is absent).

    Raises:
        ValueError: for a torchrun environment that is incomplete or inconsistent.
    """
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local, local_size = int(env.get("LOCAL_RANK", rank)), int(env.get("LOCAL_WORLD_SIZE", size))
    except (KeyError, ValueError) as e:
        raise ValueError(f"incomplete torchrun environment ({e}): launch with torchrun, which sets RANK, WORLD_SIZE "
                         "and LOCAL_RANK") from None
    if size < 1:
        raise ValueError(f"WORLD_SIZE={size}: must be at least 1")
    if size > 1 and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise ValueError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set: launch with torchrun")
    return World(rank, size, local, local_size)


def start(world: World, device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Opens the process group of a distributed run and returns this process's device (``cuda:LOCAL_RANK`` on
    CUDA).

    Raises:
        ValueError: when the run asks for more CUDA processes on a node than it has devices.
    """
    if device == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {world.local_rank} has no CUDA device (this node has "
                             f"{torch.cuda.device_count()}): launch at most that many processes per node")
        torch.cuda.set_device(world.local_rank)
        dev = torch.device("cuda", world.local_rank)
    else:
        dev = torch.device(device)
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s), rank=world.rank,
                                world_size=world.size, device_id=dev if dev.type == "cuda" else None)
        logger.info("process group: rank %d of %d (%s), timeout %.0f s", world.rank, world.size,
                    dist.get_backend(), timeout_s)
    return dev


def stop() -> None:
    """Closes the process group, if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """Ends this process of a distributed run with exit status ``code``, without the interpreter's teardown.

    After a finished run, with its process group destroyed, a gloo rank on this CPU now and then aborts in its C++
    teardown at interpreter exit ("terminate called without an active exception", SIGABRT; 1 in ~5 two-rank runs,
    with or without a barrier before the teardown), and torchrun then reports a failed run although every rank
    finished and rank 0 wrote its checkpoint. The process group is closed and the log and output streams flushed
    first; the data loader's processes are already closed by the trainer.
    """
    stop()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


# ---- fingerprints ----------------------------------------------------------------------------------------------
def tensors_fingerprint(tensors: Iterable[torch.Tensor]) -> int:
    """A cheap bitwise fingerprint of tensors (computed on their device): the wrapping sum of their bytes read as
    integers, each tensor weighted by its position, so a change of any bit changes it (almost surely)."""
    total = torch.zeros((), dtype=torch.int64)
    for i, t in enumerate(tensors):
        t = t.detach().contiguous()
        words = t.view(torch.uint8).to(torch.int64) if t.element_size() == 1 else (
            t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).to(torch.int64))
        total = total + (words.sum() * (2 * i + 1)).cpu()
    return int(total)


def object_fingerprint(obj: Any) -> int:
    """An int64 fingerprint of a JSON-able object (exact floats via repr)."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).digest()
    return int(np.frombuffer(digest[:8], dtype=np.int64)[0])
