"""Shims RecBole 1.2.1 needs on today's stack, each with the reason it exists.

Kept apart so that each can be dropped when RecBole no longer needs it. Others live next to the
code they serve: weights-only checkpoints in ``trainer.py``, the anomaly-detection switch that
RecBole's SINE import flips on in ``baselines.py``.

Two kinds, by scope:

* :func:`recbole_stack_settings` replaces RecBole's own ``Config.compatibility_settings`` (run
  whenever a Config is built): it sets the numpy aliases RecBole's code reads at run time
  (``np.float``, ``np.long``, ...), from names numpy 2 still has, and gives scipy >= 1.13's
  ``dok_matrix`` back the ``_update`` that NGCF and LightGCN call. Both only add names that are
  missing; nothing existing changes meaning.
* :func:`building_dataset` is a context around building one RecBole Dataset: atomic files read
  with pandas' C engine, and RecBole's two in-place ``fillna`` calls replaced by fills that
  assign their result (in-place fills do nothing under copy-on-write, pandas 3's only mode),
  and ``Series.agg(len)`` giving each element's length, as RecBole means it (pandas 3 aggregates).
"""

from __future__ import annotations

from contextlib import contextmanager

from .errors import InputError

# RecBole 1.2.1's Config.compatibility_settings sets these numpy aliases (removed in numpy 1.24)
# because its own code still uses them (np.float in interaction.py and dataset.py, np.long in
# layers.py, np.bool in metrics.py). It reads np.float_, np.complex_ and np.unicode_, which numpy
# 2 removed too, so on numpy 2 every Config fails. The same aliases, from names both numpy 1.x
# and 2.x have (the values are the very types RecBole's own table gives on numpy 1.x):
NUMPY_ALIASES = {
    "bool": "bool_", "int": "int_", "float": "float64", "complex": "complex128",
    "object": "object_", "str": "str_", "long": "int_", "unicode": "str_",
}


def numpy_aliases() -> None:
    """Set RecBole's numpy aliases (see ``NUMPY_ALIASES``), as RecBole does on numpy 1.x."""
    import numpy as np

    for alias, name in NUMPY_ALIASES.items():
        setattr(np, alias, getattr(np, name))


def _dok_update(self, entries) -> None:
    """scipy < 1.13's ``dok_matrix._update``: ``dict.update`` of the stored entries, unchecked."""
    self._dict.update(entries)


def dok_update() -> None:
    """Give ``scipy.sparse.dok_matrix`` back its ``_update`` where scipy >= 1.13 removed it.

    NGCF's and LightGCN's ``get_norm_adj_mat`` (and GCMC, NCL, SpectralCF) fill their adjacency
    matrix with ``A._update(dict)``; scipy 1.13 made dok_matrix a wrapper around ``self._dict``
    instead of a dict subclass and dropped the method: ``'dok_matrix' object has no attribute
    '_update'``. Added only when missing, so older scipy keeps its own."""
    import scipy.sparse as sp

    for dok in (sp.dok_matrix, getattr(sp, "dok_array", None)):
        if dok is not None and not hasattr(dok, "_update"):
            dok._update = _dok_update


def recbole_stack_settings() -> None:
    """What RecBole's ``Config.compatibility_settings`` is for, working on numpy 2 / scipy 1.13+."""
    numpy_aliases()
    dok_update()


FLOAT32_EXACT = 2**24  # float32 holds every integer up to 2**24 exactly


def exact_time_order(values, path, field: str):
    """The timestamps RecBole is to keep: ``values`` (float64, file order) as they are when float32,
    RecBole's storage, keeps them apart; else their exact ranks (0, 1, 2 ... over the distinct
    values, equal values sharing a rank), which float32 holds exactly, so that sorting by time
    follows the exact values.

    RecBole reads a ``timestamp:float`` as float64 and stores it as float32, whose step at unix
    seconds (1.6e9) is 128: stamps a second apart become equal, and its stable sort then keeps the
    file's order among them. A file not written in time order would be split with rows of one
    period in another (30 of 300 test rows from the validation period, measured). Ranks change
    only the numbers, never the order, the ties or the rows, and every model reads the same ones;
    data already exact in float32 (positions, day numbers, small stamps) are returned unchanged.
    More than 2**24 distinct stamps cannot be ranked exactly either: refused, naming the file."""
    import logging

    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if np.array_equal(values.astype(np.float32).astype(np.float64), values, equal_nan=True):
        return values  # every value exact in float32 (one pass, no sort): nothing can merge
    distinct, ranks = np.unique(values, return_inverse=True)
    if len(np.unique(distinct.astype(np.float32))) == len(distinct):
        return values
    if len(distinct) > FLOAT32_EXACT:
        raise InputError(f"{path}, field '{field}': {len(distinct):,} distinct timestamps; RecBole keeps them as "
                         f"float32, which orders at most {FLOAT32_EXACT:,} exactly")
    logging.getLogger().warning(
        f"{path}, field '{field}': float32 (RecBole's storage) would merge {len(distinct):,} distinct timestamps "
        f"into {len(np.unique(distinct.astype(np.float32))):,} values and lose their order; using their exact "
        f"ranks 0..{len(distinct) - 1:,} instead (same order, same ties)")
    return ranks.astype(np.float64)


SEQUENCE_TYPES = (":token_seq", ":float_seq")


def fill_sequences(frame):
    """RecBole's ``_load_feat`` first fill, done so that it sticks: an empty sequence field reads
    as NaN, which RecBole turns into "" with ``df[field].fillna("", inplace=True)`` before it
    splits the strings. Applied to the frame as read (columns still named ``name:type``)."""
    for column in frame.columns:
        if str(column).endswith(SEQUENCE_TYPES) and frame[column].isna().any():
            frame[column] = frame[column].fillna("")
    return frame


