"""Importing trained nnU-Net v2 models: plans, dataset description and PlainConvUNet weights.

An nnU-Net v2 model folder (``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG``) holds ``plans.json``,
``dataset.json``, ``dataset_fingerprint.json`` and ``fold_F/checkpoint_{final,best}.pth``. Its default network,
``PlainConvUNet`` (conv with bias → InstanceNorm(eps 1e-5, affine) → LeakyReLU(0.01), strided-conv
downsampling, transposed-conv upsampling, one 1×1 head per decoder stage), is exactly :class:`UNet`; the import
renames the state-dict keys, converts the configuration into a :class:`ConfigurationPlan`, and writes a
SauronNet model folder that ``sauron_predict -m`` and ``sauron_train --init-from`` use like any trained one::

    MODEL_DIR/fold_F/checkpoint_final.pth   SauronNet checkpoint (plans, widths, weights, no optimizer)
    MODEL_DIR/fold_F/plans.json, dataset.json
    MODEL_DIR/nnunet_source/                nnU-Net's plans.json, dataset.json, dataset_fingerprint.json as read
    MODEL_DIR/import.json                   where it came from

Everything nnU-Net can express that this network cannot (residual encoders, cascades, region-based labels, an
ignore label, other norms or nonlinearities, dropout, forced resampling axes) is refused with a message naming
the plans entry; nothing is written in that case.

nnU-Net checkpoints are pickles. They are loaded with ``torch.load(weights_only=True)``, which refuses to run
code, plus exactly the numpy types nnU-Net's logger stores (``numpy`` scalars for losses and Dice values and
their dtypes); an older or customised checkpoint needing anything else is refused with the name of the type.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from sauronnet.atomic import atomic_dir
from sauronnet.checkpoint import make_checkpoint, save_checkpoint
from sauronnet.dataset import DatasetError, parse_channel_names, parse_labels
from sauronnet.fingerprint import IntensityStats
from sauronnet.networks.estimates import forward_flops
from sauronnet.networks.unet import build_network
from sauronnet.plans import ConfigurationPlan, NetworkPlan, Plans
from sauronnet.serialization import read_json, write_json_atomic

logger = logging.getLogger(__name__)

#: Plans entries of nnU-Net's PlainConvUNet that :class:`UNet` reproduces, with the values it requires.
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
_REQUIRED_ARCH = {
    "norm_op": ("torch.nn.modules.instancenorm.InstanceNorm3d", "torch.nn.modules.instancenorm.InstanceNorm2d",
                "torch.nn.InstanceNorm3d", "torch.nn.InstanceNorm2d"),
    "nonlin": ("torch.nn.LeakyReLU", "torch.nn.modules.activation.LeakyReLU"),
    "conv_op": ("torch.nn.modules.conv.Conv3d", "torch.nn.modules.conv.Conv2d", "torch.nn.Conv3d",
                "torch.nn.Conv2d"),
}
#: nnU-Net normalisation class → SauronNet scheme (see :mod:`sauronnet.preprocessing.normalize`).
NORMALIZATION = {"CTNormalization": "ct", "ZScoreNormalization": "zscore", "NoNormalization": "none",
                 "RescaleTo01Normalization": "rescale_to_0_1"}
CHECKPOINT_NAMES = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
SOURCE_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")


class NnUNetImportError(ValueError):
    """The nnU-Net model cannot be imported; the message names the file, the entry and what to do."""


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_nnunet_model` wrote: the model folder, the folds and the converted plans."""

    model_dir: Path
    folds: tuple[str, ...]
    plans: Plans
    configuration: str
    trainer_name: str


