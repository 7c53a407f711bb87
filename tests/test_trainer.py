"""The trainer: the paper's LR schedule, the validation interrupt, weights-only checkpoints."""

import hashlib

import pytest
import torch

from conftest import copy_atomic, run_settings


def make_trainer(tiny_atomic, tmp_path, **extra):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset, get_model, get_trainer

    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", "tw")
    settings = run_settings(tmp_path, data_path=tmp_path / "data", profile_length=5, train_batch_size=2048, **extra)
    config = build_config("MMa4CTR", "tw", None, settings)
    init_seed(config["seed"], config["reproducibility"])     # as run_cell: two trainers start alike
    train, valid, test = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("MMa4CTR")(config, train._dataset)
    return get_trainer(config["MODEL_TYPE"], "MMa4CTR")(config, model), train, valid, test


def weights_digest(model):
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_learning_rate_halves_every_five_epochs(tiny_atomic, tmp_path):
    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=7, valid_interrupt=False, stopping_step=100)
    trainer.fit(train, valid, saved=False)
    assert [round(h["lr"], 8) for h in trainer.history] == [0.001] * 5 + [0.0005] * 2


def test_schedule_can_be_switched_off(tiny_atomic, tmp_path):
    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=6, valid_interrupt=False,
                                            lr_halving_epochs=0, stopping_step=100)
    trainer.fit(train, valid, saved=False)
    assert [h["lr"] for h in trainer.history] == [0.001] * 6


def test_validation_interrupt_restores_halves_and_is_bounded(tiny_atomic, tmp_path):
    # a threshold no model can pass makes every epoch "fail": the retries must be bounded
    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=2, valid_interrupt_threshold=1.01,
                                            valid_interrupt_max_retries=2, lr_halving_epochs=0)
    starts = []
    original = trainer._train_epoch

    def recording(*args, **kwargs):
        starts.append(weights_digest(trainer.model))
        return original(*args, **kwargs)

    trainer._train_epoch = recording
    trainer.fit(train, valid, saved=False)
    tries = [(h["epoch"], round(h["lr"], 8), bool(h.get("interrupted"))) for h in trainer.history]
    assert tries == [(0, 0.001, True), (0, 0.0005, True), (0, 0.00025, False), (1, 0.00025, False)]
    # every retry of epoch 0 started from the weights before that epoch; epoch 1 from trained ones
    assert starts[0] == starts[1] == starts[2]
    assert starts[3] != starts[0]
    assert trainer.interrupts == 2
    assert trainer.interrupt is False  # retries used up: switched off for the rest of the run


def without_timing(history):
    return [{k: v for k, v in entry.items() if not k.endswith("seconds")} for entry in history]


def test_the_interrupt_fires_at_its_threshold_and_stays_quiet_just_below_it(tiny_atomic, tmp_path):
    # the validation AUCs of a run without the interrupt set the thresholds: "<=" fires at the lowest
    reference, train, valid, _ = make_trainer(tiny_atomic, tmp_path / "reference", epochs=2, valid_interrupt=False,
                                              lr_halving_epochs=0)
    reference.fit(train, valid, saved=False)
    aucs = [entry["valid"]["auc"] for entry in reference.history]
    first = 0 if aucs[0] <= aucs[1] else 1

    quiet, train, valid, _ = make_trainer(tiny_atomic, tmp_path / "quiet", epochs=2, lr_halving_epochs=0,
                                          valid_interrupt_threshold=min(aucs) - 1e-4)
    quiet.fit(train, valid, saved=False)
    assert quiet.interrupts == 0 and without_timing(quiet.history) == without_timing(reference.history)

    fired, train, valid, _ = make_trainer(tiny_atomic, tmp_path / "fired", epochs=2, lr_halving_epochs=0,
                                          valid_interrupt_threshold=min(aucs), valid_interrupt_max_retries=1)
    fired.fit(train, valid, saved=False)
    assert fired.interrupts >= 1
    retried = fired.history[first]
    assert retried["epoch"] == first and retried["interrupted"] and retried["valid"]["auc"] == min(aucs)
    assert fired.history[first + 1]["epoch"] == first and fired.history[first + 1]["lr"] == retried["lr"] / 2


def test_checkpoints_hold_tensors_only_and_reload_weights_only(tiny_atomic, tmp_path):
    trainer, train, valid, test = make_trainer(tiny_atomic, tmp_path, epochs=2)
    trainer.fit(train, valid, saved=True)
    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
    assert set(checkpoint) == {"model", "epoch", "cur_step", "best_valid_score", "state_dict", "other_parameter", "optimizer"}
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())
    assert checkpoint["other_parameter"] == {}  # MMa4CTR keeps nothing outside its state dict
    best = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(1.0)
    result = trainer.evaluate(test, load_best_model=True)
    assert {"auc", "gauc", "uauc", "logloss"} <= set(result)
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, best[name]), name


