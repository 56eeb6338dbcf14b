import pytest

from sauronnet.paths import Paths


def test_lookup_by_id_and_name(tmp_path):
    paths = Paths.under(tmp_path)
    (paths.raw / "Dataset004_Liver").mkdir(parents=True)
    assert paths.dataset_name("4") == "Dataset004_Liver"
    assert paths.dataset_name("004") == "Dataset004_Liver"
    assert paths.dataset_name("Dataset004_Liver") == "Dataset004_Liver"


def test_found_in_results_only(tmp_path):
    paths = Paths.under(tmp_path)
    (paths.results / "Dataset007_X").mkdir(parents=True)
    assert paths.dataset_name(7) == "Dataset007_X"


def test_missing_dataset_lists_available(tmp_path):
    paths = Paths.under(tmp_path)
    (paths.raw / "Dataset004_Liver").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="available: \\['Dataset004_Liver'\\]"):
        paths.dataset_name(5)


def test_ambiguous_id(tmp_path):
    paths = Paths.under(tmp_path)
    (paths.raw / "Dataset004_A").mkdir(parents=True)
    (paths.raw / "Dataset004_B").mkdir(parents=True)
    with pytest.raises(ValueError, match="ambiguous"):
        paths.dataset_name(4)


def test_malformed_task(tmp_path):
    with pytest.raises(ValueError, match="neither a dataset id"):
        Paths.under(tmp_path).dataset_name("liver")
