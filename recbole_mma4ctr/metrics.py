"""The per-user AUC metrics (GAUC, UAUC) as RecBole metrics: adapters of the pure functions in
``stats.py`` (``per_user_auc``, ``gauc``, ``uauc``), so training and validation report them.

RecBole is imported lazily, on first use:

* ``GAUC`` and ``UAUC`` -- ``recbole.evaluator.AbstractMetric`` subclasses of type
  ``EvaluatorType.VALUE`` (bigger is better), result keys ``'gauc'`` and ``'uauc'``.
* ``UserAwareCollector(config)`` -- RecBole's ``Collector`` that also gathers the user id of
  every evaluated row under :data:`UID_KEY` when a configured metric needs it.
* :func:`register_metrics` -- makes RecBole's Config, Register (Collector) and Evaluator know
  the two metrics; call it before building ``Config``. :func:`unregister_metrics` undoes it.

Note that RecBole 1.2.1 already ships a metric named ``GAUC``: a *ranking* metric computed
from full-sort / sampled ranks and weighted by each user's number of positive items. After
:func:`register_metrics` the name ``'GAUC'`` means the value-based metric of this module for the
whole process, so it can be combined with ``AUC`` and ``LogLoss`` in labeled evaluation.
"""

from .stats import gauc, uauc

__all__ = [
    "UID_KEY",
    "register_metrics",
    "unregister_metrics",
    "GAUC",
    "UAUC",
    "UserAwareCollector",
]

#: Key under which :class:`UserAwareCollector` stores the user id of each evaluated row.
UID_KEY = "data.uid"

# ---------------------------------------------------------------------------------------------
# RecBole part (lazy)
# ---------------------------------------------------------------------------------------------

_RECBOLE_NAMES = ("GAUC", "UAUC", "UserAwareCollector")
_classes = None
# RecBole's registry entries that register_metrics() replaced, for unregister_metrics().
_replaced = None


def _recbole_classes():
    """Build (once) the RecBole-facing classes; this is where RecBole gets imported."""
    global _classes
    if _classes is not None:
        return _classes

    import torch
    from recbole.evaluator.base_metric import AbstractMetric
    from recbole.evaluator.collector import Collector, DataStruct
    from recbole.utils import EvaluatorType

    class _PerUserAUCMetric(AbstractMetric):
        metric_type = EvaluatorType.VALUE
        metric_need = ["rec.score", "data.label", UID_KEY]
        smaller = False
        key = None

        @staticmethod
        def reduce(scores, labels, user_ids):
            raise NotImplementedError

        def calculate_metric(self, dataobject):
            if UID_KEY not in dataobject:
                raise RuntimeError(
                    f"metric '{self.key}' needs the user id of every evaluated row ('{UID_KEY}'), "
                    "which RecBole's Collector does not gather: use "
                    "recbole_mma4ctr.metrics.UserAwareCollector as the trainer's eval_collector"
                )
            scores = dataobject.get("rec.score").reshape(-1).numpy()
            labels = dataobject.get("data.label").reshape(-1).numpy()
            user_ids = dataobject.get(UID_KEY).reshape(-1).numpy()
            value = self.reduce(scores, labels, user_ids)
            return {self.key: round(value, self.decimal_place)}

    class GAUC(_PerUserAUCMetric):
        """Value-based GAUC: per-user AUC weighted by the user's number of rows."""

        key = "gauc"
        reduce = staticmethod(gauc)

    class UAUC(_PerUserAUCMetric):
        """Value-based UAUC: unweighted mean of per-user AUC."""

        key = "uauc"
        reduce = staticmethod(uauc)

    class BatchListDataStruct(DataStruct):
        """RecBole's ``DataStruct``, with each evaluated batch's tensors kept in a list and
        concatenated once, when read. RecBole concatenates the tensor collected so far with every
        new batch: the copying grows with the square of the batches (87 batches of MMa4CTR's
        full-scale validation copy about 40 times its scores, labels and user ids). The same
        tensors result."""

        def __init__(self):
            super().__init__()
            self._batches = {}

        def update_tensor(self, name: str, value):
            if name in self._data_dict and not isinstance(self._data_dict[name], torch.Tensor):
                raise ValueError(f"{name} is not a tensor.")
            batches = self._batches.setdefault(name, [])
            if name in self._data_dict:
                batches.append(self._data_dict.pop(name))
            batches.append(value.clone().detach())

        def concatenate(self) -> None:
            """Move every name's batches into RecBole's dictionary as one tensor."""
            for name, batches in self._batches.items():
                self._data_dict[name] = torch.cat(batches, dim=0)
            self._batches = {}

        def __getitem__(self, name: str):
            self.concatenate()
            return super().__getitem__(name)

        def get(self, name: str):
            self.concatenate()
            return super().get(name)

        def __contains__(self, key: str):
            return key in self._batches or super().__contains__(key)

    class UserAwareCollector(Collector):
        """RecBole ``Collector`` that also collects ``interaction[config['USER_ID_FIELD']]``
        of every evaluated row under :data:`UID_KEY` when a configured metric needs it, into a
        :class:`BatchListDataStruct`.

        Everything else is RecBole's. Wire it in with ``trainer.eval_collector =
        UserAwareCollector(config)`` (after ``Trainer.__init__``, before ``fit``/``evaluate``).
        """

        def __init__(self, config):
            super().__init__(config)
            self.data_struct = BatchListDataStruct()
            self.uid_field = config["USER_ID_FIELD"]

        def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
            super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
            if self.register.need(UID_KEY):
                if self.uid_field is None or self.uid_field not in interaction:
                    raise KeyError(
                        f"user id field {self.uid_field!r} (USER_ID_FIELD) is not in the "
                        "evaluated interaction; GAUC/UAUC need it"
                    )
                self.data_struct.update_tensor(
                    UID_KEY, interaction[self.uid_field].to(self.device)
                )

        def eval_collect(self, eval_pred, data_label, user_ids=None):
            """Whole-set variant (used by RecBole's tree-model trainers); pass ``user_ids``
            when GAUC/UAUC are configured."""
            super().eval_collect(eval_pred, data_label)
            if self.register.need(UID_KEY) and user_ids is not None:
                import torch

                self.data_struct.update_tensor(
                    UID_KEY, torch.as_tensor(user_ids).to(self.device)
                )

        def get_data_struct(self):
            self.data_struct.concatenate()     # RecBole reads its dictionary directly
            returned = super().get_data_struct()
            # RecBole only resets its own per-evaluation keys; without this the user ids of
            # every evaluation would pile up.
            if UID_KEY in self.data_struct:
                del self.data_struct[UID_KEY]
            return returned

    for cls in (GAUC, UAUC, UserAwareCollector):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    _classes = {"GAUC": GAUC, "UAUC": UAUC, "UserAwareCollector": UserAwareCollector}
    return _classes


