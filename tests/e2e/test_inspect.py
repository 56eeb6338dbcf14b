"""sauron_inspect on a briefly pruned model: per-layer 4D maps on the input's grid, montages, clusters.json."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from sauronnet import cli
from sauronnet.inspection.feature_maps import capture_layers, inspect_case, to_input_grid


@pytest.fixture(scope="module")
def case(pruned_model):
    paths, trainer = pruned_model
    image = sorted((paths.raw / "Dataset001_Demo" / "imagesTs").glob("*.nii.gz"))[0]
    return trainer.output_dir.parent, image, trainer


def test_writes_every_layer_on_the_input_grid(case, tmp_path):
    model_dir, image, trainer = case
    out = tmp_path / "inspect"
    assert cli.inspect_main([str(model_dir), "-i", str(image), "-o", str(out), "--no-progress"]) == 0
    widths = trainer.network.widths()
    ref = sitk.ReadImage(str(image))
    for name, width in widths.items():
        img = sitk.ReadImage(str(out / f"{name}.nii.gz"))
        assert img.GetDimension() == 4 and img.GetSize() == (*ref.GetSize(), width)
        assert np.allclose(img.GetSpacing()[:3], ref.GetSpacing()) and np.allclose(img.GetOrigin()[:3], ref.GetOrigin())
        assert np.allclose(np.array(img.GetDirection()).reshape(4, 4)[:3, :3],
                           np.array(ref.GetDirection()).reshape(3, 3))
        assert (out / f"{name}.png").stat().st_size > 0
    result = json.loads((out / "clusters.json").read_text())
    assert list(result["layers"]) == list(widths)
    for name, m in result["layers"].items():
        assert m["channels"] == widths[name] and 1 <= m["clusters"] <= m["channels"]
        assert len(m["labels"]) == widths[name]
    assert result["summary"]["layers"] == sum(w > 1 for w in widths.values())
    # refuses to write into a folder that holds files, unless told to
    assert cli.inspect_main([str(model_dir), "-i", str(image), "-o", str(out), "--no-progress"]) == 1
    assert cli.inspect_main([str(model_dir), "-i", str(image), "-o", str(out), "--no-progress", "--layers",
                             "enc0.0", "--overwrite"]) == 0


def test_maps_are_the_networks_own_outputs(case):
    """The captured maps equal a plain forward pass on the preprocessed case, and survive the trip to the grid."""
    model_dir, image, trainer = case
    insp = inspect_case(model_dir, [image], layers=["enc0.0", "up0"])
    assert list(insp.layers) == ["enc0.0", "up0"]
    assert insp.strides["enc0.0"] == (1, 1, 1) and all(s > 1 for s in insp.strides["up0"][1:])
    full = to_input_grid(insp, "enc0.0")
    assert full.shape == (trainer.network.widths()["enc0.0"], *sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape)
    # the centred patch of a volume larger than max_voxels is what gets inspected
    small = inspect_case(model_dir, [image], layers=["enc0.0"], max_voxels=10)
    assert all(r.stop - r.start <= p for r, p in zip(small.region, insp.config.patch_size))
    assert small.layers["enc0.0"].shape[1:] == tuple(r.stop - r.start for r in small.region)


def test_padding_does_not_leak_into_the_maps(case):
    """capture_layers pads to a multiple of the total stride; the kept part covers exactly the input."""
    import torch
    model_dir, image, trainer = case
    net = trainer.network
    data = np.random.default_rng(0).standard_normal((1, 9, 13, 11)).astype(np.float32)
    maps, strides = capture_layers(net, data, ["enc0.0", "enc1.0"])
    assert maps["enc0.0"].shape[1:] == (9, 13, 11)
    assert maps["enc1.0"].shape[1:] == tuple(-(-s // st) for s, st in zip((9, 13, 11), strides["enc1.0"]))
    assert torch.is_grad_enabled()


def test_clear_errors(case, tmp_path):
    model_dir, image, _ = case
    assert cli.inspect_main([str(model_dir), "-i", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o")]) == 1
    assert cli.inspect_main([str(model_dir), "-i", str(image), "-o", str(tmp_path / "o"), "--layers", "enc9.9"]) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
