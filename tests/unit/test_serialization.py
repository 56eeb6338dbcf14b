import json
from dataclasses import dataclass

import pytest

from sauronnet.fingerprint import Fingerprint, IntensityStats
from sauronnet.serialization import from_jsonable, load_dataclass, to_jsonable, write_json_atomic

STATS = IntensityStats(mean=1.0, median=2.0, std=3.0, min=-4.0, max=5.0, percentile_00_5=-3.5,
                       percentile_99_5=4.5)


@dataclass(frozen=True)
class Inner:
    a: int
    b: tuple[float, ...]


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    table: dict[int, tuple[tuple[int, ...], ...]]
    maybe: float | None = None


def test_round_trip_nested_types():
    obj = Outer("x", Inner(3, (1.5, 2.0)), {1: ((1, 2, 3),), 2: ()}, None)
    data = json.loads(json.dumps(to_jsonable(obj)))
    assert from_jsonable(Outer, data) == obj


def test_unknown_key_is_rejected_with_location():
    data = to_jsonable(Outer("x", Inner(3, (1.0,)), {}))
    data["inner"]["c"] = 1
    with pytest.raises(ValueError, match=r"plans.json.inner: unknown key\(s\) \['c'\]"):
        from_jsonable(Outer, data, where="plans.json")


def test_missing_key_is_rejected():
    data = to_jsonable(Outer("x", Inner(3, (1.0,)), {}))
    del data["inner"]["a"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['a'\]"):
        from_jsonable(Outer, data)


def test_defaulted_key_may_be_omitted():
    data = to_jsonable(Outer("x", Inner(3, (1.0,)), {}))
    del data["maybe"]
    assert from_jsonable(Outer, data).maybe is None


def test_wrong_kind_is_rejected():
    data = to_jsonable(Outer("x", Inner(3, (1.0,)), {}))
    data["inner"]["a"] = "three"
    with pytest.raises(ValueError, match="expected an integer"):
        from_jsonable(Outer, data)


def test_fingerprint_file_round_trip(tmp_path):
    fp = Fingerprint(("a", "b"), ((2.5, 1.0, 1.0), (3.0, 1.0, 1.0)), ((10, 20, 20), (11, 20, 21)), (STATS,), 0.8)
    write_json_atomic(tmp_path / "fp.json", fp)
    assert load_dataclass(Fingerprint, tmp_path / "fp.json") == fp
    assert list(p.name for p in tmp_path.iterdir()) == ["fp.json"]  # no temporary file left behind


def test_invalid_json_names_the_file(tmp_path):
    p = tmp_path / "plans.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="plans.json: not valid JSON"):
        load_dataclass(Fingerprint, p)
