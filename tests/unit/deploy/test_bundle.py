"""The .sauron bundle: bit-identical round trip, and refusal of anything damaged, altered, unknown or pickled."""
import json
import pickle
import zipfile

import numpy as np
import pytest

from sauronnet.deploy.bundle import FORMAT_VERSION, Bundle, BundleError, BundleFold, read_bundle, write_bundle
from tests.unit.preprocessing.test_preprocess import make_plans


def _bundle(widths=None) -> Bundle:
    rng = np.random.RandomState(0)
    weights = {"encoder.0.0.conv.weight": rng.randn(5, 1, 3, 3, 3).astype(np.float32),
               "encoder.0.0.conv.bias": rng.randn(5).astype(np.float32),
               "heads.0.weight": rng.randn(3, 5, 1, 1, 1).astype(np.float32)}
    fold = BundleFold("0", "SauronTrainer", widths or {"enc0.0": 5, "dec0.1": 2}, weights, b"not really onnx")
    return Bundle(make_plans((1.0, 1.0, 1.0)), "3d_fullres", (fold,), (1,), (1, 2), "probabilities", "final")


def test_round_trip_is_bit_identical(tmp_path):
    b = _bundle()
    size = write_bundle(tmp_path / "m.sauron", b, "test")
    assert size == (tmp_path / "m.sauron").stat().st_size
    back = read_bundle(tmp_path / "m.sauron")
    assert back.plans == b.plans and back.configuration == b.configuration
    assert (back.keep_largest_component, back.mirror_axes, back.score_space) == ((1,), (1, 2), "probabilities")
    f, g = back.folds[0], b.folds[0]
    assert f.widths == g.widths and f.trainer == g.trainer and f.onnx == g.onnx
    assert set(f.weights) == set(g.weights)
    for k in g.weights:
        assert f.weights[k].dtype == g.weights[k].dtype and np.array_equal(f.weights[k], g.weights[k])


def _rewrite(src, dst, edit):
    """Copies the zip ``src`` to ``dst`` with ``edit(name, bytes) -> bytes | None`` (None drops the member)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for name in a.namelist():
            data = edit(name, a.read(name))
            if data is not None:
                b.writestr(name, data)


def test_a_tampered_member_is_refused(tmp_path):
    write_bundle(tmp_path / "m.sauron", _bundle(), "test")

    def flip(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name.endswith(".safetensors") else data
    _rewrite(tmp_path / "m.sauron", tmp_path / "bad.sauron", flip)
    with pytest.raises(BundleError, match="fold_0.safetensors does not match its sha256"):
        read_bundle(tmp_path / "bad.sauron")


def test_an_unknown_format_version_is_refused(tmp_path):
    write_bundle(tmp_path / "m.sauron", _bundle(), "test")

    def bump(name, data):
        if name != "manifest.json":
            return data
        m = json.loads(data)
        m["format_version"] = FORMAT_VERSION + 1
        return json.dumps(m).encode()
    _rewrite(tmp_path / "m.sauron", tmp_path / "new.sauron", bump)
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}"):
        read_bundle(tmp_path / "new.sauron")


def test_missing_and_unlisted_members_are_refused(tmp_path):
    write_bundle(tmp_path / "m.sauron", _bundle(), "test")
    _rewrite(tmp_path / "m.sauron", tmp_path / "cut.sauron", lambda n, d: None if n == "model.json" else d)
    with pytest.raises(BundleError, match="model.json listed in the manifest is missing"):
        read_bundle(tmp_path / "cut.sauron")
    _rewrite(tmp_path / "m.sauron", tmp_path / "extra.sauron", lambda n, d: d)
    with zipfile.ZipFile(tmp_path / "extra.sauron", "a") as z:
        z.writestr("payload.pkl", b"x")
    with pytest.raises(BundleError, match=r"not in the manifest: \['payload.pkl'\]"):
        read_bundle(tmp_path / "extra.sauron")


class _Canary:
    """Unpickling this writes a file: the proof that a pickle was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_is_never_executed(tmp_path):
    canary = tmp_path / "executed"
    evil = tmp_path / "model.sauron"
    evil.write_bytes(pickle.dumps(_Canary(str(canary))))
    with pytest.raises(BundleError, match="not a SauronNet bundle"):
        read_bundle(evil)
    # inside a well-formed archive, a pickled member listed in the manifest is still only bytes
    write_bundle(tmp_path / "m.sauron", _bundle(), "test")

    def poison(name, data):
        return pickle.dumps(_Canary(str(canary))) if name.endswith(".safetensors") else data
    _rewrite(tmp_path / "m.sauron", tmp_path / "p.sauron", poison)
    with pytest.raises(BundleError, match="sha256"):
        read_bundle(tmp_path / "p.sauron")
    assert not canary.exists()


def test_folds_and_onnx_are_checked(tmp_path):
    b = _bundle()
    write_bundle(tmp_path / "m.sauron", Bundle(b.plans, b.configuration, (BundleFold(
        "0", "T", b.folds[0].widths, b.folds[0].weights, None),), (), None, "logits", "best"), "test")
    with pytest.raises(BundleError, match=r"no fold\(s\) \['3'\]"):
        read_bundle(tmp_path / "m.sauron", folds=["3"])
    with pytest.raises(BundleError, match="no ONNX graph.*--onnx"):
        read_bundle(tmp_path / "m.sauron", need_onnx=True)
    assert read_bundle(tmp_path / "m.sauron").mirror_axes is None
    with pytest.raises(FileNotFoundError, match="sauron_export"):
        read_bundle(tmp_path / "none.sauron")