# ---- plans ---------------------------------------------------------------------------------------------------------
def resolve_configuration(plans: Mapping[str, Any], name: str, where: str) -> dict:
    """nnU-Net's configuration ``name`` with ``inherits_from`` applied (parents first, children override)."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise NnUNetImportError(f"{where}: configuration {name!r} not found; it has {sorted(configs)}")
    own = dict(configs[name])
    parent = own.pop("inherits_from", None)
    if parent is None:
        return own
    return {**resolve_configuration(plans, parent, where), **own}


def convert_plans(plans: Mapping[str, Any], dataset_json: Mapping[str, Any], configuration: str,
                  fingerprint: Mapping[str, Any] | None = None, where: str = "plans.json") -> Plans:
    """nnU-Net's plans + dataset.json → :class:`Plans` holding the one ``configuration``.

    Args:
        plans: nnU-Net's plans.json content.
        dataset_json: nnU-Net's dataset.json content.
        configuration: e.g. ``3d_fullres``.
        fingerprint: nnU-Net's dataset_fingerprint.json; used only when the plans lack the foreground intensity
            statistics (older plans).
        where: the plans file, for error messages.

    Raises:
        NnUNetImportError: for anything SauronNet's network or preprocessing cannot reproduce.
    """
    cfg = resolve_configuration(plans, configuration, where)
    here = f"{where} configurations.{configuration}"
    if cfg.get("previous_stage"):
        raise NnUNetImportError(f"{here}: a cascade stage (previous_stage {cfg['previous_stage']!r}); cascades need "
                                "the previous stage's segmentation as input and are not supported — import the "
                                "3d_fullres or 3d_lowres model instead")
    try:
        channel_names = parse_channel_names(dataset_json, Path("dataset.json"))
        labels = parse_labels(dataset_json, Path("dataset.json"))
    except DatasetError as e:
        raise NnUNetImportError("; ".join(e.problems)) from None
    if "regions_class_order" in dataset_json:
        raise NnUNetImportError("dataset.json: regions_class_order is set (a region-based model); region-based "
                                "training is not supported")
    arch = cfg.get("architecture", {})
    network = _convert_architecture(arch, here)
    n_ch = len(channel_names)
    schemes = []
    for i, scheme in enumerate(cfg["normalization_schemes"]):
        if scheme not in NORMALIZATION:
            raise NnUNetImportError(f"{here}.normalization_schemes[{i}]: {scheme!r} is not supported "
                                    f"(supported: {sorted(NORMALIZATION)})")
        schemes.append(NORMALIZATION[scheme])
    if len(schemes) != n_ch:
        raise NnUNetImportError(f"{here}: {len(schemes)} normalization schemes for {n_ch} channels in dataset.json")
    resampling = {}
    for kind in ("data", "seg", "probabilities"):
        fn, kwargs = cfg.get(f"resampling_fn_{kind}"), cfg.get(f"resampling_fn_{kind}_kwargs", {})
        if fn != "resample_data_or_seg_to_shape":
            raise NnUNetImportError(f"{here}.resampling_fn_{kind}: {fn!r} is not supported (only nnU-Net's default "
                                    "resample_data_or_seg_to_shape)")
        if kwargs.get("force_separate_z") is not None:
            raise NnUNetImportError(f"{here}.resampling_fn_{kind}_kwargs.force_separate_z: only null (decide from the "
                                    "spacing, nnU-Net's default) is supported")
        resampling[kind] = (int(kwargs.get("order", 3 if kind == "data" else 1)), int(kwargs.get("order_z", 0)))
    stats = plans.get("foreground_intensity_properties_per_channel") or \
        (fingerprint or {}).get("foreground_intensity_properties_per_channel")
    if not stats:
        raise NnUNetImportError(f"{where}: no foreground_intensity_properties_per_channel (in the plans or "
                                "dataset_fingerprint.json)")
    intensity = tuple(IntensityStats(**{k: float(stats[str(c)][k]) for k in IntensityStats.__dataclass_fields__})
                      for c in range(n_ch))
    patch = tuple(int(p) for p in cfg["patch_size"])
    batch = int(cfg["batch_size"])
    n_classes = len(labels)
    config = ConfigurationPlan(
        spacing=tuple(float(s) for s in cfg["spacing"]), patch_size=patch, batch_size=batch,
        median_image_size_in_voxels=tuple(float(s) for s in cfg["median_image_size_in_voxels"]),
        normalization_schemes=tuple(schemes), use_mask_for_norm=tuple(bool(u) for u in cfg["use_mask_for_norm"]),
        resampling_data_order=resampling["data"][0], resampling_data_order_z=resampling["data"][1],
        resampling_seg_order=resampling["seg"][0], resampling_seg_order_z=resampling["seg"][1],
        resampling_probabilities_order=resampling["probabilities"][0], batch_dice=bool(cfg["batch_dice"]),
        network=network,
        estimated_forward_gflops=forward_flops(network, patch, n_ch, n_classes, batch_size=batch) / 1e9)
    return Plans(
        dataset_name=str(plans["dataset_name"]), preset=str(plans.get("plans_name", "nnUNetPlans")),
        channel_names=channel_names, labels=labels,
        original_median_spacing_after_transp=tuple(float(s) for s in plans["original_median_spacing_after_transp"]),
        original_median_shape_after_transp=tuple(int(s) for s in plans["original_median_shape_after_transp"]),
        transpose_forward=tuple(int(a) for a in plans["transpose_forward"]),
        transpose_backward=tuple(int(a) for a in plans["transpose_backward"]),
        foreground_intensity_properties_per_channel=intensity, configurations={configuration: config})


def _convert_architecture(arch: Mapping[str, Any], here: str) -> NetworkPlan:
    cls = arch.get("network_class_name")
    if cls != PLAIN_CONV_UNET:
        what = "a residual-encoder U-Net (nnU-Net ResEnc presets)" if "Residual" in str(cls) else repr(cls)
        raise NnUNetImportError(f"{here}.architecture.network_class_name: {what}; only nnU-Net's default "
                                f"{PLAIN_CONV_UNET} can be imported (SauronNet's network has no residual blocks)")
    kw = arch.get("arch_kwargs", {})
    for key, allowed in _REQUIRED_ARCH.items():
        if kw.get(key) not in allowed:
            raise NnUNetImportError(f"{here}.architecture.arch_kwargs.{key}: {kw.get(key)!r} is not supported "
                                    f"(SauronNet's network uses {allowed[0]})")
    norm_kwargs = kw.get("norm_op_kwargs") or {}
    if not norm_kwargs.get("affine", False) or float(norm_kwargs.get("eps", 1e-5)) != 1e-5:
        raise NnUNetImportError(f"{here}.architecture.arch_kwargs.norm_op_kwargs: {norm_kwargs} is not supported "
                                "(needs affine true, eps 1e-5)")
    slope = float((kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01))
    if slope != 0.01:
        raise NnUNetImportError(f"{here}.architecture.arch_kwargs.nonlin_kwargs.negative_slope: {slope} is not "
                                "supported (SauronNet uses 0.01)")
    if kw.get("dropout_op") is not None:
        raise NnUNetImportError(f"{here}.architecture.arch_kwargs.dropout_op: {kw['dropout_op']!r}; dropout is not "
                                "supported")
    if kw.get("nonlin_first", False):
        raise NnUNetImportError(f"{here}.architecture.arch_kwargs.nonlin_first: true is not supported")
    n = int(kw["n_stages"])

    def per_stage(key: str, count: int) -> tuple:
        value = kw[key]
        return tuple([value] * count) if isinstance(value, int) else tuple(value)

    return NetworkPlan(
        features_per_stage=tuple(int(f) for f in per_stage("features_per_stage", n)),
        kernel_sizes=tuple(tuple(int(k) for k in ks) for ks in kw["kernel_sizes"]),
        strides=tuple(tuple(int(s) for s in st) for st in kw["strides"]),
        n_conv_per_stage_encoder=tuple(int(c) for c in per_stage("n_conv_per_stage", n)),
        n_conv_per_stage_decoder=tuple(int(c) for c in per_stage("n_conv_per_stage_decoder", n - 1)))


# ---- weights -------------------------------------------------------------------------------------------------------
def _nnunet_key(key: str) -> str | None:
    """SauronNet state-dict key → nnU-Net PlainConvUNet key (None: no counterpart)."""
    parts = key.split(".")
    if parts[0] == "encoder":  # encoder.S.I.{conv,norm}.P
        s, i, mod, p = parts[1:]
        return f"encoder.stages.{s}.0.convs.{i}.{mod}.{p}"
    if parts[0] == "decoder":  # decoder.D.I.{conv,norm}.P
        d, i, mod, p = parts[1:]
        return f"decoder.stages.{d}.convs.{i}.{mod}.{p}"
    if parts[0] == "ups":
        return f"decoder.transpconvs.{parts[1]}.{parts[2]}"
    if parts[0] == "heads":
        return f"decoder.seg_layers.{parts[1]}.{parts[2]}"
    return None


def _is_plain_bias(key: str) -> bool:
    """Biases nnU-Net omits with ``conv_bias: false``: conv blocks' and transposed convs' (heads keep theirs)."""
    return key.endswith("conv.bias") or (key.startswith("ups.") and key.endswith(".bias"))


def _is_alias(key: str) -> bool:
    """nnU-Net state-dict entries that repeat other entries: ``all_modules.*`` and the decoder's encoder copy."""
    return ".all_modules." in key or key.startswith("decoder.encoder.")