def test_a_trainer_resumed_from_its_saved_state_trains_on_as_the_uninterrupted_one(tiny_atomic, tmp_path):
    # the one resume path (Trainer.save_state / load_state, which run_cell and the engine use):
    # saved after epoch 1 of 3 by the fit callback, loaded into a new trainer that trains on
    uninterrupted, train, valid, _ = make_trainer(tiny_atomic, tmp_path / "first", epochs=3, lr_halving_epochs=2)
    saved = {}

    def keep(epoch_idx, valid_score):
        saved[epoch_idx + 1] = uninterrupted.save_state(train)

    uninterrupted.fit(train, valid, saved=True, callback_fn=keep)
    resumed, train2, valid2, _ = make_trainer(tiny_atomic, tmp_path / "again", epochs=3, lr_halving_epochs=2)
    assert resumed.load_state(saved[1], train2) is None
    assert resumed.start_epoch == 1 and resumed.steps == len(train2) and len(resumed.history) == 1
    resumed.fit(train2, valid2, saved=True)
    assert [entry["epoch"] for entry in resumed.history] == [0, 1, 2]
    assert [round(entry["lr"], 8) for entry in resumed.history] == [0.001, 0.001, 0.0005]
    assert without_timing(resumed.history) == without_timing(uninterrupted.history)
    assert weights_digest(resumed.model) == weights_digest(uninterrupted.model)
    assert resumed.best_valid_result == uninterrupted.best_valid_result and resumed.steps == 3 * len(train2)
    best = torch.load(resumed.saved_model_file, weights_only=True)["state_dict"]
    for name, tensor in torch.load(uninterrupted.saved_model_file, weights_only=True)["state_dict"].items():
        assert torch.equal(best[name], tensor), name


def test_a_best_validation_file_is_not_a_resume_state(tiny_atomic, tmp_path):
    from recbole_mma4ctr.errors import TrainingError

    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=1)
    trainer.fit(train, valid, saved=True)
    with pytest.raises(TrainingError, match="a best-validation checkpoint is not a resume state"):
        trainer.resume_checkpoint(trainer.saved_model_file)


def properties_copy(tmp_path, monkeypatch, edit):
    """A copy of properties/ with ``edit(folder)`` applied, used by build_config instead."""
    import shutil

    from conftest import REPO

    folder = tmp_path / "properties"
    shutil.copytree(REPO / "properties", folder)
    edit(folder)
    monkeypatch.setattr("recbole_mma4ctr.config.properties_dir", lambda: folder)
    return folder


def replace_line(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def test_a_yaml_default_change_reaches_the_trainer(tiny_atomic, tmp_path, monkeypatch):
    def edit(folder):
        replace_line(folder / "model" / "MMa4CTR.yaml", "lr_halving_epochs: 5 ", "lr_halving_epochs: 2 ")
        replace_line(folder / "model" / "MMa4CTR.yaml", "lr_decay: 0.5", "lr_decay: 0.25")

    properties_copy(tmp_path, monkeypatch, edit)
    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=3, valid_interrupt=False, stopping_step=100)
    assert (trainer.lr_halving_epochs, trainer.lr_decay) == (2, 0.25)
    trainer.fit(train, valid, saved=False)
    assert [round(h["lr"], 8) for h in trainer.history] == [0.001, 0.001, 0.00025]


def test_a_setting_missing_from_every_file_is_an_error_naming_it(tiny_atomic, tmp_path, monkeypatch):
    from recbole_mma4ctr.errors import SettingError

    def edit(folder):
        replace_line(folder / "overall.yaml", "valid_interrupt_max_retries: 3\n", "")
        replace_line(folder / "model" / "MMa4CTR.yaml", "valid_interrupt_max_retries: 3\n", "")

    properties_copy(tmp_path, monkeypatch, edit)
    with pytest.raises(SettingError, match="'valid_interrupt_max_retries' is missing: it belongs in properties/overall.yaml"):
        make_trainer(tiny_atomic, tmp_path, epochs=1)


