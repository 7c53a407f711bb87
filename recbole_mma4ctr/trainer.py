"""Trainer: RecBole's Trainer with safe checkpoints, the paper's LR schedule and validation interrupt.

Three things differ from ``recbole.trainer.Trainer`` (besides the step budget, the stop on constant
scores and the resume state, below):

1. Checkpoints hold tensors and plain data only (state dict, optimizer state, epoch, score, and
   RecBole's ``other_parameter``: modules as their state dicts, tensors, numbers, lists) and are
   read back with ``torch.load(weights_only=True)``. RecBole's own checkpoint pickles the whole
   Config, which PyTorch >= 2.6 refuses to load at the end of every ``fit``.
2. ``lr_halving_epochs``: multiply the learning rate by ``lr_decay`` every N epochs, the
   paper's schedule (5 and 0.5 in ``model/MMa4CTR.yaml``); 0 switches it off (``overall.yaml``,
   the baselines' default).
3. ``valid_interrupt``: the paper's "validation interrupt", done right. When the validation
   AUC after an epoch is <= ``valid_interrupt_threshold`` (0.5), the weights and optimizer
   state from before that epoch are restored, the learning rate is halved and the epoch is
   trained again, at most ``valid_interrupt_max_retries`` times in a row. If the retries run out,
   the epoch is kept and the interrupt is switched off for the rest of the run (logged): a model
   still at chance after several halvings is not diverging, and halving on would freeze it.
   While the interrupt is on, the validation set is evaluated after every epoch.

Everything else of RecBole's ``fit`` is kept where RecBole has it: the train loss and valid
score go to tensorboard (``log_tensorboard/`` in the working folder, RecBole's
``get_tensorboard``) and, with ``log_wandb: True``, to Weights & Biases (wandb must then be
installed: checked before anything is built); the hyper-parameters go to tensorboard at the end.
Every setting is read from the properties files (``settings.setting``): a missing one is an error
naming the file that should hold it, never a default of the code's own.

Every epoch is recorded in ``self.history`` (loss, learning rate, optimizer steps so far,
seconds, validation metrics, interrupts) for the result record. ``self.steps`` counts optimizer
steps (training batches, retried epochs included: they were computed); ``step_budget`` (> 0)
ends training after exactly that many steps: the epoch that reaches it stops at the budget's
batch, is validated and is the last one (its history entry has ``steps`` equal to the budget).
``self.stopped_on`` says why training ended: ``plateau`` (RecBole's early stopping:
``stopping_step`` validations without improvement), ``step budget``, ``epochs`` (all epochs
run) or ``callback`` (the caller's hook, e.g. a tuning scheduler).

A validation whose scores are all equal (every row the same score: AUC 0.5 by construction)
stops the run with a ``TrainingError`` naming the likely causes (saturated features, the
learning rate, data without signal), instead of training on and reporting a meaningless
result. With the validation interrupt on, such an epoch is first retried like any other at
chance; the error comes when the epoch would be kept.

Resume state (the pattern of Hugging Face's ``TrainerState``): the trainer alone reads and writes
what continuing needs. ``save_state(train_data, carried)`` returns checkpoint bytes holding the
weights (and ``other_parameter``), the optimizer and LR-schedule state, the best-validation
checkpoint the final test reads, the counters and history (``STATE_COUNTERS``), and every random
state training draws from: torch's (and CUDA's), numpy's global state with its position
(RecBole's negative samplers draw from ``np.random``), Python's ``random`` (RecBole's BERT4Rec
masking) and the training loader's shuffling generator; ``carried`` is the caller's own plain
data (the epoch-mark tests), handed back by ``load_state(blob, train_data)``. A run continued
from the bytes saved after epoch k trains on exactly as the uninterrupted run did. Tensors and
plain data only, read back with ``weights_only=True``. A run that had already stopped (plateau,
step budget) when it was saved stays stopped.

Labeled (CTR) evaluation, for every model:

* ``scores_squashed``: True when the model's ``predict`` returns raw ranking scores (BPR, FPMC,
  NGCF, LightGCN, BERT4Rec, GCSAN; ``baselines.scores_are_probabilities``). Their scores are
  then passed through a sigmoid (in float64, so scores up to about +-36 stay distinct) before
  the metrics see them: LogLoss becomes the log loss of sigmoid(score) instead of RecBole's
  clip of raw scores into [1e-15, 1 - 1e-15]; AUC, GAUC and UAUC are unchanged (monotone).
  Models that already return probabilities (MMa4CTR, DIN, DIEN) are never squashed.
* ``last_scored``: after every ``evaluate``, the rows it scored, in order, as numpy arrays:
  ``user`` and ``item`` (raw tokens), ``timestamp``, ``label``, ``raw_score`` (what ``predict``
  returned) and ``score`` (what the metrics saw). Set ``keep_scored = False`` to skip it.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import itertools
import random
from numbers import Number
from time import time

import numpy as np
import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import EvaluatorType, early_stopping, set_color, dict2str

from .errors import TrainingError
from .files import atomic_path
from .metrics import UserAwareCollector
from .model.baselines import scores_are_probabilities, switch_off_anomaly_detection
from .settings import setting

# The trainer's counters and history: with the weights, optimizer, schedule, best checkpoint and
# random states, everything ``save_state`` keeps and ``load_state`` puts back.
STATE_COUNTERS = ("epochs_run", "steps", "cur_step", "best_valid_score", "best_valid_result", "history", "interrupts",
                  "interrupt", "stopped_on", "valid_step", "train_seconds", "valid_seconds", "train_loss_dict")



def load_weights_only(path, device):
    """Read a checkpoint written by ``Trainer._save_checkpoint``; refuses anything but tensors."""
    return torch.load(path, map_location=device, weights_only=True)


def write_checkpoint(state: dict, path) -> None:
    """``torch.save`` through a temporary name and rename (``files.atomic_path``)."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def random_state(train_data) -> dict:
    """Every random state training draws from, as tensors and plain data: torch's (and each CUDA
    device's), numpy's global MT19937 state with its position (RecBole's negative samplers),
    Python's ``random`` (RecBole's sequence transforms) and the training loader's generator
    (the shuffling order)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "loader": train_data.generator.get_state(),
    }


def set_random_state(state: dict, train_data) -> None:
    """Put back what :func:`random_state` took."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    train_data.generator.set_state(state["loader"])


