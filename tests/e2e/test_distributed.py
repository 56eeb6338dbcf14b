"""Distributed training (torchrun + gloo, 2 CPU processes) on the small demo: the same training as one process
with the global batch, identical pruning on every rank, a killed rank, --continue, and two launchers as two
nodes.

Equivalence runs train in float64 without augmentation through ``distributed_worker.py``, which saves each rank's
state after every epoch; the command-line runs use ``python -m torch.distributed.run`` (torchrun).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sauronnet.checkpoint import load_checkpoint
from sauronnet.networks.unet import default_widths
from sauronnet.plans import Plans
from tests.conftest import env_of
from tests.e2e import distributed_worker

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]
#: a run whose rank was killed must stop within this many seconds (gloo notices the closed connection at once)
STOP_TIMEOUT_S = 60


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(paths=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if paths is not None:
        env.update(env_of(paths))
    return env


def _torchrun(nproc: int, *args: str, port: int | None = None, launcher: tuple[str, ...] = ()) -> list[str]:
    rdzv = launcher or ("--master_port", str(port or _port()))
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), *rdzv, *args]


def _train(spec: dict, tmp: Path, name: str, nproc: int, *extra: str) -> Path:
    """Runs the worker on ``nproc`` processes (1: in this process, without torchrun); returns its dump folder."""
    spec = dict(spec, dump=str(tmp / name))
    spec_file = tmp / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    if nproc == 1:  # no torchrun variables here: one process, and no second of imports
        threads = torch.get_num_threads()
        try:
            assert distributed_worker.main([str(spec_file), *extra]) == 0
        finally:
            torch.set_num_threads(threads)
    else:
        done = subprocess.run(_torchrun(nproc, str(WORKER), str(spec_file), *extra), env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return tmp / name


def _state(dump: Path, rank: int, epoch: int) -> dict:
    return torch.load(dump / f"rank{rank}" / f"epoch{epoch}.pt", weights_only=False)


def _flat(state: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a saved state, by a readable key."""
    out = {f"weights {k}": v for k, v in state["weights"].items()}
    for i, s in state["optimizer"].items():
        out.update({f"optimizer {i} {k}": v for k, v in s.items() if isinstance(v, torch.Tensor) and v.ndim})
    return out


def _assert_same(a: dict, b: dict, atol: float, what: str) -> None:
    assert a["widths"] == b["widths"], what
    assert a["extras"] == b["extras"], what
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys(), what
    for k in fa:
        diff = (fa[k] - fb[k]).abs().max().item() if fa[k].numel() else 0.0
        assert fa[k].dtype == torch.float64 and diff <= atol, f"{what}: {k} differs by {diff}"
    assert abs(a["train_loss"] - b["train_loss"]) <= atol, what


def _spec(paths, trainer: str, plan: dict, config: dict) -> dict:
    return {"paths": [str(paths.raw), str(paths.preprocessed), str(paths.results)], "trainer": trainer,
            "plan": plan, "config": dict(config, precision="fp64", augmentation=False, num_workers=0, seed=3)}


