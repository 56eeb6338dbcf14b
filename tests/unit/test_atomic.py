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


def test_a_second_holder_of_the_lock_is_refused(tmp_path):
    import subprocess
    import sys

    from sauronnet.atomic import exclusive_lock
    folder = tmp_path / "fold_0"
    with exclusive_lock(folder, "training this fold"):
        other = subprocess.run([sys.executable, "-c", "from sauronnet.atomic import exclusive_lock\n"
                                f"with exclusive_lock({str(folder)!r}, 'training this fold'): pass"],
                               capture_output=True, text=True)
        assert other.returncode != 0 and "already training this fold" in other.stderr
    assert list(folder.iterdir()) == []  # no lock file left behind
    with exclusive_lock(folder, "training this fold"):  # released: the next run may take it
        pass


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    import torch

    from sauronnet.checkpoint import load_checkpoint, save_checkpoint
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint({"format": 1, "epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(10)  # half-written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        save_checkpoint({"format": 1, "epoch": 2, "w": torch.zeros(3)}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth"]
