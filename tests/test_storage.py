"""DiskBudget: a folder's bytes as the disk counts them, charges refused past the budget, space freed by deletion."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from search.web.disk_budget import DiskBudget, StorageFullError, held_bytes, prune_empty_folders


def du_bytes(folder: Path) -> int:
    """`du`'s count of the folder's disk use, in bytes (an independent measure)."""
    return int(subprocess.run(["du", "-sB1", str(folder)], capture_output=True, text=True, check=True)
               .stdout.split()[0])


def test_held_bytes_counts_files_folders_and_blocks(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tiny").write_bytes(b"x")  # one byte: a whole block on disk
    (tmp_path / "big").write_bytes(b"y" * 100_000)
    held = held_bytes(tmp_path)
    assert held >= 100_001 + 4096  # at least the bytes and the tiny file's block
    assert held + 4096 >= du_bytes(tmp_path)  # no less than du counts (du also counts the folder itself)
    assert held_bytes(tmp_path / "missing") == 0


def test_charges_past_the_budget_are_refused_and_not_counted(tmp_path: Path) -> None:
    budget = DiskBudget(tmp_path, 10_000, rescan_s=3600)
    budget.measure_if_stale()
    budget.charge(6000)
    with pytest.raises(StorageFullError, match=r"try again in a few minutes"):
        budget.charge(5000)
    assert budget.held() == 6000 + held_bytes(tmp_path)
    budget.charge(4000 - held_bytes(tmp_path))  # exactly to the budget
    with pytest.raises(StorageFullError):
        budget.check(1)


def test_a_new_measure_sees_files_written_and_deleted(tmp_path: Path) -> None:
    budget = DiskBudget(tmp_path, 50_000, rescan_s=0.0)
    (tmp_path / "upload").write_bytes(b"z" * 45_000)  # written without a charge: gradio's own copies
    budget.measure_if_stale()
    with pytest.raises(StorageFullError):
        budget.charge(10_000)
    (tmp_path / "upload").unlink()  # gradio's cache deletion
    budget.measure_if_stale()
    budget.charge(10_000)
    assert budget.held() == 10_000


def test_a_fresh_measure_is_not_redone(tmp_path: Path) -> None:
    budget = DiskBudget(tmp_path, 50_000, rescan_s=3600)
    budget.measure_if_stale()
    (tmp_path / "later").write_bytes(b"z" * 45_000)
    budget.measure_if_stale()
    budget.charge(10_000)  # the file is not seen until the measure is rescan_s old
    assert not budget.stale()


def test_only_top_level_folders_long_empty_are_pruned(tmp_path: Path) -> None:
    old, new, full = tmp_path / "old", tmp_path / "new", tmp_path / "full"
    for folder in (old, new, full, old.parent / "deep"):
        folder.mkdir()
    (full / "kept.png").write_bytes(b"p")
    (tmp_path / "deep" / "inner").mkdir()
    hour_ago = time.time() - 3600
    for path in (old, full, tmp_path / "deep"):
        os.utime(path, (hour_ago, hour_ago))
    prune_empty_folders(tmp_path, 60)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["deep", "full", "new"]
    assert (full / "kept.png").exists() and (tmp_path / "deep" / "inner").is_dir()
