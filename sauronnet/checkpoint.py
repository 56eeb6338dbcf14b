"""Checkpoint files: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain containers and tensors: ``format``, ``trainer``, ``plans`` (JSON-like),
``configuration``, ``fold``, ``widths`` (per prunable layer), ``state_dict``, ``optimizer``, ``grad_scaler``,
``trainer_config``, ``epoch``, ``ema_dice``, ``best_ema``, ``history``, ``rng`` and trainer ``extras``. The
widths and plans inside are enough to rebuild the (possibly pruned) network. Checkpoints written by
``sauron_import_nnunet`` hold no optimizer or trainer state but two inference settings the predictor honours:
``mirror_axes`` (the axes nnU-Net's trainer allows for mirroring TTA) and ``score_space: "logits"`` (ensemble
and resample logits, nnU-Net v2's order).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from sauronnet.atomic import atomic_path
from sauronnet.networks.unet import UNet, build_network
from sauronnet.plans import Plans
from sauronnet.serialization import from_jsonable, to_jsonable

CHECKPOINT_FORMAT = 1


def make_checkpoint(trainer: str, plans: Plans, configuration: str, fold: str, widths: dict[str, int],
                    state_dict: dict, **entries) -> dict:
    """The one place a checkpoint dictionary is assembled: the entries every checkpoint holds (enough to rebuild
    the network) plus the writer's own ``entries`` (see the module docstring for both kinds)."""
    return {"format": CHECKPOINT_FORMAT, "trainer": trainer, "plans": to_jsonable(plans),
            "configuration": configuration, "fold": fold, "widths": dict(widths), "state_dict": state_dict,
            **entries}


def save_checkpoint(payload: dict, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``: a kill leaves the old file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def safe_torch_load(path: Path, map_location: str | torch.device = "cpu"):
    """``torch.load(weights_only=True)`` (never runs code a file carries) with errors that say what is wrong.

    Raises:
        ValueError: a truncated or damaged file, or one that holds more than tensors and plain containers.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: holds objects other than tensors and plain containers, which SauronNet never "
                         "unpickles (they could run code); use a checkpoint written by SauronNet or nnU-Net") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: cannot be read as a checkpoint ({str(e).splitlines()[0][:100]}); it is damaged "
                         "or was cut while being written or copied: copy it again, or train again") from e


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Loads a checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (train the fold, or pick another --checkpoint)")
    ckpt = safe_torch_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a SauronNet checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def network_from_checkpoint(ckpt: dict, deep_supervision: bool = False) -> tuple[UNet, Plans, str]:
    """Rebuilds the network of a checkpoint from the checkpoint alone: (network, plans, configuration)."""
    plans = from_jsonable(Plans, ckpt["plans"], where="checkpoint plans")
    cfg = plans.configuration(ckpt["configuration"])
    net = build_network(cfg.network, len(plans.channel_names), plans.num_classes, ckpt["widths"], deep_supervision)
    net.load_state_dict(ckpt["state_dict"])
    return net, plans, ckpt["configuration"]