def convert_state_dict(weights: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor],
                       conv_bias: bool = True) -> dict[str, torch.Tensor]:
    """nnU-Net PlainConvUNet weights → a state dict for :class:`UNet` shaped like ``template``.

    Every key of ``template`` must be found with the same shape, and every non-alias nnU-Net key must be used.
    With ``conv_bias`` false (nnU-Net plans ``conv_bias: false``), conv biases are zero — the same function.

    Raises:
        NnUNetImportError: naming the first missing, unused or mis-shaped key.
    """
    out, used = {}, set()
    for key, ref in template.items():
        src = _nnunet_key(key)
        if src is None:
            raise NnUNetImportError(f"internal: no nnU-Net counterpart for {key}")
        if src not in weights:
            if not conv_bias and _is_plain_bias(key):
                out[key] = torch.zeros_like(ref)
                continue
            raise NnUNetImportError(f"network_weights: {src} is missing; the checkpoint does not match the plans' "
                                    "PlainConvUNet")
        w = weights[src]
        if tuple(w.shape) != tuple(ref.shape):
            raise NnUNetImportError(f"network_weights: {src} has shape {tuple(w.shape)}, the plans give "
                                    f"{tuple(ref.shape)}; the checkpoint does not match plans.json")
        out[key] = w.detach().to(ref.dtype).clone()
        used.add(src)
    unused = sorted(k for k in weights if k not in used and not _is_alias(k))
    if unused:
        raise NnUNetImportError(f"network_weights: entries SauronNet's network has no place for: {unused[:5]}"
                                f"{' ...' if len(unused) > 5 else ''}")
    return out