def fill_nan(dataset) -> None:
    """RecBole's ``Dataset._fill_nan`` with fills that assign their result: token fields get 0
    (RecBole's padding id), float fields their column mean, sequence fields an empty array."""
    import numpy as np
    from recbole.utils import FeatureType

    for feat_name in dataset.feat_name_list:
        feat = getattr(dataset, feat_name)
        for field in feat:
            ftype = dataset.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x)


def element_lengths(aggregate):
    """``Series.agg`` where ``agg(len)`` gives each element's length, as RecBole 1.2.1 means it.

    RecBole takes the lengths of a sequence field's rows with ``feat[field].agg(len)`` (remapping
    token sequences, normalising and discretising float sequences, sequential and knowledge-graph
    datasets). pandas 2 applied ``len`` to each element (with a FutureWarning); pandas 3
    aggregates: the length of the whole Series, and RecBole fails with ``Length of values (1) does
    not match length of index``. Every other ``agg`` is pandas' own."""
    def agg(self, func=None, axis=0, *args, **kwargs):
        if func is len:
            return self.map(len)
        return aggregate(self, func, axis, *args, **kwargs)

    return agg


class _CEnginePandas:
    """pandas, except that ``read_csv`` asked for the python engine with a one-character
    separator uses the C engine (exact float parsing, ``round_trip``) instead, empty sequence
    fields come back as "" (``fill_sequences``), and a column named ``time_column``
    (``<TIME_FIELD>:float``) is made exact for float32 (``exact_time_order``)."""

    def __init__(self, pandas, time_column: str | None = None):
        self._pandas = pandas
        self._time_column = time_column

    def __getattr__(self, name):
        return getattr(self._pandas, name)

    def read_csv(self, *args, **kwargs):
        separator = kwargs.get("delimiter") or kwargs.get("sep") or ","
        if kwargs.get("engine") == "python" and len(separator) == 1:
            kwargs.update(engine="c", float_precision="round_trip")
        frame = fill_sequences(self._pandas.read_csv(*args, **kwargs))
        if self._time_column in frame.columns:
            path = args[0] if args else kwargs.get("filepath_or_buffer")
            frame[self._time_column] = exact_time_order(frame[self._time_column].to_numpy(), path,
                                                        self._time_column.partition(":")[0])
        return frame


def release_unused_memory() -> None:
    """Hand the memory the process has freed back to the system.

    Building a dataset from a 7 M-row ``.inter`` frees far more than it keeps, and two
    allocators keep what was freed: pyarrow's pool (pandas 3 keeps string columns in pyarrow
    memory; its mimalloc pool held on to about 0.5 GB after WeChat's full-scale read) and glibc's
    heap (a further 0.1 GB). Kept, that memory adds to every later peak of the run. Nothing that
    is still used moves; without pyarrow, or off glibc (no ``malloc_trim``), the part is skipped.
    """
    import ctypes
    import ctypes.util

    try:
        import pyarrow
    except ImportError:
        pass
    else:
        pyarrow.default_memory_pool().release_unused()
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is not None:
        trim(0)


def releasing(method):
    """``method``, then :func:`release_unused_memory`."""
    def released(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        release_unused_memory()
        return result

    return released


@contextmanager
def building_dataset(time_field: str | None = None):
    """While one RecBole Dataset is built:

    * RecBole 1.2.1 reads atomic files with pandas' python engine: 27 s for WeChat's 7 M-row
      ``.inter`` here, 3.5 s with the C engine, the same frame. RecBole's dataset module sees a
      pandas whose ``read_csv`` picks the C engine (multi-character separators keep the python
      engine, which alone supports them).
    * The ``time_field`` (the config's ``TIME_FIELD``), typed float, is made exact for RecBole's
      float32 as it is read (``exact_time_order``): rows keep their exact time order whatever
      the stamps' size.
    * RecBole fills missing values with ``feat[field].fillna(..., inplace=True)`` in two places
      (``_load_feat`` for sequence fields, ``_fill_nan`` for the rest). Under pandas'
      copy-on-write (pandas 3's only mode, an option in 2.x) that fills a copy and the frame keeps
      its NaNs. The first is done by the ``read_csv`` above (``fill_sequences``), the second
      is replaced by :func:`fill_nan` for the build, on every pandas version.
    * ``Series.agg(len)`` gives element lengths again (:func:`element_lengths`), as on pandas 2.
    * After RecBole reads the files (``_load_data``) and after it processes them
      (``_data_processing``: filters, id remapping), the memory freed is handed back
      (:func:`release_unused_memory`): the read's buffers and the remap's strings would otherwise
      stay in the process until it ends.
    """
    import pandas
    import recbole.data.dataset.dataset as dataset_module

    stock = dataset_module.Dataset
    original_pandas, original_fill = dataset_module.pd, stock._fill_nan
    original_load, original_processing = stock._load_data, stock._data_processing
    original_agg = pandas.Series.agg
    dataset_module.pd = _CEnginePandas(original_pandas, f"{time_field}:float" if time_field else None)
    stock._fill_nan = fill_nan
    stock._load_data, stock._data_processing = releasing(original_load), releasing(original_processing)
    pandas.Series.agg = element_lengths(original_agg)
    try:
        yield
    finally:
        dataset_module.pd = original_pandas
        stock._fill_nan = original_fill
        stock._load_data, stock._data_processing = original_load, original_processing
        pandas.Series.agg = original_agg
