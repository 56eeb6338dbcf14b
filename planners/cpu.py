"""The ``cpu`` preset: nnU-Net's spacing and topology rules with a compute budget instead of a GPU-memory one.

Sauron's users deploy on CPUs, and a 2-core workstation trains nnU-Net's default 3D network at ~18 s per step.
This preset starts from narrower stages (8·2^i, capped at 128 channels in 3D / 256 in 2D) and shrinks the patch —
along the same axis nnU-Net would shrink — until one training forward pass of a minimum-size batch costs at
most :data:`TARGET_FORWARD_GFLOPS`; leftover budget goes into a larger batch (still ≤ 5 % of the dataset).
The estimate is stored in the plans (``estimated_forward_gflops``).
"""
from __future__ import annotations

from typing import Sequence

from planners.nnunet import NnUNetPlanner, PlannerSettings
from sauronnet.networks.estimates import forward_flops
from sauronnet.plans import NetworkPlan

#: FLOPs of one training forward pass (whole batch, deep-supervision heads included): ~1 s per training step
#: (forward + backward) on 2 CPU cores.
TARGET_FORWARD_GFLOPS = 4.0

CPU_SETTINGS = PlannerSettings(base_features=8, max_features_3d=128, max_features_2d=256)


class CpuPlanner(NnUNetPlanner):
    """Same spacing/topology as :class:`NnUNetPlanner`; patch and batch sized by forward FLOPs."""

    preset = "cpu"

    def __init__(self, settings: PlannerSettings | None = None, target_gflops: float = TARGET_FORWARD_GFLOPS):
        super().__init__(settings or CPU_SETTINGS)
        self.target_gflops = target_gflops

    def _gflops(self, net: NetworkPlan, patch: Sequence[int], n_in: int, n_classes: int, batch: int) -> float:
        return forward_flops(net, patch, n_in, n_classes, batch_size=batch) / 1e9

    def too_large(self, net: NetworkPlan, patch: Sequence[int], n_in: int, n_classes: int) -> bool:
        return self._gflops(net, patch, n_in, n_classes, self.settings.min_batch_size) > self.target_gflops

    def batch_size(self, net: NetworkPlan, patch: Sequence[int], n_in: int, n_classes: int,
                   n_voxels_dataset: float) -> int:
        per_sample = self._gflops(net, patch, n_in, n_classes, 1)
        return self._cap_batch(int(self.target_gflops // per_sample), patch, n_voxels_dataset)