def _safe_numpy_globals() -> list:
    """The numpy types nnU-Net's logger leaves in checkpoints: scalars (``np.float32`` losses) and their dtypes."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)}
    return [scalar, np.dtype, *dtypes]


def load_nnunet_checkpoint(path: Path) -> dict:
    """Loads an nnU-Net v2 checkpoint without executing pickled code (see the module docstring)."""
    try:
        with torch.serialization.safe_globals(_safe_numpy_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError or RuntimeError depending on the content
        if "weights_only" not in str(e) and "Unsupported global" not in str(e):
            raise NnUNetImportError(f"{path}: cannot read the checkpoint ({e})") from None
        raise NnUNetImportError(f"{path}: the checkpoint holds Python objects beyond tensors, containers and numpy "
                                f"scalars, and is not loaded (unpickling them could run code). torch said: "
                                f"{str(e).splitlines()[0]}. If you trust the file, re-save its 'network_weights' "
                                "from nnU-Net's environment with torch.save and import again.") from None
    missing = [k for k in ("network_weights", "init_args", "trainer_name") if k not in ckpt]
    if missing:
        raise NnUNetImportError(f"{path}: not an nnU-Net v2 checkpoint (missing {missing})")
    return ckpt


# ---- the whole model -----------------------------------------------------------------------------------------------
def find_folds(model_folder: Path, checkpoint: str) -> list[str]:
    name = CHECKPOINT_NAMES[checkpoint]
    return sorted(p.name[5:] for p in model_folder.glob("fold_*") if (p / name).is_file())


def import_nnunet_model(model_folder: str | Path, out_dir: str | Path, folds: Sequence[str] | None = None,
                        checkpoint: str = "final", overwrite: bool = False) -> ImportResult:
    """Converts an nnU-Net v2 model folder into a SauronNet model folder (see the module docstring).

    Args:
        model_folder: ``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG``.
        out_dir: the SauronNet model folder to write; it must not exist unless ``overwrite``.
        folds: folds to import (default: every ``fold_F`` holding the checkpoint).
        checkpoint: ``final`` or ``best``; written under the same name.
        overwrite: replace an existing ``out_dir``.

    The output is assembled in a temporary folder beside ``out_dir`` and moved into place at the end, so a
    failure leaves nothing behind.
    """
    src, out = Path(model_folder), Path(out_dir)
    if checkpoint not in CHECKPOINT_NAMES:
        raise ValueError(f"checkpoint must be one of {sorted(CHECKPOINT_NAMES)}, got {checkpoint!r}")
    for name in SOURCE_FILES[:2]:
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} not found; -m must be an nnU-Net v2 trained model folder "
                                    "(nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another -o or pass --overwrite")
    available = find_folds(src, checkpoint)
    folds = [str(f) for f in folds] if folds else available
    if not folds:
        raise FileNotFoundError(f"{src}: no fold_*/{CHECKPOINT_NAMES[checkpoint]}; train a fold with nnU-Net or "
                                "choose --checkpoint best")
    absent = [f for f in folds if f not in available]
    if absent:
        raise FileNotFoundError(f"{src}: no {CHECKPOINT_NAMES[checkpoint]} for fold(s) {absent}; available: "
                                f"{available or 'none'}")
    nn_plans, dataset_json = read_json(src / "plans.json"), read_json(src / "dataset.json")
    fingerprint = read_json(src / "dataset_fingerprint.json") if (src / SOURCE_FILES[2]).is_file() else None

    converted: dict[str, dict] = {}
    plans = configuration = trainer_name = None
    for fold in folds:
        path = src / f"fold_{fold}" / CHECKPOINT_NAMES[checkpoint]
        ckpt = load_nnunet_checkpoint(path)
        cfg_name = str(ckpt["init_args"]["configuration"])
        if plans is None:
            configuration, trainer_name = cfg_name, str(ckpt["trainer_name"])
            plans = convert_plans(nn_plans, dataset_json, configuration, fingerprint, str(src / "plans.json"))
        elif cfg_name != configuration:
            raise NnUNetImportError(f"{path}: configuration {cfg_name!r} differs from fold_{folds[0]}'s "
                                    f"{configuration!r}; import one model at a time")
        cfg = plans.configuration(configuration)
        net = build_network(cfg.network, len(plans.channel_names), plans.num_classes, None, deep_supervision=True)
        arch = resolve_configuration(nn_plans, configuration, "plans.json")["architecture"]["arch_kwargs"]
        state = convert_state_dict(ckpt["network_weights"], net.state_dict(), bool(arch.get("conv_bias", False)))
        mirror = ckpt.get("inference_allowed_mirroring_axes")
        converted[fold] = make_checkpoint(
            f"nnU-Net:{trainer_name}", plans, configuration, fold, net.widths(), state,
            epoch=int(ckpt.get("current_epoch", 0)),
            # nnU-Net mirrors only along these at inference; None (or absent) means no mirroring
            mirror_axes=[] if mirror is None else [int(a) for a in mirror],
            # nnU-Net averages folds as logits and resamples logits before the softmax; the predictor follows it
            score_space="logits",
            source={"nnunet_checkpoint": str(path.resolve()), "trainer_name": trainer_name})

    with atomic_dir(out) as staging:
        for fold, payload in converted.items():
            fold_dir = staging / f"fold_{fold}"
            save_checkpoint(payload, fold_dir / CHECKPOINT_NAMES[checkpoint])
            plans.save(fold_dir / "plans.json")
            shutil.copyfile(src / "dataset.json", fold_dir / "dataset.json")
        (staging / "nnunet_source").mkdir()
        for name in SOURCE_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, staging / "nnunet_source" / name)
        write_json_atomic(staging / "import.json", {
            "source": str(src.resolve()), "trainer_name": trainer_name, "configuration": configuration,
            "folds": list(converted), "checkpoint": CHECKPOINT_NAMES[checkpoint],
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return ImportResult(out, tuple(converted), plans, configuration, trainer_name)