def __getattr__(name):
    # PEP 562: ``from recbole_mma4ctr.metrics import GAUC`` imports RecBole only then.
    if name in _RECBOLE_NAMES:
        return _recbole_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_metrics():
    """Make RecBole know the metrics ``GAUC`` and ``UAUC`` (idempotent).

    RecBole fills ``recbole.evaluator.register``'s ``metrics_dict`` (used by ``Evaluator``),
    ``metric_information`` (used by ``Register``, i.e. the ``Collector``), ``metric_types``
    (used by ``Config`` to accept the names and derive ``eval_type``) and ``smaller_metrics``
    (used by ``Config`` for ``valid_metric_bigger``) once, at import time, and
    ``recbole.config.configurator`` holds references to the same objects. They are updated in
    place here, so call this before creating ``Config``/``Trainer``; it overrides RecBole's own
    ranking ``GAUC`` for the process (and must be repeated in spawned worker processes).

    Returns:
        dict: ``{'gauc': GAUC, 'uauc': UAUC}``.
    """
    global _replaced
    from recbole.evaluator import register as rb_register

    classes = _recbole_classes()
    new = {"gauc": classes["GAUC"], "uauc": classes["UAUC"]}
    if _replaced is None:
        _replaced = {
            name: (
                rb_register.metrics_dict.get(name),
                rb_register.metric_information.get(name),
                rb_register.metric_types.get(name),
                name in rb_register.smaller_metrics,
            )
            for name in new
        }
    for name, cls in new.items():
        rb_register.metrics_dict[name] = cls
        rb_register.metric_information[name] = cls.metric_need
        rb_register.metric_types[name] = cls.metric_type
        while name in rb_register.smaller_metrics:
            rb_register.smaller_metrics.remove(name)
    return new


def unregister_metrics():
    """Undo :func:`register_metrics`, restoring RecBole's registry (its ranking ``GAUC``)."""
    global _replaced
    if _replaced is None:
        return
    from recbole.evaluator import register as rb_register

    tables = (rb_register.metrics_dict, rb_register.metric_information, rb_register.metric_types)
    for name, (cls, need, mtype, smaller) in _replaced.items():
        for table, old in zip(tables, (cls, need, mtype)):
            if old is None:
                table.pop(name, None)
            else:
                table[name] = old
        if smaller and name not in rb_register.smaller_metrics:
            rb_register.smaller_metrics.append(name)
    _replaced = None
