"""``progress.png``: losses and pseudo-Dice, learning rate, epoch time, plus trainer-specific panels (the pruning
trainers' widths panel lives here too)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from sauronnet.atomic import atomic_path


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use (a second of start-up that the training
    processes of a distributed run other than rank 0 never need)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_progress(history: Sequence[dict], path: Path, extra_panels: Sequence[Callable] = ()) -> None:
    """Draws the training curves from the per-epoch ``history`` and writes ``path`` atomically."""
    if not history:
        return
    plt = _pyplot()
    epochs = [m["epoch"] for m in history]
    n = 3 + len(extra_panels)
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.2 * n), squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, [m["train_loss"] for m in history], color="b", label="train loss")
    ax.plot(epochs, [m["val_loss"] for m in history], color="r", label="val loss")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    labels = sorted(history[-1]["pseudo_dice"])
    for k in labels:
        ax2.plot(epochs, [m["pseudo_dice"].get(k) for m in history], ls=":", label=f"pseudo-Dice {k}")
    ax2.plot(epochs, [m["ema_pseudo_dice"] for m in history], color="g", label="pseudo-Dice (EMA)")
    ax2.set_ylabel("pseudo-Dice")
    ax2.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    axes[1, 0].plot(epochs, [m["lr"] for m in history], color="b")
    axes[1, 0].set_ylabel("learning rate")
    axes[2, 0].plot(epochs, [m["epoch_time"] for m in history], color="b")
    axes[2, 0].set_ylabel("epoch time (s)")
    for i, panel in enumerate(extra_panels):
        panel(axes[3 + i, 0], history)
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    try:
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)


def widths_panel(ax, history: Sequence[dict]) -> None:
    """The pruning trainers' panel: every layer's channels per epoch (from ``history[i]["pruning"]``), their
    total, and a red line at each epoch whose end undid earlier removals (Sauron's ``--rollback-drop``)."""
    names = list(history[-1].get("pruning", {}))
    epochs = [h["epoch"] for h in history]
    for name in names:
        ax.plot(epochs, [h.get("pruning", {}).get(name, {}).get("width") for h in history], lw=1)
    total = [sum(r["width"] for r in h.get("pruning", {}).values()) for h in history]
    ax2 = ax.twinx()
    ax2.plot(epochs, total, color="k", lw=2, label="all layers")
    for i, h in enumerate(h for h in history if "rollback" in h):
        ax2.axvline(h["epoch"], color="tab:red", lw=1, ls="--", label="removals undone" if i == 0 else None)
    ax2.set_ylabel("total channels")
    ax2.legend(loc="upper right")
    ax.set_ylabel("channels per layer")
