"""The compression benchmark's statistics: paired per-case Dice changes and its extra held-out cases."""
from __future__ import annotations

import math

import SimpleITK as sitk

from benchmarks.sauron_compression import Bench, Model, Run, paired_table


def summary(dice_per_case: list[tuple[float, float]]) -> dict:
    return {"labels": [1, 2], "cases": [{"case": f"c{i:02d}", "metrics": {"1": {"dice": a}, "2": {"dice": b}}}
                                        for i, (a, b) in enumerate(dice_per_case)]}


def test_paired_table_gives_the_mean_change_per_case_and_its_standard_error():
    ref = summary([(1.0, 0.9), (1.0, 0.8), (1.0, 0.7)])
    # class 2 loses 0.1, 0.2, 0.0: mean -0.1, sd 0.1, s.e. 0.1 / sqrt(3); case order must not matter
    ours = summary([(1.0, 0.8), (1.0, 0.6), (1.0, 0.7)])
    ours["cases"] = ours["cases"][::-1]
    ours["cases"] = [{**c, "case": f"c{2 - i:02d}"} for i, c in enumerate(ours["cases"])]
    lines = paired_table([Model("ref"), Model("ours")], {"ref": ref, "ours": ours}, "ref")
    row = [c.strip() for c in lines[-1].split("|")[1:-1]]
    assert row[0] == "ours"
    assert row[2] == "0.7000"  # mean Dice of class 2
    assert row[5] == f"-0.1000 ± {0.1 / math.sqrt(3):.4f}"  # Δ Dice 2
    assert row[6] == f"-0.0500 ± {0.05 / math.sqrt(3):.4f}"  # Δ mean of the two classes
    assert row[7] == "2 / 3"  # cases whose mean fell by more than 0.01
    base_row = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert base_row[5] == "+0.0000 ± 0.0000"  # the reference against itself


def test_more_test_cases_come_after_the_datasets_own_cases(tmp_path, monkeypatch):
    from benchmarks import sauron_compression
    monkeypatch.setattr(sauron_compression, "CACHE", tmp_path)
    bench = Bench("demo", Run("3d_fullres", "cpu"), threads=1)
    folder = bench.more_test_cases(2)
    spec = bench.spec()
    first = spec.n_train + spec.n_test  # the demo set's own cases are 0 .. first - 1
    names = sorted(p.name for p in (folder / "labels").iterdir())
    assert names == [f"demo_{first:03d}.nii.gz", f"demo_{first + 1:03d}.nii.gz"]
    assert sorted(p.name for p in (folder / "images").iterdir()) == [n.replace(".nii", "_0000.nii") for n in names]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels" / names[0])))
    assert set(seg.ravel().tolist()) == {0, 1, 2}
    mtime = (folder / "labels" / names[0]).stat().st_mtime_ns
    assert bench.more_test_cases(2) == folder and (folder / "labels" / names[0]).stat().st_mtime_ns == mtime


def test_a_model_starts_from_or_matches_another_model_of_the_run_even_when_models_narrow_the_run(tmp_path,
                                                                                                  monkeypatch):
    from benchmarks import sauron_compression
    monkeypatch.setattr(sauron_compression, "CACHE", tmp_path)
    run = Run("2d", "nnunet", [Model("Trainer", "Trainer"), Model("pruned"),
                               Model("tuned", "Trainer", init_from="pruned"),
                               Model("scratch", "ScratchTrainer", match="pruned"),
                               Model("short", "ScratchTrainer", match="pruned", short=True)], epochs=40, iters=5)
    # the source narrowed away
    run.models = [m for m in run.models if m.name in ("Trainer", "tuned", "scratch", "short")]
    bench = Bench("toy64", run, threads=1)
    calls = []
    monkeypatch.setattr(bench, "sh", lambda cmd, model=None: calls.append((list(map(str, cmd)), model.name)))
    for m in run.models[1:]:
        bench.train(m, reuse=False)
    pruned = str(bench.model_dir(run.catalogue["pruned"]))
    assert pruned.endswith("2d_nnunet_40x5v10_pruned/Dataset002_Toy64/SauronTrainer__nnunet__2d")
    (tuned, _), (scratch, _), (short, _) = calls
    assert tuned[tuned.index("--init-from") + 1] == pruned and "--match" not in tuned
    assert tuned[tuned.index("--epochs") + 1] == str(run.init_epochs)  # the --init-from budget
    assert "_init150x5_tuned" in str(bench.model_dir(run.catalogue["tuned"]))
    assert scratch[scratch.index("--match") + 1] == pruned and "--init-from" not in scratch
    assert scratch[scratch.index("--epochs") + 1] == "40"
    # a from-scratch model given the --init-from budget: its epochs and iterations, and a folder of its own
    assert short[short.index("--epochs") + 1] == str(run.init_epochs) and "--init-from" not in short
    assert short[short.index("--iters") + 1] == str(run.init_iters)
    assert "_init150x5_short" in str(bench.model_dir(run.catalogue["short"]))


def test_narrowing_a_run_keeps_the_unpruned_model_and_the_models_the_chosen_ones_start_from_or_match():
    run = Run("2d", "nnunet", [Model("Trainer", "Trainer"), Model("pruned"), Model("other"), Model("unrelated"),
                               Model("tuned", "Trainer", init_from="pruned"),
                               Model("scratch", "ScratchTrainer", match="other")])
    run.select(["tuned", "scratch"])
    kept = [m.name for m in run.models]
    assert kept == ["Trainer", "pruned", "other", "tuned", "scratch"]
    assert set(run.catalogue) == {"Trainer", "pruned", "other", "unrelated", "tuned", "scratch"}