class FirstBatches:
    """The first ``count`` batches of a training loader: the step budget's last, partial epoch.
    Anything else (``shuffle``, ``sampler``, ...) is the loader's."""

    def __init__(self, loader, count: int):
        self.loader, self.count = loader, count

    def __len__(self):
        return min(self.count, len(self.loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.count)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def plain_data(value, name: str):
    """``value`` as checkpoint-safe data: a module becomes its state dict, a numpy array a tensor;
    tensors, numbers, strings and None stay; lists, tuples and dicts are converted inside.
    Anything else (a dataset, a scipy matrix) is refused, naming the ``other_parameter`` key."""
    if isinstance(value, torch.nn.Module):
        return value.state_dict()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):    # a numpy scalar (RecBole's rounded metrics) is not plain data
        return value.item()
    if value is None or isinstance(value, (torch.Tensor, str, bool, Number)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(plain_data(item, name) for item in value)
    if isinstance(value, dict):
        return {key: plain_data(item, str(key)) for key, item in value.items()}
    raise TypeError(f"other_parameter {name!r} is a {type(value).__name__}: a checkpoint holds tensors and plain data only")


def load_other_parameter(model, saved) -> None:
    """RecBole's ``load_other_parameter`` for :func:`plain_data`: a module attribute gets its state
    dict back, an array attribute its array; any other value is set as it was saved."""
    for key, value in (saved or {}).items():
        current = getattr(model, key, None)
        if isinstance(current, torch.nn.Module):
            current.load_state_dict(value)
        elif isinstance(current, np.ndarray) and isinstance(value, torch.Tensor):
            setattr(model, key, value.numpy())
        else:
            setattr(model, key, value)


def require_wandb(config) -> None:
    """``log_wandb: True`` needs the optional wandb package: one clear line when it is missing."""
    if setting(config, "log_wandb") and importlib.util.find_spec("wandb") is None:
        raise ImportError("log_wandb: True needs the wandb package, which is not installed "
                          "(pip install wandb, or set --log_wandb=False)")


class Trainer(RecBoleTrainer):
    """RecBole Trainer with weights-only checkpoints, LR halving and the validation interrupt."""

    def __init__(self, config, model):
        require_wandb(config)
        super().__init__(config, model)
        switch_off_anomaly_detection(config)  # RecBole's SINE module switches it on at import
        self.eval_collector = UserAwareCollector(config)
        self.lr_halving_epochs = int(setting(config, "lr_halving_epochs"))
        self.lr_decay = float(setting(config, "lr_decay"))
        self.scheduler = (
            torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=self.lr_halving_epochs, gamma=self.lr_decay)
            if self.lr_halving_epochs > 0 else None
        )
        self.interrupt = bool(setting(config, "valid_interrupt"))
        self.interrupt_threshold = float(setting(config, "valid_interrupt_threshold"))
        self.interrupt_max_retries = int(setting(config, "valid_interrupt_max_retries"))
        self.interrupt_metric = "auc"
        if self.interrupt and self.interrupt_metric not in [m.lower() for m in config["metrics"]]:
            raise ValueError("valid_interrupt needs 'AUC' in metrics")
        labeled = config["eval_type"] == EvaluatorType.VALUE
        self.scores_squashed = labeled and not scores_are_probabilities(model, config)
        self.keep_scored = True
        self.last_scored: dict | None = None
        self._scored_parts: list | None = None
        self.history: list[dict] = []
        self.interrupts = 0
        self.train_seconds = 0.0
        self.valid_seconds = 0.0
        self.epochs_run = 0
        self.step_budget = int(setting(config, "step_budget"))
        self.steps = 0
        self.stopped_on: str | None = None
        self.valid_step = 0
        self.saved_checkpoint: dict | None = None   # what the best-validation file holds (a copy)
        self.score_range: tuple[float, float, int] | None = None   # min, max, rows of the last evaluation

    # ---- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """The best-validation file ``evaluate(load_best_model=True)`` reads, written atomically; a
        copy is kept for ``save_state`` (a resumed run writes it back)."""
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "model": str(self.config["model"]),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": plain_data(self.model.other_parameter(), "other_parameter"),
            "optimizer": self.optimizer.state_dict(),
        }
        self.saved_checkpoint = copy.deepcopy(state)
        write_checkpoint(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def resume_checkpoint(self, resume_file):
        """Refused: a best-validation file holds weights, not a run's state. A run resumes through
        ``load_state`` with the bytes ``save_state`` returned (``run.run_cell`` does it)."""
        raise TrainingError(f"{resume_file}: a best-validation checkpoint is not a resume state; a run resumes from "
                            f"the bytes Trainer.save_state returned (run_cell's checkpoints)")

    # ---- resume state ----------------------------------------------------------------------
    def save_state(self, train_data, carried=None) -> bytes:
        """Everything needed to continue this run after its last accepted epoch, as checkpoint bytes
        (see the module docstring); ``carried``: the caller's plain data, returned by ``load_state``."""
        payload = {
            "model_name": str(self.config["model"]),
            "state_dict": self.model.state_dict(),
            "other_parameter": plain_data(self.model.other_parameter(), "other_parameter"),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "saved_checkpoint": self.saved_checkpoint,
            "counters": {name: plain_data(getattr(self, name), name) for name in STATE_COUNTERS},
            "random": random_state(train_data),
            "carried": plain_data(carried, "carried"),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    def load_state(self, blob: bytes, train_data):
        """Put back what ``save_state`` saved (the best-validation file rewritten from it); training
        goes on at the epoch after it. Returns the caller's ``carried`` data."""
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if payload["model_name"].lower() != str(self.config["model"]).lower():
            raise TrainingError(f"a resume state of model {payload['model_name']} cannot continue a {self.config['model']} run")
        self.model.load_state_dict(payload["state_dict"])
        load_other_parameter(self.model, payload["other_parameter"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        for name in STATE_COUNTERS:
            setattr(self, name, payload["counters"][name])
        self.saved_checkpoint = payload["saved_checkpoint"]
        if self.saved_checkpoint is not None:
            write_checkpoint(self.saved_checkpoint, self.saved_model_file)
        self.start_epoch = self.epochs_run
        set_random_state(payload["random"], train_data)
        self.logger.info(f"resume state loaded: training goes on at epoch {self.start_epoch}")
        return payload["carried"]

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_weights_only(checkpoint_file, self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            load_other_parameter(self.model, checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model parameters from {checkpoint_file}")
        self._scored_parts = [] if self.keep_scored else None
        self.score_range = None
        try:
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
            self.last_scored = self._gather_scored(eval_data._dataset) if self.keep_scored else None
        finally:
            self._scored_parts = None
        return result

    # ---- labeled evaluation: squash raw scores, keep what was scored -------------------------
    def _neg_sample_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._neg_sample_batch_eval(batched_data)
        if self.config["eval_type"] != EvaluatorType.VALUE:
            return interaction, scores, positive_u, positive_i
        raw = scores.reshape(-1)
        if self.scores_squashed:
            scores = torch.sigmoid(raw.double())
        self._track_score_range(scores.reshape(-1))
        if self._scored_parts is not None:   # the columns last_scored reports, not the batch's features
            kept = {field: interaction[field] for field in self._scored_fields().values() if field in interaction}
            self._scored_parts.append((kept, raw.detach().cpu(), scores.reshape(-1).detach().cpu()))
        return interaction, scores, positive_u, positive_i

    def _track_score_range(self, scores) -> None:
        if not len(scores):
            return
        low, high = (float(value) for value in torch.aminmax(scores.detach()))
        if self.score_range is not None:
            low, high = min(low, self.score_range[0]), max(high, self.score_range[1])
        self.score_range = (low, high, len(scores) + (self.score_range[2] if self.score_range else 0))

    def check_scores_vary(self, epoch_idx: int) -> None:
        """Stop the run when the last validation gave every row the same score (see module docstring)."""
        if self.score_range is None or self.score_range[0] != self.score_range[1]:
            return
        low, _, rows = self.score_range
        raise TrainingError(
            f"validation after epoch {epoch_idx + 1}: all {rows:,} rows got the same score ({low:.6g}), so AUC is "
            f"0.5 by construction and nothing was learned; likely causes: input features saturated (modality values "
            f"far outside [0, 1] in {self.config['dataset']}'s .mm.npz, e.g. 3e38), a learning rate too large "
            f"(learning_rate={self.config['learning_rate']:g}), or data whose labels or features do not vary"
        )

    def _scored_fields(self) -> dict:
        """``last_scored``'s keys -> the batch columns they come from. Only these are kept from each
        evaluated batch: keeping the whole batch held every row's features until the evaluation
        ended (550 MB for MMa4CTR's full-scale validation split)."""
        config = self.config
        fields = {"user": config["USER_ID_FIELD"], "item": config["ITEM_ID_FIELD"],
                  "timestamp": config["TIME_FIELD"], "label": config["LABEL_FIELD"]}
        return {key: field for key, field in fields.items() if field is not None}

    def _gather_scored(self, dataset) -> dict | None:
        if not self._scored_parts:
            return None
        scored = {}
        for key, field in self._scored_fields().items():
            if field not in self._scored_parts[0][0]:
                continue
            values = torch.cat([part[0][field].reshape(-1).cpu() for part in self._scored_parts]).numpy()
            scored[key] = dataset.id2token(field, values) if key in ("user", "item") else values
        scored["raw_score"] = torch.cat([part[1] for part in self._scored_parts]).numpy()
        scored["score"] = torch.cat([part[2] for part in self._scored_parts]).numpy()
        return scored

    # ---- training loop -------------------------------------------------------------------
    def _snapshot(self):
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict())

    def _restore(self, snapshot):
        model_state, optimizer_state = snapshot
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def budget_spent(self) -> bool:
        return self.step_budget > 0 and self.steps >= self.step_budget

    def _budgeted(self, train_data):
        """The training batches of the next epoch: all of them, or, when fewer steps than an epoch
        are left of ``step_budget``, exactly those."""
        if self.step_budget <= 0 or self.step_budget - self.steps >= len(train_data):
            return train_data
        return FirstBatches(train_data, self.step_budget - self.steps)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """Train with the schedule and interrupt described in the module docstring.

        ``callback_fn(epoch_idx, valid_score)`` runs after every accepted epoch (valid_score is
        None when the epoch was not validated); it observes, it never stops training.
        """
        if saved and self.start_epoch >= self.epochs and self.saved_checkpoint is None:
            self._save_checkpoint(-1, verbose=verbose)   # no epoch to run: RecBole's "best" is the initial model
        self.eval_collector.data_collect(train_data)
        if self.config["train_neg_sample_args"].get("dynamic", False):
            train_data.get_model(self.model)

        epoch_idx, retries = self.start_epoch, 0
        while self.stopped_on is None and epoch_idx < self.epochs:   # a resumed run may have stopped already
            snapshot = self._snapshot() if self.interrupt else None
            lr = self.current_lr()
            started = time()
            batches = self._budgeted(train_data)
            train_loss = self._train_epoch(batches, epoch_idx, show_progress=show_progress)
            train_loss = sum(train_loss) if isinstance(train_loss, tuple) else train_loss
            train_seconds = time() - started
            self.train_seconds += train_seconds
            self.steps += len(batches)
            self.train_loss_dict[epoch_idx] = train_loss
            if verbose:
                self.logger.info(self._generate_train_loss_output(epoch_idx, started, started + train_seconds, train_loss))
            self._add_train_loss_to_tensorboard(epoch_idx, train_loss)
            self.wandblogger.log_metrics({"epoch": epoch_idx, "train_loss": train_loss, "train_step": epoch_idx}, head="train")
            record = {"epoch": epoch_idx, "train_loss": float(train_loss), "lr": lr, "steps": int(self.steps),
                      "train_seconds": round(train_seconds, 3)}

            validate = bool(valid_data) and self.eval_step > 0 and (self.interrupt or (epoch_idx + 1) % self.eval_step == 0)
            valid_score, stop_flag = None, False
            if validate:
                started = time()
                self.score_range = None
                valid_score, valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
                valid_seconds = time() - started
                self.valid_seconds += valid_seconds
                record.update({"valid": {k: float(v) for k, v in valid_result.items()}, "valid_seconds": round(valid_seconds, 3)})
                if verbose:
                    self.logger.info(set_color("epoch %d evaluating", "green") % epoch_idx
                                     + f" [time: {valid_seconds:.2f}s, valid_score: {valid_score:f}]")
                    self.logger.info(set_color("valid result", "blue") + ": \n" + dict2str(valid_result))
                self.tensorboard.add_scalar("Vaild_score", valid_score, epoch_idx)  # RecBole's tag, typo included
                self.wandblogger.log_metrics({**valid_result, "valid_step": self.valid_step}, head="valid")
                self.valid_step += 1
                watched = valid_result.get(self.interrupt_metric)
                if self.interrupt and watched is not None and watched <= self.interrupt_threshold:
                    if retries < self.interrupt_max_retries and not self.budget_spent():
                        self._restore(snapshot)
                        for group in self.optimizer.param_groups:
                            group["lr"] *= 0.5
                        retries += 1
                        self.interrupts += 1
                        record["interrupted"] = True
                        self.history.append(record)
                        self.logger.warning(
                            f"validation interrupt: valid {self.interrupt_metric} {watched:.4f} <= {self.interrupt_threshold} "
                            f"after epoch {epoch_idx}; weights restored, learning rate {lr:g} -> {self.current_lr():g}, "
                            f"retry {retries}/{self.interrupt_max_retries}"
                        )
                        continue
                    # A model still at chance after all retries is not diverging from a too-large
                    # step; halving further would only freeze it. Stop interrupting for this run.
                    self.interrupt = False
                    self.logger.warning(
                        f"validation interrupt: no retry left at epoch {epoch_idx} ({retries} of {self.interrupt_max_retries} "
                        f"used{', step budget spent' if self.budget_spent() else ''}); "
                        f"keeping this epoch and switching the interrupt off for the rest of the run"
                    )
                self.check_scores_vary(epoch_idx)
                self.best_valid_score, self.cur_step, stop_flag, update_flag = early_stopping(
                    valid_score, self.best_valid_score, self.cur_step,
                    max_step=self.stopping_step, bigger=self.valid_metric_bigger,
                )
                if update_flag:
                    if saved:
                        self._save_checkpoint(epoch_idx, verbose=verbose)
                    self.best_valid_result = valid_result
                    record["best"] = True
            elif saved:
                self._save_checkpoint(epoch_idx, verbose=verbose)

            retries = 0
            if self.scheduler is not None:
                self.scheduler.step()
            self.history.append(record)
            self.epochs_run = epoch_idx + 1
            if stop_flag:
                self.stopped_on = "plateau"
            elif self.budget_spent():
                self.stopped_on = "step budget"
            if callback_fn and callback_fn(epoch_idx, valid_score):
                self.stopped_on = self.stopped_on or "callback"
            if self.stopped_on and verbose:
                self.logger.info(f"Finished training ({self.stopped_on}), best eval result in epoch "
                                 f"{epoch_idx - self.cur_step * self.eval_step}")
            epoch_idx += 1
        self.stopped_on = self.stopped_on or "epochs"
        self._add_hparam_to_tensorboard(self.best_valid_score)
        return self.best_valid_score, self.best_valid_result
