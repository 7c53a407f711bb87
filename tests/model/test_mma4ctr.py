"""MMa4CTR's architecture: the paper's parameter counts and a working forward/loss/predict."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recbole_mma4ctr.settings import properties_dir, read_yaml
from recbole_mma4ctr.errors import SettingError
from recbole_mma4ctr.model.mma4ctr import MMa4CTR

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)


def fake_dataset(item_dims, profile_length=21, modalities=("visual", "acoustic", "textual")):
    fields = [f"profile_{m}" for m in modalities] + ["item_mm"]
    seqlen = {f"profile_{m}": profile_length + 1 for m in modalities}
    seqlen["item_mm"] = item_dims
    return SimpleNamespace(mm_feature_fields=fields, field2seqlen=seqlen)


# The model reads its settings from properties/model/MMa4CTR.yaml (no fallbacks of its own).
CONFIG = {**read_yaml(properties_dir() / "model" / "MMa4CTR.yaml"), "LABEL_FIELD": "label",
          "device": torch.device("cpu")}


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("item_dims, inputs, expected", [(128, 194, 29_225), (103, 169, 26_025)])
def test_paper_parameter_counts(item_dims, inputs, expected):
    model = MMa4CTR(CONFIG, fake_dataset(item_dims))
    assert model.input_size == inputs
    assert trainable(model) == expected
    # in -> 128 -> 32 -> 4 with Tanh, then Linear(4, 1)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(inputs, 128), (128, 32), (32, 4), (4, 1)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.modules()) == 3


def test_forward_loss_predict_shapes_and_probabilities():
    model = MMa4CTR(CONFIG, fake_dataset(10, profile_length=3))
    batch = {f"profile_{m}": torch.rand(5, 4) for m in ("visual", "acoustic", "textual")}
    batch["item_mm"] = torch.rand(5, 10)
    batch["label"] = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    probabilities = model.predict(batch)
    assert probabilities.shape == (5,)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    loss = model.calculate_loss(batch)
    expected = torch.nn.functional.binary_cross_entropy(probabilities, batch["label"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.hidden(batch).shape == (5, 4)


def by_hand(model, batch, order):
    """The paper's network in numpy on the model's own weights: the fields concatenated in ``order``,
    then tanh(x W^T + b) per hidden layer, the output layer, and the sigmoid."""
    x = np.hstack([batch[field].numpy().astype(np.float64) for field in order])
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for layer in linears[:-1]:
        x = np.tanh(x @ layer.weight.detach().numpy().T.astype(np.float64) + layer.bias.detach().numpy())
    hidden = x
    logit = (x @ linears[-1].weight.detach().numpy().T.astype(np.float64) + linears[-1].bias.detach().numpy())[:, 0]
    return hidden, logit, 1 / (1 + np.exp(-logit))


@pytest.mark.parametrize("sizes", [[128, 32, 4], "released"])
def test_forward_and_losses_are_the_papers_network_by_hand(sizes):
    torch.manual_seed(3)
    model = MMa4CTR({**CONFIG, "mlp_hidden_size": sizes}, fake_dataset(128))
    generator = torch.Generator().manual_seed(4)
    order = [f"profile_{m}" for m in ("visual", "acoustic", "textual")] + ["item_mm"]
    # the item's vector first in the batch: the input order is the dataset's field order, not the batch's
    batch = {"item_mm": torch.rand(6, 128, generator=generator)}
    batch.update({field: torch.rand(6, 22, generator=generator) for field in order[:3]})
    batch["label"] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    hidden, logit, probability = by_hand(model, batch, order)
    assert hidden.shape == (6, 4)
    np.testing.assert_allclose(model.hidden(batch).detach().numpy(), hidden, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.forward(batch).detach().numpy(), logit, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.predict(batch).detach().numpy(), probability, rtol=0, atol=1e-6)
    y = batch["label"].numpy()
    bce = -np.mean(y * np.log(probability) + (1 - y) * np.log(1 - probability))
    assert model.calculate_loss(batch).item() == pytest.approx(bce, abs=1e-5)
    # the authors' loss: -sum_i y_i log softmax(p)_i, the softmax over the batch's sigmoid outputs
    model.loss_type = "batch_softmax"
    softmax = np.exp(probability) / np.exp(probability).sum()
    assert model.calculate_loss(batch).item() == pytest.approx(-np.sum(y * np.log(softmax)), abs=1e-5)


def test_refuses_a_dataset_without_multimodal_fields():
    with pytest.raises(TypeError, match="MMa4CTRDataset"):
        MMa4CTR(CONFIG, SimpleNamespace())


def test_output_bias_starts_at_the_training_label_log_odds():
    dataset = fake_dataset(10, profile_length=3)
    dataset.inter_feat = {"label": torch.tensor([1.0, 0.0, 0.0, 0.0])}
    model = MMa4CTR(CONFIG, dataset)
    assert model.classifier.bias.item() == pytest.approx(math.log(0.25 / 0.75), rel=1e-6)
    paper = {**CONFIG, "init_output_bias": "zero"}
    assert MMa4CTR(paper, dataset).classifier.bias.item() == 0.0


def test_a_missing_setting_names_the_file_that_should_hold_it():
    config = {key: value for key, value in CONFIG.items() if key != "loss_type"}
    with pytest.raises(SettingError, match="loss_type.*properties/model/MMa4CTR.yaml"):
        MMa4CTR(config, fake_dataset(128))
