"""sauronnet.distributed: the batch split, torchrun's environment, fingerprints, and (in two spawned gloo
processes) the loss weighting and the divergence check."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sauronnet.distributed import (World, batch_positions, leave, lost_peer, object_fingerprint,
                                   tensors_fingerprint, world_from_env)
from sauronnet.losses import DeepSupervisionLoss


@pytest.mark.parametrize("batch, size, expected", [
    (2, 1, [[0, 1]]),
    (2, 2, [[0], [1]]),
    (3, 2, [[0, 1], [2]]),            # nnU-Net: the first B mod W ranks take one more
    (5, 3, [[0, 1], [2, 3], [4]]),
    (8, 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),
])
def test_batch_positions_split_the_global_batch_like_nnunet(batch, size, expected):
    got = [list(batch_positions(batch, size, r)) for r in range(size)]
    assert got == expected
    shares = [World(r, size).with_batch(batch).share for r in range(size)]
    assert sum(shares) == pytest.approx(size)  # DDP's average of the weighted means is the global mean


def test_a_batch_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match="batch size 2 cannot be split across 3 processes"):
        batch_positions(2, 3, 0)


def test_world_from_torchrun_environment():
    assert world_from_env({}) == World()
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node0",
           "MASTER_PORT": "29500"}
    w = world_from_env(env)
    assert (w.rank, w.size, w.local_rank, w.local_size, w.is_main, w.distributed) == (3, 4, 1, 2, False, True)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        world_from_env({k: v for k, v in env.items() if k != "MASTER_ADDR"})
    with pytest.raises(ValueError, match="incomplete torchrun environment"):
        world_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="outside a world"):
        world_from_env(dict(env, RANK="4"))


def test_fingerprints_see_a_single_bit():
    a = [torch.randn(5, 3, dtype=torch.float64), torch.randn(7)]
    b = [t.clone() for t in a]
    assert tensors_fingerprint(a) == tensors_fingerprint(b)
    b[1].view(torch.int32)[4] ^= 1  # the last bit of one float32
    assert tensors_fingerprint(a) != tensors_fingerprint(b)
    assert tensors_fingerprint(a) != tensors_fingerprint(a[::-1])
    assert object_fingerprint({"x": 0.1, "y": [1, 2]}) == object_fingerprint({"y": [1, 2], "x": 0.1})
    assert object_fingerprint({"x": 0.1}) != object_fingerprint({"x": math.nextafter(0.1, 1)})


def test_lost_peer_recognises_backend_failures_only():
    assert lost_peer(RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"))
    assert lost_peer(dist.DistBackendError("NCCL watchdog"))
    assert not lost_peer(RuntimeError("Input type (float) and bias type (double) should be the same"))


def _two_ranks(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        logits = torch.randn(3, 3, 4, 4, 4, dtype=torch.float64)
        target = torch.randint(0, 3, (3, 1, 4, 4, 4)).double()
        world = World(rank, 2).with_batch(3)
        for batch_dice in (True, False):
            loss_fn = DeepSupervisionLoss(1, batch_dice)
            whole = logits.clone().requires_grad_()
            loss_fn(whole, target).backward()
            local = logits[list(world.positions)].clone().requires_grad_()
            loss = loss_fn(local, target[list(world.positions)], world)
            loss.backward()
            grad = torch.zeros_like(logits)
            grad[list(world.positions)] = local.grad / world.size  # DDP averages the ranks' gradients
            dist.all_reduce(grad)
            assert torch.allclose(grad, whole.grad, rtol=0, atol=1e-14), (batch_dice, (grad - whole.grad).abs().max())
            assert abs(world.mean(float(loss)) - float(loss_fn(logits, target))) < 1e-14
        scores = torch.rand(3, 5, dtype=torch.float64)  # per-sample scores of a global batch of 3, split 2 + 1
        assert torch.allclose(world.sample_mean(scores[list(world.positions)].mean(0)), scores.mean(0), atol=1e-15)
        assert world.broadcast({"from": rank}) == {"from": 0}
        world.check_identical({"same": 7}, "in a test")
        with pytest.raises(RuntimeError, match=r"diverged in a test: weights differ between ranks"):
            world.check_identical({"same": 7, "weights": rank}, "in a test")
        dist.barrier()  # neither rank tears down its connections while the other still uses them
    except BaseException:
        dist.destroy_process_group()
        raise  # a failed check is reported by mp.spawn
    leave(0)  # every check passed: exit without gloo's teardown (see sauronnet.distributed.leave)


def test_two_processes_compute_the_global_batch_loss_and_catch_divergence():
    """Global batch 3 split 2 + 1: the share-weighted loss (CE, per-sample Dice) and the all-reduced batch Dice
    give, after DDP's averaging, exactly the gradient of the whole batch's loss in one process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_two_ranks, args=(port,), nprocs=2, join=True)


def test_leave_exits_with_the_code_after_flushing_and_skips_the_interpreter_teardown(tmp_path):
    # what a finished rank prints and logs must reach torchrun's pipes; the exit skips the teardown in which
    # gloo's threads abort (an atexit handler stands for it here)
    import subprocess
    import sys
    script = ("import atexit, logging, sys\n"
              "from sauronnet.distributed import leave\n"
              "logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
              "atexit.register(lambda: print('teardown ran', flush=True))\n"
              "print('epoch done', end='')\n"
              "logging.getLogger('x').info('checkpoint written')\n"
              "leave(3)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout == "epoch done"
    assert "checkpoint written" in done.stderr
