import numpy as np
import pytest
from batchgenerators.transforms.abstract_transforms import Compose

from sauronnet.data.augmentation import augmentation_plan, enlarged_patch_size, training_transforms


def test_augmentation_plan_rules():
    assert augmentation_plan((64, 80, 64)).dummy_2d is False
    assert augmentation_plan((64, 80, 64)).rotation[0] == pytest.approx((-np.pi / 6, np.pi / 6))
    aniso = augmentation_plan((8, 64, 80))  # 80 / 8 > 3: slice-wise augmentation
    assert aniso.dummy_2d and aniso.rotation[1] == (0.0, 0.0)
    assert augmentation_plan((64, 64)).mirror_axes == (0, 1)


def test_enlarged_patch_covers_rotation_and_scaling():
    big = enlarged_patch_size((32, 40, 40), augmentation_plan((32, 40, 40)))
    assert all(b > p for b, p in zip(big, (32, 40, 40)))
    aniso = enlarged_patch_size((8, 64, 80), augmentation_plan((8, 64, 80)))
    assert aniso[0] == 8 and aniso[1] > 64


@pytest.mark.parametrize("patch", [(16, 24, 24), (6, 24, 32)])
def test_spatial_transforms_keep_image_and_label_aligned(patch):
    aug = augmentation_plan(patch)
    sample = enlarged_patch_size(patch, aug)
    seg = np.zeros((4, 1, *sample), np.float32)
    z, y, x = [s // 2 for s in sample]
    seg[:, :, z - 2:z + 3, y - 6:y + 4, x - 3:x + 7] = 1
    seg[:, :, z - 1:z + 2, y - 2:y + 2, x:x + 5] = 2
    # spatial part only (the intensity transforms would change the "label-shaped image" on purpose)
    pipeline = training_transforms(patch, aug)
    spatial = Compose([t for t in pipeline.transforms if "Spatial" in type(t).__name__ or "Mirror" in type(t).__name__
                       or type(t).__name__ in ("_To2D", "_To3D", "RemoveLabelTransform")])
    agree = []
    for seed in range(6):
        np.random.seed(seed)
        out = spatial(data=seg.copy(), seg=seg.copy())
        assert out["data"].shape == (4, 1, *patch) and out["seg"].shape == (4, 1, *patch)
        agree.append(np.mean(np.round(out["data"]) == out["seg"]))
    assert min(agree) > 0.99
