r"""
Multi-task CTR models: one output per action, trained together (``multitask.py`` says which
actions, the loss and what ``predict`` returns).

ShareBottom
    Rich Caruana. "Multitask Learning." Machine Learning 28, 41-75 (1997): one shared bottom MLP
    over the embedded input, then one tower MLP and one logit per action.
MMoE
    Jiaqi Ma, Zhe Zhao, Xinyang Yi, Jilin Chen, Lichan Hong, Ed H. Chi. "Modeling Task
    Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts." KDD 2018:
    ``num_experts`` expert MLPs shared by every action; each action's gate (a linear layer and a
    softmax over the experts, from the input) mixes the experts' outputs for its tower.
PLE
    Hongyan Tang, Junning Liu, Ming Zhao, Xudong Gong. "Progressive Layered Extraction (PLE): A
    Novel Multi-Task Learning (MTL) Model for Personalized Recommendations." RecSys 2020:
    ``num_levels`` extraction levels; each level has ``num_specific_experts`` experts per action
    and ``num_shared_experts`` shared ones; an action's gate mixes its own and the shared experts
    (from its own input of the level), and below the last level a shared gate mixes every
    expert for the next level's shared input.
MMa4CTRMultiTask
    MMa4CTR (``model.py``; Huo, Jin and Liao 2024) with one output per action: the paper's MLP
    over the fused input (user profiles and the item's fused vector), its last hidden layer
    feeding one logit per action, each output's bias started at its action's base rate. The
    profiles are shared, not per action: they are MMa4CTR's train-only profiles of RecBole's
    ``label`` (the primary action, ``--protocol=challenge``: read_comment), so its input is
    exactly the single-task read_comment run's and a difference between them comes from the
    heads alone; per-action profiles would multiply the input width by the number of actions.

ShareBottom, MMoE and PLE are RecBole context-aware models: ``ContextRecommender`` embeds every
feature field (``embedding_size`` each; with ``+mm`` also ``item_mm``), and the embeddings,
flattened, are the input. Every size is in ``properties/model/<Model>.yaml``.
"""

import torch
from recbole.model.abstract_recommender import ContextRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.model.layers import MLPLayers
from torch import nn

from ..settings import setting
from .mma4ctr import MMa4CTR
from .tasks import action_of, loss_weights, MultiTaskError, task_fields


def _sizes(config, key: str, model: str, allow_empty: bool = False) -> list[int]:
    value = setting(config, key, f"properties/model/{model}.yaml")
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty) or any(
            isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in value):
        raise MultiTaskError(f"{key} must be a list of positive widths, got {value!r} (properties/model/{model}.yaml)")
    return list(value)


def _count(config, key: str, model: str, minimum: int = 1) -> int:
    value = setting(config, key, f"properties/model/{model}.yaml")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MultiTaskError(f"{key} must be an integer >= {minimum}, got {value!r} (properties/model/{model}.yaml)")
    return value


def primary_index(dataset, label: str, fields) -> int:
    """The action whose column equals RecBole's label on every training row (what ``predict`` scores)."""
    inter = dataset.inter_feat
    for index, field in enumerate(fields):
        if torch.equal(inter[field].float(), inter[label].float()):
            return index
    raise MultiTaskError(f"the label column {label!r} equals none of the task actions "
                         f"({', '.join(action_of(f) for f in fields)}) on the training rows: set label_action to one of "
                         f"them (predict scores that action for RecBole's evaluation)")


