import json

import pytest

from sauronnet.data.splits import ensure_splits, load_splits, make_splits


def test_folds_equal_nnunet_281():
    # nnunetv2.utilities.crossval_split.generate_crossval_split(ids, seed=12345, n_splits=5), nnU-Net v2.8.1
    ids = [f"case_{i:02d}" for i in range(10)]
    expected_val = [["case_00", "case_07"], ["case_03", "case_09"], ["case_04", "case_06"],
                    ["case_01", "case_08"], ["case_02", "case_05"]]
    splits = make_splits(list(reversed(ids)))  # sorted first, like nnU-Net's sorted identifiers
    assert list(sorted(s.val) for s in splits) == expected_val
    for s in splits:
        assert sorted(s.train + s.val) == ids and not set(s.train) & set(s.val)


def test_too_few_cases():
    with pytest.raises(ValueError, match="at least 5"):
        make_splits(["a", "b"])


def test_user_splits_are_kept(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    raw.mkdir()
    user = [{"train": ["a", "b"], "val": ["c"]}]
    (raw / "splits_final.json").write_text(json.dumps(user))
    path = ensure_splits(pre, raw, ["a", "b", "c", "d", "e"])
    assert json.loads(path.read_text()) == user
    assert ensure_splits(pre, raw, ["a", "b", "c", "d", "e"]) == path  # kept on a second run


def test_generated_and_validated(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    path = ensure_splits(tmp_path / "pre", tmp_path, ids)
    assert len(load_splits(path)) == 5
    with pytest.raises(ValueError, match="not training cases"):
        ensure_splits(tmp_path / "pre", tmp_path, ids[:3])


def test_no_splits_for_tiny_datasets(tmp_path):
    assert ensure_splits(tmp_path / "pre", tmp_path, ["a", "b"]) is None
