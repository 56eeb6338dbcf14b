"""Test helper, launched by ``tests/e2e/test_distributed.py`` through torchrun (or plain python for the
one-process reference): trains the small demo through the trainer API, with the plans' batch settings and the
trainer config given in a JSON spec, and saves after every epoch the state that every rank must agree on
(widths, weights, optimizer state, schedule state) to ``DUMP/rank{R}/epoch{E}.pt``.

``python distributed_worker.py SPEC.json [--continue] [--snapshot-after-epoch E]``: the snapshot is a copy of
``checkpoint_latest.pth`` as it stood after epoch E (``DUMP/snapshot.pth``), to resume from elsewhere.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

from sauronnet import distributed
from sauronnet.paths import Paths
from sauronnet.plans import Plans
from trainers import TRAINERS


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    resume = "--continue" in argv
    snapshot_after = int(argv[argv.index("--snapshot-after-epoch") + 1]) if "--snapshot-after-epoch" in argv else None
    torch.set_num_threads(1)
    world = distributed.world_from_env(os.environ)
    device = distributed.start(world, "cpu", timeout_s=120)
    paths = Paths(*(Path(p) for p in spec["paths"]))
    plans = Plans.load(paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    cfg = replace(plans.configuration("3d_fullres"), **spec["plan"])
    plans = replace(plans, configurations={**plans.configurations, "3d_fullres": cfg})
    cls = TRAINERS[spec["trainer"]]
    trainer = cls(plans, "3d_fullres", "0", paths, cls.config_class(**spec["config"]), device, world)
    dump = Path(spec["dump"]) / f"rank{world.rank}"
    dump.mkdir(parents=True, exist_ok=True)
    epoch_end = trainer.on_epoch_end

    def epoch_end_then_dump(epoch: int, metrics: dict) -> None:
        epoch_end(epoch, metrics)  # the epoch's pruning, if any, is done
        torch.save({"widths": trainer.network.widths(), "weights": trainer.network.state_dict(),
                    "optimizer": trainer.optimizer.state_dict()["state"], "extras": trainer.checkpoint_extras(),
                    "train_loss": metrics["train_loss"]}, dump / f"epoch{epoch}.pt")

    save = trainer.save

    def save_then_snapshot(name: str):
        path = save(name)
        if name == "latest" and world.is_main and snapshot_after is not None and trainer.epoch == snapshot_after + 1:
            shutil.copyfile(path, Path(spec["dump"]) / "snapshot.pth")
        return path

    trainer.on_epoch_end = epoch_end_then_dump
    trainer.save = save_then_snapshot
    trainer.fit(resume=resume, progress=False)
    if world.distributed:
        distributed.leave(0)
    distributed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
