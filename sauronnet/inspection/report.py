"""``sauron_inspect``'s outputs for one case: per layer a 4D NIfTI of its maps on the input's grid and a PNG
montage of every channel's central slice, and ``clusters.json`` with the clustering metrics of every layer."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sauronnet.inspection.clusters import layer_metrics, summarise
from sauronnet.inspection.feature_maps import Inspection, to_input_grid
from sauronnet.io import write_channels
from sauronnet.serialization import write_json_atomic


#: each tile of a montage is scaled up (nearest neighbour) to at least this many pixels on its longer side
MIN_TILE = 48
TITLE_HEIGHT = 14


def montage(maps: np.ndarray, path: Path, title: str) -> None:
    """A grid of the central z slice of every channel of ``maps`` (C, z, y, x), each scaled to its own range and
    numbered in its top-left corner (channel i in row i // cols, column i % cols), under a line with ``title``.

    Drawn as one image (Pillow) rather than one plot per channel: a 320-channel layer takes milliseconds, not the
    half minute of a matplotlib figure with 320 axes.
    """
    from PIL import Image, ImageDraw

    c = maps.shape[0]
    tiles = maps[:, maps.shape[1] // 2].astype(np.float32)  # (C, y, x)
    lo = tiles.min(axis=(1, 2), keepdims=True)
    span = tiles.max(axis=(1, 2), keepdims=True) - lo
    tiles = (tiles - lo) / np.where(span > 0, span, 1)
    zoom = max(1, math.ceil(MIN_TILE / max(tiles.shape[1:])))
    tiles = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    h, w, gap = tiles.shape[1], tiles.shape[2], 2
    canvas = np.full((TITLE_HEIGHT + gap + rows * (h + gap), gap + cols * (w + gap)), 0.25, np.float32)
    for i in range(c):
        top, left = TITLE_HEIGHT + gap + (i // cols) * (h + gap), gap + (i % cols) * (w + gap)
        canvas[top:top + h, left:left + w] = tiles[i]
    image = Image.fromarray(np.round(canvas * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.text((gap, 1), title, fill=(255, 255, 255))
    for i in range(c):
        draw.text((gap + (i % cols) * (w + gap) + 1, TITLE_HEIGHT + gap + (i // cols) * (h + gap)), str(i),
                  fill=(255, 220, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}")
    image.save(tmp, format="PNG")
    tmp.replace(path)


def write_inspection(inspection: Inspection, out_dir: Path, threshold: float, source: dict, progress=None) -> dict:
    """Writes ``LAYER.nii.gz``, ``LAYER.png`` per layer and ``clusters.json`` (last); returns its content."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_layer = {}
    names = list(inspection.layers)
    for name in (progress(names) if progress else names):
        maps = inspection.layers[name]
        write_channels(to_input_grid(inspection, name), inspection.geometry, out_dir / f"{name}.nii.gz")
        montage(maps, out_dir / f"{name}.png", f"{name}: {maps.shape[0]} channels, central slice")
        per_layer[name] = {"stride": list(inspection.strides[name]), "shape": list(maps.shape[1:]),
                           **layer_metrics(maps, threshold)}
    result = {**source,
              "region": [[r.start, r.stop] for r in inspection.region],
              "preprocessed_shape": list(inspection.preprocessed_shape),
              "distance": "delta_opt: per-channel min-max normalised maps, average-pooled 2, root mean square "
                          "difference",
              "clustering": f"complete linkage cut at distance {threshold}",
              "summary": summarise(per_layer), "layers": per_layer}
    write_json_atomic(out_dir / "clusters.json", result)
    return result
