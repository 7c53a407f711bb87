"""Multi-task models: which they are, which action columns they read, and what their record holds.

The models themselves (``ShareBottom``, ``MMoE``, ``PLE``, ``MMa4CTRMultiTask``) are in
``multitask_models.py``; this module is the part the lookups, the run and the challenge need.

Data: a converter run with ``action_labels: true`` writes, beside RecBole's ``label`` column (the
converter's ``label_action``), every action as a 0/1 column ``label_<action>``
(``prepare.atomic.action_label_field``). A multi-task model trains one output per action of
``task_actions`` (``all``: every ``label_<action>`` column of the ``.inter``, in file order; or a
list of action names), with the loss ``sum_a w_a BCE(logit_a, y_a)`` (``task_weights``: ``equal``,
every w_a = 1, or a mapping action -> weight). ``predict`` returns the score of the *primary*
action: the one whose column equals ``label`` on every training row, so RecBole's single-label
evaluation (valid metric, early stopping, the record's ``test``) scores the action the file
names as its label; ``predict_actions`` returns every action's score.

The record of a multi-task run (:func:`action_results`) holds, per action, AUC, uAUC (with the
users counted and dropped) and the digest of the scored test rows with that action as the label
(``record.scored_rows_digest``), which equals the digest of a single-task run on the same rows
with that action as its label; with challenge weights also the challenge score.
"""

from __future__ import annotations

from ..errors import MissingInputError, UsageError
from ..prepare.atomic import action_label_field, ACTION_LABEL_PREFIX
from ..record import scored_rows_digest
from ..settings import setting
from ..stats import challenge_score, uauc_users, weighted_auc
from .feature_fair import split_name

CONTEXT_MODELS = ("ShareBottom", "MMoE", "PLE")      # RecBole context-aware models (embed every feature)
MULTITASK_MODELS = CONTEXT_MODELS + ("MMa4CTRMultiTask",)
SINGLE_TASK_OF = {"MMa4CTRMultiTask": "MMa4CTR"}     # whose settings (properties/model/<it>.yaml) it shares
SETTINGS_NOTE = "properties/model/<Model>.yaml (task_actions)"


class MultiTaskError(UsageError):
    """A multi-task model asked for actions its interaction file does not hold (or the like)."""


def is_multitask(model_name: str) -> bool:
    """``MMoE``, ``PLE+mm`` ...: a model that trains one output per action."""
    return split_name(model_name)[0] in MULTITASK_MODELS


def inter_path(config) -> str:
    """The ``.inter`` file RecBole reads for ``config`` (its ``data_path`` already holds the dataset)."""
    import os

    return os.path.join(config["data_path"], f"{config['dataset']}.inter")


def action_fields_in(path: str) -> list[str]:
    """The ``label_<action>`` columns of an atomic ``.inter`` file's header, in file order."""

    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().rstrip("\n").split("\t")
    except FileNotFoundError:
        raise MissingInputError(f"{path}: file not found (a multi-task model reads its action columns)") from None
    return [column.split(":", 1)[0] for column in header if column.startswith(ACTION_LABEL_PREFIX)]


def task_fields(config) -> list[str]:
    """The columns a multi-task model trains on: ``task_actions`` (``all`` or a list of actions)
    checked against the ``.inter`` header; an error names the file and the missing column."""

    path = inter_path(config)
    present = action_fields_in(path)
    wanted = setting(config, "task_actions", SETTINGS_NOTE)
    if not present:
        raise MultiTaskError(f"{path}: line 1: no action columns ({ACTION_LABEL_PREFIX}<action>): a multi-task "
                             f"model needs them; convert with --action_labels=true")
    if isinstance(wanted, str) and wanted == "all":
        return present
    if not isinstance(wanted, (list, tuple)) or not wanted or len(set(wanted)) != len(wanted):
        raise MultiTaskError(f"task_actions must be 'all' or a list of distinct actions, got {wanted!r}")
    fields = [action_label_field(str(action)) for action in wanted]
    missing = [field for field in fields if field not in present]
    if missing:
        raise MultiTaskError(f"{path}: line 1: field {missing[0]} is missing (task_actions {list(wanted)}; the file "
                             f"has {', '.join(present)})")
    return fields


def load_action_columns(config) -> None:
    """Add the task columns to ``load_col['inter']`` (the dataset yamls list the single-label
    columns only), so the dataset carries every action the model trains on."""
    fields = task_fields(config)
    load_col = config["load_col"]
    if load_col is None or load_col.get("inter") in (None, "*"):
        return
    config["load_col"] = {**load_col, "inter": list(load_col["inter"]) + [f for f in fields if f not in load_col["inter"]]}


def action_of(field: str) -> str:
    return field[len(ACTION_LABEL_PREFIX):]


def loss_weights(value, actions) -> list[float]:
    """``task_weights``: ``equal`` (1 per action) or a mapping of every action to a positive weight."""
    if isinstance(value, str) and value == "equal":
        return [1.0] * len(actions)
    if not isinstance(value, dict) or set(map(str, value)) != set(actions) or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in value.values()):
        raise MultiTaskError(f"task_weights must be 'equal' or map each of {', '.join(actions)} to a positive weight, "
                             f"got {value!r}")
    return [float(value[action]) for action in actions]


def action_predictions(model, test_data, device) -> dict:
    """Every action's test scores and labels, ``score_<action>`` and ``label_<action>``, in the
    order the final evaluation scored the rows (the test loader is not shuffled)."""
    import numpy as np
    import torch

    scores, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction = (batch[0] if isinstance(batch, tuple) else batch).to(device)
            scores.append(model.predict_actions(interaction).cpu())
            labels.append(model.task_labels(interaction).cpu())
    scores, labels = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    out = {}
    for index, (action, field) in enumerate(zip(model.actions, model.task_fields)):
        out[f"score_{action}"] = scores[:, index]
        out[field] = labels[:, index].astype(np.float32)
    return out


def action_view(predictions: dict, action: str) -> dict:
    """A multi-task run's predictions seen as a single-task run's on ``action``: its score and label."""
    return {**predictions, "score": predictions[f"score_{action}"], "label": predictions[action_label_field(action)]}


def action_results(predictions: dict, actions, task: dict | None = None) -> dict:
    """Per action of a multi-task run's test predictions (``score_<action>``, ``label_<action>``,
    ``user`` ...): AUC, uAUC with the users counted and dropped, and the scored rows' digest with
    that action as the label; plus the challenge score where a challenge ``task`` (``metric``,
    ``weights``; ``challenge.Task.describe``) is given."""

    results = {}
    for action in actions:
        view = action_view(predictions, action)
        auc = weighted_auc(view["score"], view["label"])
        results[action] = {"auc": None if auc != auc else auc, **uauc_users(view["score"], view["label"], view["user"]),
                           "rows": int(len(view["score"])), "positives": int((view["label"] > 0.5).sum()),
                           "test_rows": scored_rows_digest(view)}
    out = {"test_by_action": results}
    if task:
        out["challenge_score"] = challenge_score({a: results[a][task["metric"]] for a in task["weights"]},
                                                 task["weights"])
    return out
