"""Trainers: policies for training a network on preprocessed data.

``TRAINERS`` maps a name (``-tr NAME``) to a trainer class; add a variant by adding an entry.
"""
from __future__ import annotations

from trainers.base import Trainer, TrainerConfig
from trainers.sauron import SauronConfig, SauronTrainer

#: the first entry is the default of ``sauron_train``
TRAINERS = {SauronTrainer.name: SauronTrainer, Trainer.name: Trainer}

__all__ = ["TRAINERS", "Trainer", "TrainerConfig", "SauronTrainer", "SauronConfig"]
