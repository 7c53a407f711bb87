"""torch_threads: the setting every run applies, and what ~ (auto) means."""

import pytest
import torch


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.unit
def test_apply_torch_threads_sets_torchs_intra_op_threads(restore_threads):
    from recbole_mma4ctr.threads import AUTO_THREADS, apply_torch_threads

    assert apply_torch_threads(2) == 2 and torch.get_num_threads() == 2
    assert apply_torch_threads(None) == AUTO_THREADS and torch.get_num_threads() == AUTO_THREADS


@pytest.mark.unit
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_torch_threads_are_refused_and_change_nothing(restore_threads, bad):
    from recbole_mma4ctr.threads import apply_torch_threads

    torch.set_num_threads(2)
    with pytest.raises(ValueError, match="torch_threads"):
        apply_torch_threads(bad)
    assert torch.get_num_threads() == 2


def test_the_default_comes_from_overall_yaml(tmp_path):
    from conftest import run_settings
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.settings import properties_dir, read_yaml
    from recbole_mma4ctr.threads import AUTO_THREADS, torch_threads

    written = read_yaml(properties_dir() / "overall.yaml")["torch_threads"]
    config = build_config("MMa4CTR", "wechat", None, run_settings(tmp_path))
    assert config["torch_threads"] == written       # overall.yaml's value, unchanged by any other layer
    assert torch_threads(config["torch_threads"]) == (AUTO_THREADS if written is None else written)
    assert build_config("MMa4CTR", "wechat", None, run_settings(tmp_path, torch_threads=3))["torch_threads"] == 3
