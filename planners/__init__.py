"""Planners: policies that turn a dataset fingerprint into :class:`sauronnet.plans.Plans`.

``PLANNERS`` maps a preset name (``--preset``) to its planner class; add a preset by adding an entry.
"""
from __future__ import annotations

from planners.cpu import CpuPlanner
from planners.nnunet import NnUNetPlanner

PLANNERS = {
    NnUNetPlanner.preset: NnUNetPlanner,
    CpuPlanner.preset: CpuPlanner,
}

__all__ = ["PLANNERS", "NnUNetPlanner", "CpuPlanner"]