def test_two_ranks_train_and_prune_exactly_like_one_process_and_resume_on_another_world_size(small_demo_paths,
                                                                                          tmp_path):
    """Sauron with batch Dice and a first threshold that prunes at once; 2 ranks x 1 sample against 1 process x 2
    samples. After every epoch both ranks hold bit-identical widths, weights, momentum and schedule state, equal to
    the one process's to 1e-10, and channels were removed; the 2-rank run's checkpoint after epoch 1, continued on
    1 process, ends where the 2-rank run ends."""
    spec = _spec(small_demo_paths, "SauronTrainer", {"batch_size": 2, "batch_dice": True, "patch_size": [6, 24, 24]},
                 {"epochs": 3, "iterations_per_epoch": 2, "val_iterations": 1, "tau0": 0.4, "tau_max": 0.7,
                  "kappa": 1, "rho": 1})

    def results(name):
        return dict(spec, paths=spec["paths"][:2] + [str(tmp_path / name)])

    one = _train(results("r1"), tmp_path, "one", 1)
    two = _train(results("r2"), tmp_path, "two", 2, "--snapshot-after-epoch", "1")
    for epoch in range(3):
        _assert_same(_state(two, 0, epoch), _state(two, 1, epoch), 0.0, f"rank 0 vs 1, epoch {epoch}")
        _assert_same(_state(two, 0, epoch), _state(one, 0, epoch), 1e-10, f"2 ranks vs 1 process, epoch {epoch}")
    planned = default_widths(Plans.load(small_demo_paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
                             .configuration("3d_fullres").network)
    remaining = [sum(planned.values())] + [sum(_state(two, 0, e)["widths"].values()) for e in range(3)]
    assert all(a > b for a, b in zip(remaining, remaining[1:])), f"the constants should prune every epoch: {remaining}"

    fold = tmp_path / "r3" / "Dataset001_Demo" / "SauronTrainer__cpu__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    shutil.copyfile(two / "snapshot.pth", fold / "checkpoint_latest.pth")
    assert load_checkpoint(fold / "checkpoint_latest.pth")["epoch"] == 2
    resumed = _train(results("r3"), tmp_path, "resumed", 1, "--continue")
    assert not (resumed / "rank0" / "epoch1.pt").exists()  # it started after the checkpoint's epochs
    _assert_same(_state(resumed, 0, 2), _state(two, 0, 2), 1e-10, "2 ranks, then 1 process vs 2 ranks")


# ---- the command line under torchrun -------------------------------------------------------------------------------
TRAIN = ["-m", "sauronnet.train", "1", "0", "-tr", "Trainer", "--iters", "2", "--val-iters", "1", "--workers", "0",
         "--no-progress"]


def _fold(paths) -> Path:
    return paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres" / "fold_0"


def _rank_pid(run_id: str, rank: int) -> int | None:
    """The pid of the training process of ``rank`` in the torchrun run ``run_id`` (its ``--rdzv_id``)."""
    for proc in Path("/proc").iterdir():
        try:
            env = set((proc / "environ").read_bytes().split(b"\0"))
        except (OSError, ValueError):
            continue
        if {f"TORCHELASTIC_RUN_ID={run_id}".encode(), f"RANK={rank}".encode()} <= env:
            return int(proc.name)
    return None


def _two_nodes(run_id: str, paths, *args: str) -> list[subprocess.Popen]:
    """Two torchrun launchers with one process each, meeting at a loopback rendezvous: two nodes on one machine."""
    launcher = ("--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{_port()}", "--rdzv_id",
                run_id)
    return [subprocess.Popen(_torchrun(1, *TRAIN, *args, launcher=launcher), env=_env(paths), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_two_nodes_train_a_killed_rank_stops_both_and_continue_resumes(results_paths):
    """Multi-node as a user runs it, on one machine (two launchers, ``--nnodes 2``, loopback rendezvous): kill -9
    of rank 1 stops both nodes within STOP_TIMEOUT_S, rank 0 saying what happened and how to resume; the same
    launch with --continue finishes the run."""
    run_id = f"kill-{os.getpid()}"
    launchers = _two_nodes(run_id, results_paths, "--epochs", "4")
    latest = _fold(results_paths) / "checkpoint_latest.pth"
    deadline = time.monotonic() + 180
    while not latest.is_file() and all(p.poll() is None for p in launchers) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = _rank_pid(run_id, 1)
    assert latest.is_file() and pid is not None, "the run did not start: " + "".join(
        p.communicate()[1][-2000:] for p in launchers if p.poll() is not None)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        errors = [p.communicate(timeout=STOP_TIMEOUT_S)[1] for p in launchers]
    finally:
        for p in launchers:
            p.kill()
    assert time.monotonic() - killed < STOP_TIMEOUT_S
    assert all(p.returncode != 0 for p in launchers)
    stderr = "\n".join(errors)
    # the killed rank's launcher names it and its signal; rank 0 says how to resume, unless its own launcher, which
    # loses the rendezvous store when the killed node hosted it, stops it first
    assert "Signal 9 (SIGKILL)" in stderr and "rank      : 1" in stderr, stderr[-3000:]
    stopped_at = load_checkpoint(latest)["epoch"]
    assert 0 < stopped_at < 4

    launchers = _two_nodes(f"continue-{os.getpid()}", results_paths, "--epochs", "4", "--continue")
    outputs = [p.communicate(timeout=300) for p in launchers]
    assert all(p.returncode == 0 for p in launchers), "\n".join(o[1][-2000:] for o in outputs)
    assert sum("validation Dice" in out for out, _ in outputs) == 1  # rank 0 alone reports
    assert any(f"continuing from {latest} at epoch {stopped_at}" in err for _, err in outputs)
    assert load_checkpoint(_fold(results_paths) / "checkpoint_final.pth")["epoch"] == 4
    metrics = [json.loads(line) for line in (_fold(results_paths) / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and all(m["processes"] == 2 for m in metrics)
