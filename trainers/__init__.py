"""Trainers: policies for training a network on preprocessed data.

``TRAINERS`` maps a name (``-tr NAME``) to a trainer class; add a variant by adding an entry. Pruning methods
are small subclasses of :class:`trainers.pruning.PruningTrainer`; the baselines Sauron is compared with live in
:mod:`trainers.baselines` and :mod:`trainers.csgd`.
"""
from __future__ import annotations

from trainers.base import Trainer, TrainerConfig
from trainers.baselines import FPGMTrainer, L1Trainer, RandomTrainer, ScratchTrainer, UniformTrainer
from trainers.csgd import CSGDTrainer
from trainers.pruning import MatchConfig, PruningTrainer
from trainers.sauron import SauronConfig, SauronTrainer

#: the first entry is the default of ``sauron_train``
TRAINERS = {cls.name: cls for cls in (SauronTrainer, Trainer, L1Trainer, FPGMTrainer, CSGDTrainer, RandomTrainer,
                                      ScratchTrainer, UniformTrainer)}

__all__ = ["TRAINERS", "Trainer", "TrainerConfig", "PruningTrainer", "MatchConfig", "SauronTrainer",
           "SauronConfig"]
