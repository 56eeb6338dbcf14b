import numpy as np
import pytest

from sauronnet.data.augmentation import augmentation_plan, enlarged_patch_size, training_transforms
from sauronnet.data.loader import BatchStream, PatchSampler, WaitTimer, crop_patch, sample_seed
from sauronnet.preprocessing.preprocess import config_folder


def _folder(paths):
    return config_folder(paths.preprocessed / "Dataset001_Demo", "cpu", "3d_fullres")


def _ids(folder):
    return sorted(p.name[:-5] for p in folder.glob("*.json"))


def test_crop_patch_pads_data_with_zero_and_seg_with_minus_one():
    data = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    seg = np.ones((1, 4, 4), np.int8)
    d, s = crop_patch(data, seg, [-1, 2], [3, 3])
    assert d.shape == (1, 3, 3) and s.shape == (1, 3, 3)
    np.testing.assert_array_equal(d[0], [[0, 0, 0], [2, 3, 0], [6, 7, 0]])
    np.testing.assert_array_equal(s[0], [[-1, -1, -1], [1, 1, -1], [1, 1, -1]])


@pytest.mark.parametrize("batch_size, forced", [(2, [False, True]), (3, [False, False, True]),
                                                (4, [False, False, False, True]), (12, [False] * 8 + [True] * 4)])
def test_which_samples_are_forced_to_foreground(batch_size, forced):
    s = PatchSampler.__new__(PatchSampler)
    s.batch_size, s.oversample_foreground = batch_size, 0.33
    assert list(s.force_foreground(i) for i in range(batch_size)) == forced


def test_oversampling_puts_foreground_in_the_required_share(small_demo_paths):
    folder = _folder(small_demo_paths)
    # small patches, so a random patch often misses the structures
    sampler = PatchSampler(folder, _ids(folder), (8, 12, 12), batch_size=3)
    rng = np.random.RandomState(0)
    forced_hits, hits, n = 0, 0, 60
    for _ in range(n):
        batch = sampler.sample(rng)
        fg = [(s > 0).any() for s in batch["seg"]]
        forced_hits += fg[2]
        hits += sum(fg)
    assert forced_hits == n  # every forced sample contains foreground
    assert hits / (3 * n) >= 0.33


def test_2d_sampling_takes_slices(small_demo_paths):
    folder = _folder(small_demo_paths)
    batch = PatchSampler(folder, _ids(folder), (20, 24), batch_size=2).sample(np.random.RandomState(1))
    assert batch["data"].shape == (2, 1, 20, 24) and batch["seg"].shape == (2, 1, 20, 24)
    assert (batch["seg"][1] > 0).any()


def test_batches_depend_only_on_seed_epoch_and_index(small_demo_paths):
    folder = _folder(small_demo_paths)
    sampler = PatchSampler(folder, _ids(folder), (8, 16, 16), batch_size=2)
    with BatchStream(sampler, None, seed=7, num_workers=0) as a, BatchStream(sampler, None, seed=7,
                                                                             num_workers=1) as b:
        first = list(a.batches(epoch=3, count=4))
        second = list(b.batches(epoch=3, count=4))
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x["data"], y["data"])
        assert x["keys"] == y["keys"]
    assert not np.array_equal(first[0]["data"], first[1]["data"])
    seeds = {sample_seed(7, 3, 0, 0), sample_seed(7, 4, 0, 0), sample_seed(8, 3, 0, 0), sample_seed(7, 3, 1, 0),
             sample_seed(7, 3, 0, 1), sample_seed(7, 3, 0, 0, stream=1)}
    assert len(seeds) == 6


def test_ranks_drawing_their_positions_together_draw_the_single_process_batch(small_demo_paths):
    """A distributed run's ranks each draw their share of the global batch; concatenated, the shares are the
    batch one process draws, augmentation included (foreground forcing too: it depends on the global position)."""
    folder = _folder(small_demo_paths)
    patch = (8, 16, 16)
    aug = augmentation_plan(patch)
    sampler = PatchSampler(folder, _ids(folder), enlarged_patch_size(patch, aug), batch_size=3,
                           oversample_foreground=0.5)
    t = training_transforms(patch, aug)
    with BatchStream(sampler, t, seed=5, num_workers=0) as whole, \
            BatchStream(sampler, t, seed=5, num_workers=0, positions=[0, 1]) as rank0, \
            BatchStream(sampler, t, seed=5, num_workers=0, positions=[2]) as rank1:
        for w, a, b in zip(whole.batches(2, 3), rank0.batches(2, 3), rank1.batches(2, 3)):
            np.testing.assert_array_equal(w["data"], np.concatenate([a["data"], b["data"]]))
            np.testing.assert_array_equal(w["seg"], np.concatenate([a["seg"], b["seg"]]))
            assert w["keys"] == a["keys"] + b["keys"]
            assert (b["seg"] > 0).any()  # position 2 of 3 is forced to foreground
    with pytest.raises(ValueError, match="subset"):
        BatchStream(sampler, None, seed=5, num_workers=0, positions=[3])


def test_wait_timer_counts_only_the_time_spent_waiting_for_items():
    import time

    def slow(n, delay):
        for i in range(n):
            time.sleep(delay)
            yield i

    timer = WaitTimer(slow(3, 0.05))
    items = []
    for item in timer:
        items.append(item)
        time.sleep(0.1)  # the consumer's work is not waiting
    assert items == [0, 1, 2]
    assert 0.15 <= timer.seconds < 0.3
