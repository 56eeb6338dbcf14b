"""No code path unpickles what a user supplies: a source scan, and a booby-trapped checkpoint for every loader."""
import re
import shutil
from pathlib import Path

import pytest
import torch

from sauronnet import cli
from tests.reliability.conftest import NNUNET_MODEL

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sauronnet", "planners", "trainers")


def _sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_source_never_unpickles():
    offences = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|\bdill\b|\bjoblib\.load\(", code):
                offences.append(f"{path}:{n}: {line.strip()}")
        for m in re.finditer(r"torch\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text):
            if "weights_only=True" not in m.group(1):
                offences.append(f"{path}: torch.load without weights_only=True: {m.group(0)[:80]}")
    assert not offences, "\n".join(offences)
    assert sum(1 for _ in _sources()) > 40  # the scan saw the whole package


class Trap:
    """Unpickling this runs a command that leaves a file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _trapped(marker: Path, path: Path, like: Path | None = None) -> None:
    payload = torch.load(like, weights_only=False) if like is not None else {}
    payload = dict(payload)
    payload["extra"] = Trap(marker)
    torch.save(payload, path)


def test_a_trapped_checkpoint_runs_nothing_in_any_loader(env, capsys):
    marker = env.root / "pwned"
    fold = env.fold()
    own = fold / "checkpoint_final.pth"
    _trapped(marker, own, like=own)
    image = sorted(env.images.glob("*.nii.gz"))[0]
    results = env.paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres" / "fold_0"
    results.mkdir(parents=True)
    _trapped(marker, results / "checkpoint_latest.pth", like=own.with_name("checkpoint_latest.pth"))
    nnunet = env.root / "nnunet"
    shutil.copytree(NNUNET_MODEL, nnunet)
    nn_ckpt = nnunet / "fold_0" / "checkpoint_final.pth"
    _trapped(marker, nn_ckpt, like=nn_ckpt)
    train = ["1", "0", "-tr", "Trainer", "--epochs", "1", "--iters", "1", "--val-iters", "1", "--workers", "0",
             "--no-progress"]
    runs = {
        "train --continue": (cli.train_main, train + ["--continue"]),
        "train --init-from": (cli.train_main, ["1", "1", "-tr", "Trainer", "--init-from", str(env.model), "--epochs",
                                               "1", "--iters", "1", "--no-progress", "--workers", "0"]),
        "predict": (cli.predict_main, ["-i", str(image), "-o", str(env.out), "-m", str(env.model), "--no-progress"]),
        "export": (cli.export_main, [str(env.model), "-o", str(env.root / "m.sauron")]),
        "inspect": (cli.inspect_main, [str(env.model), "-i", str(image), "-o", str(env.root / "insp")]),
        "import": (cli.import_nnunet_main, ["-m", str(nnunet), "-o", str(env.root / "imported")]),
        "info": (cli.info_main, [str(env.model)]),
    }
    for name, (main, argv) in runs.items():
        capsys.readouterr()
        assert main(argv) == 1, name
        err = capsys.readouterr().err
        assert "error:" in err and ("never" in err or "not loaded" in err or "could run code" in err), (name, err)
        assert not marker.exists(), f"{name} ran the checkpoint's code"


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt"])
def test_a_bundle_cannot_write_outside(tmp_path, member):
    import zipfile

    from sauronnet.deploy.bundle import BundleError, read_bundle
    bundle = tmp_path / "m.sauron"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("manifest.json", '{"format": 1, "files": {"%s": "00"}}' % member)
        z.writestr(member, "x")
    with pytest.raises(BundleError):
        read_bundle(bundle)
    assert not (tmp_path.parent / "evil.txt").exists()
