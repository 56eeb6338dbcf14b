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


def montage(maps: np.ndarray, path: Path, title: str) -> None:
    """A grid of the central z slice of every channel of ``maps`` (C, z, y, x), each scaled to its own range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = maps.shape[0]
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < c:
            ax.imshow(maps[i, maps.shape[1] // 2], cmap="gray")
            ax.set_title(str(i), fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}")
    fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
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
