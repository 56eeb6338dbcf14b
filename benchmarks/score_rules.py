"""Which channels δ_prune would remove on a trained checkpoint, under each rule for the maps it compares.

Usage::

    .venv/bin/python benchmarks/score_rules.py CHECKPOINT PREPROCESSED_CONFIG_FOLDER [--batches 4] [--refs 5]
        [--thresholds 0.1 0.2 0.3] [--rules raw zscore minmax] [--map-stats] [--png FILE]

Feeds ``--batches`` training-like batches (the plans' batch size, nnU-Net's foreground oversampling, no
augmentation) through the checkpoint's network in training mode, captures every prunable layer's output, and
scores every channel with :func:`sauronnet.pruning.distances.delta_prune` under each rule of ``SCORE_MAPS``
(``raw``, ``zscore``, ``minmax``) against ``--refs`` random reference channels per layer (the same references
for every rule). Prints, per rule, how many channels score below τ = 0.1, 0.2 and 0.3 (averaged over the
references; the reference itself never counts; ``--thresholds`` and ``--rules`` choose others, e.g. to see
what a τ_max above the paper's 0.3 would remove), per layer and in all, and draws the score histograms per layer
into ``--png``; ``--map-stats`` adds how alike each layer's maps are (see :func:`print_map_stats`: it showed
that the transposed convolutions' maps have no near-duplicates). This is the comparison asked for in issue 10, fix 1: our blocks' affine InstanceNorm gives
each channel its own scale and offset, which raw maps see and the reference network's maps never had.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLDS = (0.1, 0.2, 0.3)


def main(argv=None) -> int:
    import numpy as np
    import torch

    from sauronnet.checkpoint import load_checkpoint
    from sauronnet.data.loader import PatchSampler, sample_seed
    from sauronnet.networks.unet import build_network
    from sauronnet.plans import Plans
    from sauronnet.pruning.distances import SCORE_MAPS, delta_prune
    from sauronnet.serialization import from_jsonable

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path, help="the preprocessed configuration folder (CASE.npy + CASE.json)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--refs", type=int, default=5, help="random reference channels per layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS),
                        help="count the channels scoring below each (default: 0.1 0.2 0.3)")
    parser.add_argument("--rules", nargs="+", choices=SCORE_MAPS, default=list(SCORE_MAPS),
                        help="score-map rules to compare (default: all)")
    parser.add_argument("--map-stats", action="store_true",
                        help="also print, per layer, how alike its maps are (|correlation| between channels) and "
                             "how much of each map's min-max range its 1st-99th percentiles span")
    parser.add_argument("--png", type=Path, help="score histograms per layer and rule")
    args = parser.parse_args(argv)
    rules, thresholds = args.rules, args.thresholds

    ckpt = load_checkpoint(args.checkpoint, torch.device("cpu"))
    plans = from_jsonable(Plans, ckpt["plans"], where=str(args.checkpoint))
    cfg = plans.configuration(ckpt["configuration"])
    net = build_network(cfg.network, len(plans.channel_names), plans.num_classes, ckpt["widths"],
                        deep_supervision=True)
    net.load_state_dict(ckpt["state_dict"])
    net.train()
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in net.widths()}
    for name in maps:
        net.layer(name).register_forward_hook(lambda m, i, o, name=name: maps[name].append(o.detach()))
    ids = sorted(p.name[:-5] for p in args.data.glob("*.json"))
    sampler = PatchSampler(args.data, ids, tuple(cfg.patch_size), cfg.batch_size)
    with torch.no_grad():
        for i in range(args.batches):
            batch = sampler.sample(np.random.RandomState(sample_seed(args.seed, 0, i, 0)))
            net(torch.from_numpy(batch["data"]))

    rng = np.random.RandomState(args.seed)
    scores: dict[str, dict[str, list[np.ndarray]]] = {rule: {} for rule in rules}
    for name, outs in maps.items():
        width = outs[0].shape[1]
        for k in rng.randint(width, size=args.refs):
            for rule in rules:
                # the score of one epoch end: δ_prune per batch, averaged over the batches (--prune-batches)
                s = torch.stack([delta_prune(o, int(k), maps=rule) for o in outs]).mean(0).numpy()
                scores[rule].setdefault(name, []).append(np.delete(s, k))
    total = sum(o[0].shape[1] for o in maps.values())
    print(f"{args.checkpoint}: {len(maps)} prunable layers, {total} channels; {args.batches} batches of "
          f"{cfg.batch_size}, {args.refs} random references per layer")
    head = " | ".join(f"{rule} <{t}" for rule in rules for t in thresholds)
    print(f"| layer | width | {head} |")
    print("|---|---|" + "---|" * (len(rules) * len(thresholds)))
    sums = {(rule, t): 0.0 for rule in rules for t in thresholds}
    for name, outs in maps.items():
        cells = []
        for rule in rules:
            for t in thresholds:
                n = float(np.mean([(s < t).sum() for s in scores[rule][name]]))
                sums[rule, t] += n
                cells.append(f"{n:.1f}")
        print(f"| {name} | {outs[0].shape[1]} | " + " | ".join(cells) + " |")
    print("| all | " + f"{total} | " + " | ".join(f"{sums[k]:.1f}" for k in sums) + " |")
    if args.map_stats:
        print_map_stats(maps)
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        n = len(maps)
        cols = 4
        fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(16, 2.6 * ((n + cols - 1) // cols)),
                                 squeeze=False)
        for ax, name in zip(axes.flat, maps):
            for rule in rules:
                ax.hist(np.concatenate(scores[rule][name]), bins=20, range=(0, 1), histtype="step", label=rule)
            for t in thresholds:
                ax.axvline(t, color="k", ls=":")
            ax.set_title(name, fontsize=9)
        axes.flat[0].legend(fontsize=8)
        fig.suptitle(f"δ_prune per layer (all references pooled); dotted: τ = {', '.join(map(str, thresholds))}")
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png)
    return 0


def print_map_stats(maps) -> None:
    """Per layer, over the first batch's first sample: the median and largest |Pearson correlation| between two of
    its channels' maps (near-duplicates, what a standardised δ_prune can remove, correlate strongly), and the median
    share of a map's min-max range that its 1st to 99th percentiles span (small: a few extreme voxels stretch the
    range, and min-max normalised maps look alike whatever their shape)."""
    import numpy as np
    import torch
    print("| layer | width | median abs corr | max abs corr | 1-99 % span / range |")
    print("|---|---|---|---|---|")
    for name, outs in maps.items():
        flat = outs[0][0].flatten(1).double()  # (C, voxels) of the first sample
        z = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-12)
        corr = (z @ z.T / z.shape[1]).abs().numpy()
        upper = corr[np.triu_indices(len(corr), 1)]
        q = torch.quantile(flat, torch.tensor([0.01, 0.99], dtype=flat.dtype), dim=1)
        span = ((q[1] - q[0]) / (flat.amax(1) - flat.amin(1) + 1e-12)).numpy()
        cells = (f"{np.median(upper):.2f} | {upper.max():.2f}" if upper.size else "– | –")
        print(f"| {name} | {len(corr)} | {cells} | {np.median(span):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