def test_tensorboard_gets_the_train_loss_and_valid_score_of_every_epoch(tiny_atomic, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # RecBole writes log_tensorboard/<run>/ in the working folder
    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=2, valid_interrupt=False)
    trainer.fit(train, valid, saved=False)
    trainer.tensorboard.flush()
    runs = {path.parent for path in (tmp_path / "log_tensorboard").rglob("events.out.tfevents.*")}
    scalars = {}
    for run in runs:
        events = EventAccumulator(str(run))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in events.Scalars(tag)]
    assert [step for step, _ in scalars["Loss/Train"]] == [0, 1]
    assert [value for _, value in scalars["Loss/Train"]] == pytest.approx([h["train_loss"] for h in trainer.history])
    assert [value for _, value in scalars["Vaild_score"]] == pytest.approx([h["valid"]["auc"] for h in trainer.history])
    assert "hparam/best_valid_result" in scalars


def test_log_wandb_without_wandb_is_one_clear_line(tiny_atomic, tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ImportError) as error:
        make_trainer(tiny_atomic, tmp_path, epochs=1, log_wandb=True)
    message = str(error.value)
    assert "\n" not in message and "log_wandb: True needs the wandb package" in message and "pip install wandb" in message


class WithOtherParameters(torch.nn.Module):
    """RecBole's other_parameter protocol, with the kinds of values RecBole models keep there."""

    other_parameter_name = ["embedding_layer", "restore_user_e", "restore_item_e", "counts", "sizes"]

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding_layer = torch.nn.Embedding(5, 3)  # DIN / DIEN
        self.restore_user_e = torch.randn(4, 3)  # NGCF / LightGCN after evaluation
        self.restore_item_e = None  # ... and while training
        import numpy as np

        self.counts = np.arange(seed, seed + 6)
        self.sizes = [seed, 2.5, "x"]

    def other_parameter(self):
        return {key: getattr(self, key) for key in self.other_parameter_name}


@pytest.mark.unit
def test_other_parameter_is_saved_as_plain_data_and_loaded_back_weights_only(tmp_path):
    import numpy as np

    from recbole_mma4ctr.trainer import load_other_parameter, load_weights_only, plain_data

    saved = WithOtherParameters(seed=1)
    torch.save({"other_parameter": plain_data(saved.other_parameter(), "other_parameter")}, tmp_path / "c.pth")
    loaded = load_weights_only(tmp_path / "c.pth", "cpu")["other_parameter"]
    fresh = WithOtherParameters(seed=2)
    load_other_parameter(fresh, loaded)
    assert torch.equal(fresh.embedding_layer.weight, saved.embedding_layer.weight)
    assert isinstance(fresh.embedding_layer, torch.nn.Embedding)  # still the model's module
    assert torch.equal(fresh.restore_user_e, saved.restore_user_e) and fresh.restore_item_e is None
    assert isinstance(fresh.counts, np.ndarray) and fresh.counts.tolist() == list(range(1, 7))
    assert fresh.sizes == [1, 2.5, "x"]


@pytest.mark.unit
def test_other_parameter_that_is_not_plain_data_is_refused_by_name():
    import scipy.sparse as sp

    from recbole_mma4ctr.trainer import plain_data

    with pytest.raises(TypeError, match="other_parameter 'w' is a csr_matrix"):
        plain_data({"w": sp.csr_matrix((2, 2))}, "other_parameter")


def test_wandb_gets_what_recbole_logs_where_recbole_logs_it(tiny_atomic, tmp_path, monkeypatch):
    import importlib.machinery
    import types

    logged = []
    wandb = types.ModuleType("wandb")  # a stand-in that records what RecBole's WandbLogger sends
    wandb.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    wandb.run = None
    wandb.init = lambda project, config: setattr(wandb, "run", types.SimpleNamespace(summary={}))
    wandb.define_metric = lambda *args, **kwargs: None
    wandb.log = lambda metrics, commit=True: logged.append(metrics)
    monkeypatch.setitem(__import__("sys").modules, "wandb", wandb)
    monkeypatch.chdir(tmp_path)
    trainer, train, valid, test = make_trainer(tiny_atomic, tmp_path, epochs=2, valid_interrupt=False, log_wandb=True)
    trainer.fit(train, valid, saved=True)
    result = trainer.evaluate(test)
    assert [sorted(m) for m in logged] == [
        ["train/epoch", "train/train_loss", "train_step"], ["valid/auc", "valid/gauc", "valid/logloss", "valid/uauc", "valid_step"],
    ] * 2
    assert [m["train_step"] for m in logged[::2]] == [0, 1] and [m["valid_step"] for m in logged[1::2]] == [0, 1]
    assert [m["train/train_loss"] for m in logged[::2]] == pytest.approx([h["train_loss"] for h in trainer.history])
    assert wandb.run.summary == {f"eval/{k}": v for k, v in result.items()}
