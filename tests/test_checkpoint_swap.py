"""PPO checkpoints survive a crash at any step of their swap: `--resume` always finds a complete one, the newest."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.simic.ppo import train
from esper.simic.ppo.train import save_checkpoint, adopt_latest_checkpoint, latest_checkpoint


class FakeAlgo:
    """What save_checkpoint needs of an RLlib Algorithm: save_to_path writes a state folder."""

    def __init__(self, state: str) -> None:
        self.state = state

    def save_to_path(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "state.txt").write_text(self.state)


class Crash(Exception):
    pass


def _state(folder: Path | None) -> str | None:
    return None if folder is None else (folder / "state.txt").read_text()


# The steps of a save, in order; a crash is injected right before each.
STEPS = ["save_to_path", "write_marker", "rename_final_to_old", "rename_tmp_to_final", "rmtree_old"]


def _crash_before(step: str, monkeypatch) -> None:
    calls = {"rename": 0, "rmtree": 0}
    real_rename, real_rmtree, real_write = Path.rename, train.shutil.rmtree, Path.write_text

    def rename(self, target):
        calls["rename"] += 1
        if (step, calls["rename"]) in (("rename_final_to_old", 1), ("rename_tmp_to_final", 2)):
            raise Crash(step)
        return real_rename(self, target)

    def rmtree(path, *args, **kwargs):
        calls["rmtree"] += 1
        if step == "rmtree_old" and calls["rmtree"] == 3:  # tmp (start), old (before the swap), old (after)
            raise Crash(step)
        return real_rmtree(path, *args, **kwargs)

    def write_text(self, text, *args, **kwargs):
        if step == "write_marker" and self.name == train.ESPER_ITERATION_FILE:
            raise Crash(step)
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(train.shutil, "rmtree", rmtree)
    monkeypatch.setattr(Path, "write_text", write_text)
    def save_half(self, path):
        Path(path).mkdir(parents=True)
        raise Crash(step)

    if step == "save_to_path":
        monkeypatch.setattr(FakeAlgo, "save_to_path", save_half)


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_of_the_swap_leaves_a_complete_checkpoint(step, tmp_path, monkeypatch):
    save_checkpoint(FakeAlgo("iteration 1"), tmp_path, 1)
    with monkeypatch.context() as m:
        _crash_before(step, m)
        with pytest.raises(Crash):
            save_checkpoint(FakeAlgo("iteration 2"), tmp_path, 2)
    found = latest_checkpoint(tmp_path)
    assert found is not None, f"crash before {step}: nothing to resume from ({sorted(p.name for p in tmp_path.iterdir())})"
    # before the new state is complete the old one is used; once it is complete, the new one
    expected = "iteration 1" if step in ("save_to_path", "write_marker") else "iteration 2"
    assert _state(found) == expected, (step, found)
    # and the next save after the crash works and leaves one checkpoint folder
    save_checkpoint(FakeAlgo("iteration 3"), tmp_path, 3)
    assert _state(latest_checkpoint(tmp_path)) == "iteration 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


@pytest.mark.parametrize("step", STEPS)
def test_resuming_after_a_crash_keeps_the_newest_state_through_the_next_crash(step, tmp_path, monkeypatch):
    """--resume adopts the newest complete checkpoint as checkpoint/; a crash early in the next save (which starts
    by deleting checkpoint.tmp/) still leaves that state."""
    save_checkpoint(FakeAlgo("iteration 1"), tmp_path, 1)
    with monkeypatch.context() as m:
        _crash_before(step, m)
        with pytest.raises(Crash):
            save_checkpoint(FakeAlgo("iteration 2"), tmp_path, 2)
    newest = _state(latest_checkpoint(tmp_path))
    assert adopt_latest_checkpoint(tmp_path) == tmp_path / "checkpoint"
    assert _state(tmp_path / "checkpoint") == newest
    with monkeypatch.context() as m:
        _crash_before("save_to_path", m)
        with pytest.raises(Crash):
            save_checkpoint(FakeAlgo("iteration 3"), tmp_path, 3)
    assert _state(latest_checkpoint(tmp_path)) == newest


def test_no_checkpoint_and_incomplete_ones_are_not_resumable(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint").mkdir()  # a folder without its marker is not a complete checkpoint
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint" / train.ESPER_ITERATION_FILE).write_text("")
    assert latest_checkpoint(tmp_path) is None
