"""Shims RecBole 1.2.1 needs on today's stack, each with the reason it exists.

Kept apart so that each can be dropped when RecBole no longer needs it. Others live next to the
code they serve: weights-only checkpoints in ``trainer.py``, the anomaly-detection switch that
RecBole's SINE import flips on in ``baselines.py``.
"""

from __future__ import annotations

from contextlib import contextmanager


class _CEnginePandas:
    """pandas, except that ``read_csv`` asked for the python engine with a one-character
    separator uses the C engine (exact float parsing, ``round_trip``) instead."""

    def __init__(self, pandas):
        self._pandas = pandas

    def __getattr__(self, name):
        return getattr(self._pandas, name)

    def read_csv(self, *args, **kwargs):
        separator = kwargs.get("delimiter") or kwargs.get("sep") or ","
        if kwargs.get("engine") == "python" and len(separator) == 1:
            kwargs.update(engine="c", float_precision="round_trip")
        return self._pandas.read_csv(*args, **kwargs)


@contextmanager
def c_engine_atomic_reads():
    """RecBole 1.2.1 reads atomic files with pandas' python engine: 27 s for WeChat's 7 M-row
    ``.inter`` here, 3.5 s with the C engine, the same frame. While a dataset is built, RecBole's
    dataset module sees a pandas whose ``read_csv`` picks the C engine (multi-character
    separators keep the python engine, which alone supports them)."""
    import recbole.data.dataset.dataset as dataset_module

    original = dataset_module.pd
    dataset_module.pd = _CEnginePandas(original)
    try:
        yield
    finally:
        dataset_module.pd = original
