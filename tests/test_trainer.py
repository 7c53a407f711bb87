"""The trainer: the paper's LR schedule, the validation interrupt, weights-only checkpoints."""

import hashlib

import pytest
import torch

from conftest import copy_atomic, run_settings


def make_trainer(tiny_atomic, tmp_path, **extra):
    from recbole.data import data_preparation

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset, get_model, get_trainer

    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", "tw")
    settings = run_settings(tmp_path, data_path=tmp_path / "data", profile_length=5, train_batch_size=2048, **extra)
    config = build_config("MMa4CTR", "tw", None, settings)
    train, valid, test = data_preparation(config, create_dataset(config))
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


def test_interrupt_stays_quiet_when_validation_auc_is_above_threshold(tiny_atomic, tmp_path):
    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=2, valid_interrupt_threshold=0.0)
    trainer.fit(train, valid, saved=False)
    assert trainer.interrupts == 0 and len(trainer.history) == 2


def test_checkpoints_hold_tensors_only_and_reload_weights_only(tiny_atomic, tmp_path):
    trainer, train, valid, test = make_trainer(tiny_atomic, tmp_path, epochs=2)
    trainer.fit(train, valid, saved=True)
    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
    assert set(checkpoint) == {"model", "epoch", "cur_step", "best_valid_score", "state_dict", "optimizer"}
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())
    best = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(1.0)
    result = trainer.evaluate(test, load_best_model=True)
    assert {"auc", "gauc", "uauc", "logloss"} <= set(result)
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, best[name]), name


def test_resume_from_a_checkpoint(tiny_atomic, tmp_path):
    trainer, train, valid, _ = make_trainer(tiny_atomic, tmp_path, epochs=2)
    trainer.fit(train, valid, saved=True)
    again, train2, valid2, _ = make_trainer(tiny_atomic, tmp_path / "again", epochs=3)
    again.resume_checkpoint(trainer.saved_model_file)
    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
    assert again.start_epoch == checkpoint["epoch"] + 1
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][name])
