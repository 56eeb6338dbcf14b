"""Atomic writes: a failure leaves the old file or folder, never half of a new one."""
import pytest

from sauronnet.atomic import atomic_dir, write_text_atomic


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("two")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old folder, untouched
    assert list(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]


def test_write_text_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    write_text_atomic(target, "old")
    monkeypatch.setattr("pathlib.Path.write_text", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