class MultiTaskOutputs:
    """The loss, ``predict`` and ``predict_actions`` of a model whose ``forward`` gives one logit
    per task column (``[batch, tasks]``)."""

    def _init_tasks(self, config, dataset, fields) -> None:
        self.task_fields = list(fields)
        self.actions = [action_of(field) for field in self.task_fields]
        self.primary = primary_index(dataset, config["LABEL_FIELD"], self.task_fields)
        weights = loss_weights(setting(config, "task_weights", "properties/model/<Model>.yaml"), self.actions)
        self.register_buffer("task_weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.task_loss = nn.BCEWithLogitsLoss(reduction="none")

    def task_labels(self, interaction) -> torch.Tensor:
        return torch.stack([interaction[field].float() for field in self.task_fields], dim=1)

    def calculate_loss(self, interaction):
        """sum_a w_a BCE(logit_a, y_a), each BCE the mean over the batch."""
        per_task = self.task_loss(self.forward(interaction), self.task_labels(interaction)).mean(dim=0)
        return (per_task * self.task_weights).sum()

    def predict(self, interaction):
        return torch.sigmoid(self.forward(interaction)[:, self.primary])

    def predict_actions(self, interaction):
        """``[batch, actions]`` probabilities, in ``self.actions`` order."""
        return torch.sigmoid(self.forward(interaction))


class MultiTaskContext(MultiTaskOutputs, ContextRecommender):
    """The embedded, flattened input of RecBole's context-aware models and one tower per action."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        fields = task_fields(config)
        overlap = [f for f in fields if f in (config["numerical_features"] or [])]
        if overlap:
            raise MultiTaskError(f"numerical_features lists the label column {overlap[0]}: a model must not read its "
                                 f"own labels as a feature")
        self._init_tasks(config, dataset, fields)
        name = type(self).__name__
        self.input_size = self.num_feature_field * self.embedding_size
        self.dropout_prob = float(setting(config, "dropout_prob", f"properties/model/{name}.yaml"))
        self.tower_sizes = _sizes(config, "tower_mlp_sizes", name, allow_empty=True)

    def towers(self, width: int) -> nn.ModuleList:
        """One ``MLP(tower_mlp_sizes) -> Linear(1)`` per action over ``width`` inputs."""
        return nn.ModuleList(nn.Sequential(MLPLayers([width] + self.tower_sizes, self.dropout_prob),
                                           nn.Linear(([width] + self.tower_sizes)[-1], 1)) for _ in self.task_fields)

    def experts(self, count: int, sizes) -> nn.ModuleList:
        return nn.ModuleList(MLPLayers([self.input_size] + list(sizes), self.dropout_prob) for _ in range(count))

    def flat_input(self, interaction) -> torch.Tensor:
        return self.concat_embed_input_fields(interaction).flatten(start_dim=1)

    def logits(self, per_task) -> torch.Tensor:
        return torch.cat([tower(h) for tower, h in zip(self.tower_layers, per_task)], dim=1)


def mix(gate: nn.Module, source: torch.Tensor, outputs: list) -> torch.Tensor:
    """softmax(gate(source)) over the experts' ``outputs`` ([batch, width] each): their weighted sum."""
    weights = torch.softmax(gate(source), dim=-1).unsqueeze(-1)          # [batch, experts, 1]
    return (torch.stack(outputs, dim=1) * weights).sum(dim=1)


class ShareBottom(MultiTaskContext):
    """Shared bottom MLP, one tower per action (Caruana 1997)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        sizes = _sizes(config, "bottom_mlp_sizes", "ShareBottom")
        self.bottom = MLPLayers([self.input_size] + sizes, self.dropout_prob)
        self.tower_layers = self.towers(sizes[-1])
        self.apply(xavier_normal_initialization)

    def forward(self, interaction):
        shared = self.bottom(self.flat_input(interaction))
        return self.logits([shared] * len(self.task_fields))


class MMoE(MultiTaskContext):
    """Multi-gate mixture of experts (Ma et al. 2018)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        count = _count(config, "num_experts", "MMoE")
        sizes = _sizes(config, "expert_mlp_sizes", "MMoE")
        self.expert_layers = self.experts(count, sizes)
        self.gates = nn.ModuleList(nn.Linear(self.input_size, count) for _ in self.task_fields)
        self.tower_layers = self.towers(sizes[-1])
        self.apply(xavier_normal_initialization)

    def forward(self, interaction):
        x = self.flat_input(interaction)
        outputs = [expert(x) for expert in self.expert_layers]
        return self.logits([mix(gate, x, outputs) for gate in self.gates])


class PLE(MultiTaskContext):
    """Progressive layered extraction (Tang et al. 2020): ``num_levels`` customized gate control levels."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        levels = _count(config, "num_levels", "PLE")
        shared = _count(config, "num_shared_experts", "PLE")
        specific = _count(config, "num_specific_experts", "PLE")
        sizes = _sizes(config, "expert_mlp_sizes", "PLE")
        tasks = len(self.task_fields)
        self.specific, self.shared, self.task_gates, self.shared_gates = (nn.ModuleList() for _ in range(4))
        width = self.input_size
        for level in range(levels):
            self.specific.append(nn.ModuleList(
                nn.ModuleList(MLPLayers([width] + sizes, self.dropout_prob) for _ in range(specific))
                for _ in range(tasks)))
            self.shared.append(nn.ModuleList(MLPLayers([width] + sizes, self.dropout_prob) for _ in range(shared)))
            self.task_gates.append(nn.ModuleList(nn.Linear(width, specific + shared) for _ in range(tasks)))
            if level < levels - 1:
                self.shared_gates.append(nn.Linear(width, tasks * specific + shared))
            width = sizes[-1]
        self.tower_layers = self.towers(width)
        self.apply(xavier_normal_initialization)

    def forward(self, interaction):
        x = self.flat_input(interaction)
        task_inputs, shared_input = [x] * len(self.task_fields), x
        for level in range(len(self.shared)):
            shared = [expert(shared_input) for expert in self.shared[level]]
            own = [[expert(h) for expert in experts] for experts, h in zip(self.specific[level], task_inputs)]
            next_inputs = [mix(gate, h, outputs + shared)
                           for gate, h, outputs in zip(self.task_gates[level], task_inputs, own)]
            if level < len(self.shared_gates):
                shared_input = mix(self.shared_gates[level], shared_input, [o for outputs in own for o in outputs] + shared)
            task_inputs = next_inputs
        return self.logits(task_inputs)


class MMa4CTRMultiTask(MultiTaskOutputs, MMa4CTR):
    """MMa4CTR's MLP over the fused input with one output per action (module docstring)."""

    def __init__(self, config, dataset):
        MMa4CTR.__init__(self, config, dataset)
        if self.loss_type != "bce":
            raise MultiTaskError(f"MMa4CTRMultiTask trains with loss_type bce (a BCE per action), got {self.loss_type!r}")
        self._init_tasks(config, dataset, self.label_fields(config))

    def label_fields(self, config) -> list[str]:
        return task_fields(config)

    def forward(self, interaction):
        return self.classifier(self.hidden(interaction))
