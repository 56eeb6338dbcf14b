"""The baseline pruning methods end-to-end on the small demo: each meets its target, through the shared machinery."""
import json

import pytest
import torch

from sauronnet.checkpoint import load_checkpoint
from sauronnet.inference.torch_network import load_fold_network
from sauronnet.networks.unet import default_widths
from sauronnet.plans import Plans
from sauronnet.pruning.targets import forward_flops
from trainers.baselines import FPGMTrainer, L1Trainer, OneShotConfig, RandomTrainer, ScratchTrainer, UniformTrainer
from trainers.csgd import CSGDConfig, CSGDTrainer
from trainers.pruning import MatchConfig

SMALL = dict(epochs=2, iterations_per_epoch=2, val_iterations=1, num_workers=0, seed=5)


def make(cls, paths, config):
    plans = Plans.load(paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    return cls(plans, "3d_fullres", "0", paths, config, "cpu")


def flops(t):
    return forward_flops(t.cfg.network, 1, t.plans.num_classes, t.network.widths(), t.cfg.patch_size)


def outputs_agree(t):
    """The final checkpoint rebuilds a network that computes what the trainer's network computes."""
    net, _, _ = load_fold_network(t.output_dir / "checkpoint_final.pth", torch.device("cpu"))
    assert net.widths() == t.network.widths()
    x = torch.randn(1, 1, *t.cfg.patch_size)
    t.network.eval()
    t.network.deep_supervision = False
    with torch.no_grad():
        assert torch.allclose(net(x), t.network(x), atol=1e-5)


@pytest.mark.parametrize("cls,config", [(L1Trainer, OneShotConfig), (FPGMTrainer, MatchConfig),
                                        (CSGDTrainer, CSGDConfig)])
def test_target_methods_meet_the_flop_target(results_paths, cls, config):
    t = make(cls, results_paths, config(keep_flops=0.4, **SMALL))
    summary = t.fit(progress=False)
    unpruned = forward_flops(t.cfg.network, 1, t.plans.num_classes, None, t.cfg.patch_size)
    assert flops(t) == pytest.approx(0.4 * unpruned, rel=0.05)
    assert summary["pruning"]["flops_after"] == pytest.approx(0.4 * unpruned, rel=0.05)
    assert summary["pruning"]["method"] == cls.name
    lines = [json.loads(x) for x in (t.output_dir / "pruning.jsonl").read_text().splitlines()]
    assert sum(r["removed"] for line in lines for r in line["layers"].values()) == \
        sum(default_widths(t.cfg.network).values()) - sum(t.network.widths().values())
    outputs_agree(t)


def test_l1_prunes_once_at_its_epoch(results_paths):
    t = make(L1Trainer, results_paths, OneShotConfig(keep_flops=0.5, prune_epoch=1, **SMALL))
    t.fit(progress=False)
    removed = [sum(r["removed"] for r in h["pruning"].values()) for h in t.history]
    assert removed[0] == 0 and removed[1] > 0


def test_fpgm_zeroes_softly_then_removes_at_the_end(results_paths):
    t = make(FPGMTrainer, results_paths, MatchConfig(keep_flops=0.5, **{**SMALL, "epochs": 3}))
    t.fit(progress=False)
    removed = [sum(r["removed"] for r in h["pruning"].values()) for h in t.history]
    assert removed[:2] == [0, 0] and removed[2] > 0
    ckpt = load_checkpoint(t.output_dir / "checkpoint_latest.pth")
    assert ckpt["widths"] == t.network.widths()


def test_random_replays_the_matched_runs_removals(pruned_model, results_paths):
    paths, sauron = pruned_model
    model = sauron.output_dir
    runs = []
    for seed in (5, 5, 6):
        t = make(RandomTrainer, results_paths, MatchConfig(match=str(model), **{**SMALL, "epochs": 3, "seed": seed}))
        t.output_dir = results_paths.results / f"random{len(runs)}"
        t.fit(progress=False)
        runs.append(t)
    assert runs[0].network.widths() == sauron.network.widths()  # same counts per layer and epoch
    for h, s in zip(runs[0].history, sauron.history):
        assert {k: r["removed"] for k, r in h["pruning"].items()} == {k: r["removed"] for k, r in s["pruning"].items()}
    same = [torch.equal(a, b) for a, b in zip(runs[0].network.parameters(), runs[1].network.parameters())]
    assert all(same)  # seeded: the same draw
    drawn = [torch.equal(a, b) for a, b in zip(runs[0].network.parameters(), runs[2].network.parameters())]
    assert not all(drawn)


def test_random_skips_the_removals_the_matched_run_undid(results_paths, tmp_path):
    (tmp_path / "checkpoint_final.pth").touch()  # only its pruning.jsonl is read
    log = [{"epoch": 0, "layers": {"a": {"width": 6, "removed": 2}}},
           {"epoch": 1, "layers": {"a": {"width": 8, "removed": -2}}, "undoes": 0},
           {"epoch": 2, "layers": {"a": {"width": 7, "removed": 1}}}]
    (tmp_path / "pruning.jsonl").write_text("".join(json.dumps(line) + "\n" for line in log))
    t = make(RandomTrainer, results_paths, MatchConfig(match=str(tmp_path), **SMALL))
    replayed = [t.removals(e, {}) for e in range(3)]
    assert replayed == [{}, {"a": -2}, {"a": 1}]
    assert t.select(1, {}) == {}  # a rewind's negative count removes nothing


def test_scratch_and_uniform_build_their_widths(pruned_model, results_paths):
    paths, sauron = pruned_model
    scratch = make(ScratchTrainer, results_paths, MatchConfig(match=str(sauron.output_dir), **SMALL))
    assert scratch.network.widths() == sauron.network.widths()
    uniform = make(UniformTrainer, results_paths, MatchConfig(match=str(sauron.output_dir), **SMALL))
    assert flops(uniform) == pytest.approx(flops(sauron), rel=0.05)
    planned = default_widths(uniform.cfg.network)
    ratios = [uniform.network.widths()[k] / planned[k] for k in planned]
    assert max(ratios) - min(ratios) < 0.1  # one factor for every layer (up to rounding)
    uniform.fit(progress=False)
    assert uniform.network.widths() == uniform.target_widths  # never pruned


def test_targets_are_required_and_exclusive(results_paths):
    with pytest.raises(ValueError, match="--match"):
        make(UniformTrainer, results_paths, MatchConfig(**SMALL))
    with pytest.raises(ValueError, match="not both"):
        MatchConfig(match="x", keep_flops=0.5)
    with pytest.raises(ValueError, match="--match"):
        make(RandomTrainer, results_paths, MatchConfig(**SMALL))
    with pytest.raises(FileNotFoundError, match="checkpoint_final"):
        make(ScratchTrainer, results_paths, MatchConfig(match=str(results_paths.results / "nothing"), **SMALL))
