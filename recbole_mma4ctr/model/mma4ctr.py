r"""
MMa4CTR
################################################
Reference:
    Yufu Huo, Beihong Jin, Zhaoyi Liao. "Multi-modal information augmented model for
    micro-video recommendation." Journal of ZheJiang University (Engineering Science),
    2024, 58(6): 1142-1152.

The model is deliberately small: the user's multimodal profiles (``L + 1`` values per modality,
train-only; in training batches, by default, without the row being trained on: see
``MMa4CTRDataset``, ``train_profile``) are concatenated with the item's fused multimodal vector and
passed through an MLP ``in -> 128 -> 32 -> 4`` (Tanh after each layer), ``Linear(4, 1)`` and a
sigmoid. With the paper's WeChat sizes (3 x 22 + 128 = 194 inputs) it has 29,225 trainable
parameters, with TikTok's (3 x 22 + 103 = 169) 26,025.

One deliberate deviation, switchable: ``init_output_bias: base_rate`` (default) starts the
output bias at the log-odds of the training label rate instead of 0. With a rare label (WeChat's
weighted label: about 1 positive in 390) a zero-bias start spends thousands of Adam steps
pushing every logit down; since all inputs are non-negative, that push runs through the
weights too and can leave the ranking inverted (seen here: valid AUC 0.27 after 10 epochs on the
sample, 0.76 with the base-rate start). ``init_output_bias: zero`` gives the paper's start.

Two switches give the authors' released code instead of the paper's text (both off by default;
every setting is read from properties/model/MMa4CTR.yaml, none has a fallback here):

- ``mlp_hidden_size: released``: the widths their ``mlp.py`` picks by input size (101-200
  inputs: 256-128-64-16-4, 92,185 parameters at 194 inputs; ``RELEASED_HIDDEN_SIZES``) instead of
  a list such as the paper's ``[128, 32, 4]``;
- ``loss_type: batch_softmax``: their ``nn.CrossEntropyLoss()`` applied to the 1-d batch of
  sigmoid outputs with the 0/1 labels as targets, i.e. ``-sum_i y_i log softmax(p)_i`` with
  ``p = sigmoid(logit)`` and the softmax over the batch (one "sample" whose classes are the
  batch's rows; why the paper's MMa4CTR LogLoss is about 1.4). ``bce`` (default) is the
  pointwise log loss that CTR evaluation measures.

It is a RecBole ``ContextRecommender`` (pointwise, labeled evaluation), but it does not build
ContextRecommender's per-field embedding tables: the paper's model has no ID embeddings, and
creating them would change what is trained and the parameter count.
"""

import math

import torch
from torch import nn

from recbole.model.abstract_recommender import AbstractRecommender, ContextRecommender
from recbole.model.init import xavier_normal_initialization

from ..settings import setting

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU}
LOSS_TYPES = ("bce", "batch_softmax")
BIAS_INITS = ("base_rate", "zero")
SETTINGS_FILE = "properties/model/MMa4CTR.yaml"
# The authors' mlp.py: (fewest inputs, most inputs, hidden widths); Tanh after each, then Linear(4, 1).
RELEASED_HIDDEN_SIZES = (
    (5, 10, (8, 4)),
    (11, 30, (16, 4)),
    (31, 60, (32, 16, 4)),
    (61, 100, (64, 16, 4)),
    (101, 200, (256, 128, 64, 16, 4)),
    (201, 500, (256, 64, 16, 4)),
)


def released_hidden_sizes(n_inputs: int) -> list[int]:
    """The hidden widths the authors' released MLP uses for ``n_inputs`` inputs."""
    for low, high, sizes in RELEASED_HIDDEN_SIZES:
        if low <= n_inputs <= high:
            return list(sizes)
    raise ValueError(f"mlp_hidden_size released: the authors' MLP has no widths for {n_inputs} inputs "
                     f"(it covers {RELEASED_HIDDEN_SIZES[0][0]}-{RELEASED_HIDDEN_SIZES[-1][1]})")


