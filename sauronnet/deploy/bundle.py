"""The ``.sauron`` model bundle: one file holding everything prediction needs, and nothing that executes.

A bundle is a zip archive (stored, not compressed: weights do not compress) of:

- ``manifest.json``: ``format`` (``sauronnet-bundle``), ``format_version``, ``created_by``, and for every other
  member its sha256 and size. Reading refuses an unknown format or version, a member missing from the manifest or
  the archive, and any sha256 mismatch, before anything is used;
- ``model.json``: the configuration's plans (strict JSON, :class:`sauronnet.plans.Plans`), the configuration name,
  the folds (name, trainer, per-layer widths, weights member, ONNX member or null), the labels kept to their
  largest component, the mirror axes, the score space (``probabilities``, or ``logits`` for imported nnU-Net
  models) and the checkpoint it was exported from;
- ``fold_F.safetensors``: the fold's weights (pruned shapes), one tensor per state-dict entry;
- ``fold_F.onnx`` (with ``--onnx``): the fold's network as an ONNX graph, deep supervision off, dynamic batch.

Why safetensors in a zip, not ``torch.save``: loading never unpickles (a pickle can run code; ``torch.load``
with ``weights_only=True`` is safe too, but needs torch, which the deploy install does not have); safetensors
reads with numpy alone, and the manifest's hashes make tampering and truncation visible. This module needs
numpy and safetensors only.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sauronnet.atomic import atomic_path
from sauronnet.plans import Plans
from sauronnet.serialization import from_jsonable, to_jsonable

FORMAT = "sauronnet-bundle"
FORMAT_VERSION = 1
SUFFIX = ".sauron"
SCORE_SPACES = ("probabilities", "logits")


class BundleError(ValueError):
    """A bundle that cannot be trusted or read; the message names the file and the problem."""


@dataclass(frozen=True)
class BundleFold:
    """One fold: its weights (numpy, state-dict names) and, if exported, its ONNX graph (bytes)."""

    name: str
    trainer: str
    widths: dict[str, int]
    weights: dict[str, np.ndarray]
    onnx: bytes | None


@dataclass(frozen=True)
class Bundle:
    plans: Plans
    configuration: str
    folds: tuple[BundleFold, ...]
    keep_largest_component: tuple[int, ...]
    mirror_axes: tuple[int, ...] | None
    score_space: str
    checkpoint: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(path: Path, bundle: Bundle, created_by: str) -> int:
    """Writes ``bundle`` to ``path`` atomically; returns its size in bytes."""
    from safetensors.numpy import save

    members: dict[str, bytes] = {}
    folds = []
    for fold in bundle.folds:
        weights = f"fold_{fold.name}.safetensors"
        members[weights] = save({k: np.ascontiguousarray(v) for k, v in fold.weights.items()})
        onnx = None
        if fold.onnx is not None:
            onnx = f"fold_{fold.name}.onnx"
            members[onnx] = fold.onnx
        folds.append({"name": fold.name, "trainer": fold.trainer, "widths": fold.widths, "weights": weights,
                      "onnx": onnx})
    model = {"plans": to_jsonable(bundle.plans), "configuration": bundle.configuration, "folds": folds,
             "keep_largest_component": list(bundle.keep_largest_component),
             "mirror_axes": None if bundle.mirror_axes is None else list(bundle.mirror_axes),
             "score_space": bundle.score_space, "checkpoint": bundle.checkpoint}
    members = {"model.json": json.dumps(model, indent=1).encode(), **members}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "created_by": created_by,
                "members": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in members.items()}}
    with atomic_path(Path(path), SUFFIX) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1))
            for name, data in members.items():
                z.writestr(name, data)
    return Path(path).stat().st_size


def _verified_members(path: Path) -> dict[str, bytes]:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{path}: not a SauronNet bundle ({e}); export one with sauron_export") from e
    with z:
        names = set(z.namelist())
        if "manifest.json" not in names:
            raise BundleError(f"{path}: no manifest.json, so not a SauronNet bundle; export one with sauron_export")
        try:
            manifest = json.loads(z.read("manifest.json"))
        except json.JSONDecodeError as e:
            raise BundleError(f"{path}: manifest.json is not valid JSON ({e})") from e
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{path}: bundle format version {manifest.get('format_version')!r}; this SauronNet "
                              f"reads version {FORMAT_VERSION}. Re-export the model with this version's sauron_export "
                              "or install the SauronNet that wrote it")
        listed = manifest.get("members", {})
        unlisted = sorted(names - set(listed) - {"manifest.json"})
        if unlisted:
            raise BundleError(f"{path}: members not in the manifest: {unlisted}; the file was altered after export")
        out = {}
        for name, entry in listed.items():
            if name not in names:
                raise BundleError(f"{path}: member {name} listed in the manifest is missing (truncated file?)")
            data = z.read(name)
            if _sha256(data) != entry.get("sha256"):
                raise BundleError(f"{path}: {name} does not match its sha256 in the manifest; the file is damaged "
                                  "or was altered after export. Export it again")
            out[name] = data
    return out


def read_bundle(path: str | Path, folds: Sequence[str] | None = None, need_onnx: bool = False) -> Bundle:
    """Reads and verifies a bundle (numpy weights; nothing is unpickled or executed).

    Args:
        folds: the folds to keep (default: all).
        need_onnx: refuse a bundle without an ONNX graph for every kept fold.

    Raises:
        BundleError: the file is not a bundle, fails its manifest, or lacks what was asked for.
    """
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such bundle; export one with sauron_export MODEL_DIR -o {path.name}")
    members = _verified_members(path)
    try:
        model = json.loads(members["model.json"])
        plans = from_jsonable(Plans, model["plans"], where=f"{path} model.json plans")
        available = [f["name"] for f in model["folds"]]
        chosen = list(folds) if folds is not None else available
        missing = [f for f in chosen if f not in available]
        if missing:
            raise BundleError(f"{path}: no fold(s) {missing}; it holds {available}")
        kept = []
        for f in model["folds"]:
            if f["name"] not in chosen:
                continue
            if need_onnx and f["onnx"] is None:
                raise BundleError(f"{path}: fold {f['name']} has no ONNX graph; export with sauron_export --onnx to "
                                  "predict with onnxruntime")
            kept.append(BundleFold(f["name"], f["trainer"], {k: int(v) for k, v in f["widths"].items()},
                                   load(members[f["weights"]]), members[f["onnx"]] if f["onnx"] else None))
        if model["score_space"] not in SCORE_SPACES:
            raise BundleError(f"{path}: unknown score space {model['score_space']!r}")
        mirror = model["mirror_axes"]
        return Bundle(plans, model["configuration"], tuple(kept), tuple(model["keep_largest_component"]),
                      None if mirror is None else tuple(mirror), model["score_space"], model["checkpoint"])
    except (KeyError, TypeError) as e:
        raise BundleError(f"{path}: model.json lacks or mistypes {e}; export the model again") from e

