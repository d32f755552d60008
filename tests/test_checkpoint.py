import pytest
import torch

from egan_med.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from egan_med.engine.runtime import rng_state, set_rng_state


def _state(epoch: int) -> dict:
    return {"config": {"name": "t"}, "epoch": epoch, "rng": rng_state(), "models": {"w": torch.full((3,), float(epoch))}}


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    path = str(tmp_path / "last.pt")
    save_checkpoint(_state(1), path)
    save_checkpoint(_state(2), path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="unusable"):
        state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["models"]["w"], torch.ones(3))


def test_no_usable_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged.*missing"):
        load_checkpoint(str(path))


def test_checkpoints_load_with_weights_only_and_restore_rng(tmp_path):
    path = str(tmp_path / "c.pt")
    torch.manual_seed(3)
    save_checkpoint(_state(0), path)
    expected = torch.rand(4)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(path)["rng"])  # load_checkpoint uses torch.load(weights_only=True)
    assert torch.equal(torch.rand(4), expected)
    assert not (tmp_path / "c.pt.tmp").exists()