def batch_softmax_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The authors' loss: cross-entropy of the batch's sigmoid outputs, softmaxed over the batch,
    against the 0/1 labels as class weights (``nn.CrossEntropyLoss()(sigmoid(logits), label)``
    on 1-d tensors)."""
    return -(label * torch.log_softmax(torch.sigmoid(logits), dim=0)).sum()


def _choice(config, key: str, choices) -> str:
    value = str(setting(config, key, SETTINGS_FILE)).lower()
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(sorted(choices))}, got {value!r}")
    return value


class MMa4CTR(ContextRecommender):
    """Multi-modal information augmented CTR model (an MLP over user profiles and item vectors)."""

    def __init__(self, config, dataset):
        # Skip ContextRecommender.__init__ on purpose (see the module docstring).
        AbstractRecommender.__init__(self)
        fields = getattr(dataset, "mm_feature_fields", None)
        if not fields:
            raise TypeError(
                "MMa4CTR needs an MMa4CTRDataset (user profiles and fused item vectors); "
                "create the dataset with recbole_mma4ctr.utils.create_dataset"
            )
        self.LABEL = config["LABEL_FIELD"]
        self.device = config["device"]
        self.feature_fields = list(fields)
        self.input_size = sum(int(dataset.field2seqlen[f]) for f in self.feature_fields)
        self.hidden_sizes = self._hidden_sizes(setting(config, "mlp_hidden_size", SETTINGS_FILE))
        activation = _choice(config, "activation", ACTIVATIONS)
        self.loss_type = _choice(config, "loss_type", LOSS_TYPES)

        layers, width = [], self.input_size
        for size in self.hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, len(self.label_fields(config)))
        self.sigmoid = nn.Sigmoid()
        # BCE on logits: the same loss as sigmoid + BCE, without its overflow at saturation.
        self.loss = nn.BCEWithLogitsLoss()
        self.apply(xavier_normal_initialization)
        if _choice(config, "init_output_bias", BIAS_INITS) == "base_rate":
            with torch.no_grad():
                self.classifier.bias.copy_(torch.tensor([self.base_rate_logit(dataset, field)
                                                         for field in self.label_fields(config)]))

    def _hidden_sizes(self, value) -> list[int]:
        """``released`` (the authors' widths for this input size) or a list of positive widths."""
        if isinstance(value, str) and value.lower() == "released":
            return released_hidden_sizes(self.input_size)
        if not isinstance(value, (list, tuple)) or not value or any(
                isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in value):
            raise ValueError(f"mlp_hidden_size must be 'released' or a list of positive widths, got {value!r}")
        return list(value)

    def label_fields(self, config) -> list[str]:
        """The label columns the outputs are trained on, one output each: RecBole's label
        (``MMa4CTRMultiTask``: one per action)."""
        return [config["LABEL_FIELD"]]

    @staticmethod
    def base_rate_logit(dataset, field: str) -> float:
        """Log-odds of the rate of label ``field`` in ``dataset`` (RecBole builds models on the train split)."""
        inter = getattr(dataset, "inter_feat", None)
        if inter is None or field not in inter or len(inter) == 0:
            return 0.0
        rate = float(inter[field].float().mean())
        rate = min(max(rate, 1e-6), 1 - 1e-6)
        return math.log(rate / (1 - rate))

    def concat_input(self, interaction):
        return torch.cat([interaction[field].float() for field in self.feature_fields], dim=1)

    def hidden(self, interaction):
        """Output of the last hidden layer (4 units by default), for maps of what the MLP learned."""
        return self.features(self.concat_input(interaction))

    def forward(self, interaction):
        return self.classifier(self.hidden(interaction)).squeeze(-1)

    def calculate_loss(self, interaction):
        label = interaction[self.LABEL].float()
        if self.loss_type == "batch_softmax":
            return batch_softmax_loss(self.forward(interaction), label)
        return self.loss(self.forward(interaction), label)

    def predict(self, interaction):
        return self.sigmoid(self.forward(interaction))
