"""A graph of built dataset objects as files, and back, without pickle: arrays as ``.npy``, the rest as tagged JSON.

Why not pickle (or ``torch.save``): reading a pickle runs whatever the file names. Here nothing
read is executed or imported: the JSON says which of a fixed set of shapes each value has
(``TAGS``), and an object is rebuilt only for a class of the fixed allow-list ``CLASSES``
(``cls.__new__(cls)``, then its attributes set); any other tag or class is refused
(``ObjectFileError``).

Why ``.npy`` blocks: the arrays (torch tensors and numpy arrays alike) are most of a dataset,
and read back with ``np.load(mmap_mode="c")`` they are mapped, not read: nothing is copied
until it is touched, several processes mapping one file share its pages, and a page written to
becomes the writer's own copy (the file never changes). Arrays that share memory (RecBole's
split datasets are slices of the parent's columns; a numpy matrix and the tensor made of it by
``torch.from_numpy``) are written once, as one block, and mapped back as views of it, so they
share memory again; any other shared object (a ``field2id_token`` dict shared by the parent and
its splits) is written once and referenced by id, so it is shared again after loading.

What can be written (anything else raises ``Unsupported`` and nothing is written): None, bool,
int, float, str, list, tuple, dict (any keys of these kinds), set, frozenset, numpy scalars,
members of the allow-listed enums, numpy arrays of booleans, numbers or fixed-width text, numpy
object arrays holding only str, CPU torch tensors of a numpy dtype, the allow-listed objects;
the attribute holding the run's config and a ``logging.Logger`` are written as markers and
replaced on reading by the reader's config and logger.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from recbole.data import dataset as recbole_datasets
from recbole.data.interaction import Interaction
from recbole.sampler.sampler import SeqSampler
from recbole.utils import FeatureSource, FeatureType, InputType, ModelType

from ..files import atomic_path, write_bytes
from ..model.baselines import LabeledDIENDataset, LabeledSequentialDataset
from .dataset import MMa4CTRDataset
from .feature_fair import FeatureFairDataset, FeatureFairDIENDataset, FeatureFairSequentialDataset
from .paper_split import PositionalSplitDataset

FORMAT = 1
GRAPH_FILE = "graph.json"
# The classes an object may be rebuilt as, by name: RecBole's dataset classes this project builds
# or extends, the project's own, and the objects they hold.
CLASSES = {cls.__name__: cls for cls in (
    recbole_datasets.Dataset, recbole_datasets.SequentialDataset, PositionalSplitDataset, MMa4CTRDataset,
    LabeledSequentialDataset, LabeledDIENDataset, FeatureFairDataset, FeatureFairSequentialDataset,
    FeatureFairDIENDataset, Interaction, SeqSampler)}
ENUMS = {cls.__name__: cls for cls in (FeatureType, FeatureSource, ModelType, InputType)}
TORCH_DTYPES = {torch.bool: "bool", torch.uint8: "uint8", torch.int8: "int8", torch.int16: "int16",
                torch.int32: "int32", torch.int64: "int64", torch.float16: "float16", torch.float32: "float32",
                torch.float64: "float64", torch.complex64: "complex64", torch.complex128: "complex128"}
NUMPY_KINDS = "biufcUS"   # booleans, integers, floats, complex, fixed-width text: no pickle needed
SCALAR_KINDS = "biufU"    # numpy scalars written as JSON numbers, text, or (floats) their exact repr
TAGS = ("float", "np", "list", "tuple", "dict", "set", "frozenset", "enum", "array", "strarray", "object",
        "config", "logger", "ref")


class ObjectFileError(Exception):
    """A stored graph that cannot be read back as written (a tag, class or file it does not allow)."""


class Unsupported(Exception):
    """A value of a kind this module does not write (its path and type in the message)."""


class Arrays:
    """The arrays of one graph, grouped into blocks of shared memory (see the module docstring)."""

    def __init__(self):
        self.views = []        # (kind, array, start address, span bytes)

    def add(self, kind: str, array) -> int:
        if kind == "tensor":
            start, itemsize = array.data_ptr(), array.element_size()
            strides = [s * itemsize for s in array.stride()]
        else:
            start, itemsize, strides = array.__array_interface__["data"][0], array.itemsize, list(array.strides)
        if any(s < 0 for s in strides):
            raise Unsupported("an array with negative strides")
        size = array.numel() if kind == "tensor" else array.size
        span = itemsize + sum((n - 1) * s for n, s in zip(array.shape, strides)) if size else 0
        self.views.append((kind, array, start, span, strides))
        return len(self.views) - 1

    def blocks(self) -> tuple[list, list]:
        """(blocks: (start, end, the array covering it exactly or None), each view's (block, offset))."""
        order = sorted((i for i, v in enumerate(self.views) if v[3] > 0), key=lambda i: self.views[i][2])
        blocks, placed = [], [None] * len(self.views)
        for i in order:
            _, _, start, span, _ = self.views[i]
            if blocks and start < blocks[-1][1]:        # overlaps the block before: same memory
                blocks[-1][1] = max(blocks[-1][1], start + span)
            else:
                blocks.append([start, start + span])
            placed[i] = len(blocks) - 1
        offsets = [(placed[i], self.views[i][2] - blocks[placed[i]][0]) if placed[i] is not None else (None, 0)
                   for i in range(len(self.views))]
        return blocks, offsets


def _whole(view, block) -> bool:
    """Whether an array is exactly its block, C-contiguous: the block is then written as that array."""
    kind, array, start, span, _ = view
    contiguous = array.is_contiguous() if kind == "tensor" else array.flags.c_contiguous
    return contiguous and start == block[0] and start + span == block[1]


def _numpy_of(view):
    kind, array = view[0], view[1]
    return array.numpy() if kind == "tensor" else array


def _raw_bytes(start: int, end: int) -> np.ndarray:
    """The bytes [start, end) of this process's memory: a block made of several views of one
    allocation (the views overlap, so the whole range lies inside that allocation)."""
    return np.frombuffer((ctypes.c_char * (end - start)).from_address(start), dtype=np.uint8)


class Writer:
    """Encodes a graph: ``encode(value)`` gives its JSON form and collects its arrays."""

    def __init__(self, config=None):
        self.config = config
        self.ids: dict[int, int] = {}
        self.keep = []               # the encoded objects stay alive, so their ids stay theirs
        self.arrays = Arrays()

    def _first(self, value) -> tuple[int, bool]:
        known = self.ids.get(id(value))
        if known is not None:
            return known, False
        self.ids[id(value)] = len(self.ids)
        self.keep.append(value)
        return self.ids[id(value)], True

    def encode(self, value, path: str = "$"):
        kind = type(value)
        if value is None or kind in (bool, str, int):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
        if isinstance(value, np.generic):
            return self._numpy_scalar(value, path)
        if kind is tuple:
            return {"t": "tuple", "v": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, (FeatureType, FeatureSource, ModelType, InputType)):
            return {"t": "enum", "cls": type(value).__name__, "v": value.name}
        if self.config is not None and value is self.config:
            return {"t": "config"}
        if isinstance(value, logging.Logger):
            return {"t": "logger", "v": None if value is logging.getLogger() else value.name}
        ident, first = self._first(value)
        if not first:
            return {"t": "ref", "id": ident}
        if kind is list:
            return {"t": "list", "id": ident, "v": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if kind in (set, frozenset):
            return {"t": kind.__name__, "id": ident, "v": [self.encode(v, f"{path}{{}}") for v in value]}
        if kind is dict:
            return self._dict(value, ident, path)
        if kind is np.ndarray:
            return self._array(value, ident, path)
        if kind is torch.Tensor:
            return self._tensor(value, ident, path)
        if CLASSES.get(kind.__name__) is kind:
            state = {name: self.encode(v, f"{path}.{name}") for name, v in vars(value).items()}
            return {"t": "object", "id": ident, "cls": kind.__name__, "v": state}
        raise Unsupported(f"{path}: a {kind.__module__}.{kind.__qualname__}")

    def _numpy_scalar(self, value, path):
        if value.dtype.kind not in SCALAR_KINDS:
            raise Unsupported(f"{path}: a numpy {value.dtype} scalar")
        return {"t": "np", "dtype": value.dtype.str, "v": repr(value.item()) if value.dtype.kind == "f" else value.item()}

    def _dict(self, value, ident, path):
        kinds = {type(k) for k in value}
        if kinds <= {str}:
            return {"t": "dict", "id": ident, "v": {k: self.encode(v, f"{path}[{k!r}]") for k, v in value.items()}}
        if kinds == {np.str_}:
            return {"t": "dict", "id": ident, "keys": "np.str_",
                    "v": {str(k): self.encode(v, f"{path}[{k!r}]") for k, v in value.items()}}
        return {"t": "dict", "id": ident,
                "items": [[self.encode(k, f"{path}<key>"), self.encode(v, f"{path}[{k!r}]")] for k, v in value.items()]}

    def _array(self, value, ident, path):
        if value.dtype.kind == "O":
            if value.ndim != 1 or not all(type(v) is str for v in value):
                raise Unsupported(f"{path}: a numpy object array holding other than str")
            return {"t": "strarray", "id": ident, "v": value.tolist()}
        if value.dtype.kind not in NUMPY_KINDS or value.dtype.fields is not None:
            raise Unsupported(f"{path}: a numpy {value.dtype} array")
        return {"t": "array", "id": ident, "kind": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
                "view": self.arrays.add("array", value)}

    def _tensor(self, value, ident, path):
        if value.device.type != "cpu" or value.layout != torch.strided or value.requires_grad \
                or value.is_conj() or value.is_neg() or value.dtype not in TORCH_DTYPES:
            raise Unsupported(f"{path}: a {value.dtype} tensor on {value.device} (layout {value.layout}, "
                              f"requires_grad {value.requires_grad})")
        return {"t": "array", "id": ident, "kind": "tensor", "dtype": np.dtype(TORCH_DTYPES[value.dtype]).str,
                "shape": list(value.shape), "view": self.arrays.add("tensor", value)}


def write_graph(folder, roots: dict, config=None) -> dict:
    """Write ``roots`` (name -> value) into ``folder`` (``GRAPH_FILE`` and ``block<i>.npy``);
    returns ``{file name: size}`` of everything written. Raises ``Unsupported`` before writing
    anything when a value cannot be written."""
    folder = Path(folder)
    writer = Writer(config)
    encoded = {name: writer.encode(value, name) for name, value in roots.items()}
    blocks, offsets = writer.arrays.blocks()
    views = []
    for view, (block, offset) in zip(writer.arrays.views, offsets):
        views.append({"block": block, "offset": offset, "strides": view[4]})
    sizes = {}
    for index, (start, end) in enumerate(blocks):
        covering = next((v for v, (b, _) in zip(writer.arrays.views, offsets) if b == index and _whole(v, (start, end))),
                        None)
        data = _numpy_of(covering) if covering is not None else _raw_bytes(start, end)
        name = f"block{index}.npy"
        with atomic_path(folder / name) as temporary, open(temporary, "wb") as handle:
            np.save(handle, data, allow_pickle=False)
        sizes[name] = (folder / name).stat().st_size
    graph = json.dumps({"format": FORMAT, "blocks": len(blocks), "views": views, "roots": encoded},
                       allow_nan=False, separators=(",", ":"))
    write_bytes(folder / GRAPH_FILE, graph.encode())
    sizes[GRAPH_FILE] = (folder / GRAPH_FILE).stat().st_size
    return sizes


class Reader:
    """Decodes a graph written by ``write_graph`` (module docstring: what it refuses)."""

    def __init__(self, folder: Path, graph: dict, config, logger_of=logging.getLogger):
        self.folder, self.graph, self.config, self.logger_of = folder, graph, config, logger_of
        self.memo: dict[int, object] = {}
        self.blocks: dict[int, np.ndarray] = {}

    def block(self, index: int) -> np.ndarray:
        if not isinstance(index, int) or not 0 <= index < int(self.graph["blocks"]):
            raise ObjectFileError(f"block {index!r} is not one of the graph's")
        if index not in self.blocks:
            self.blocks[index] = np.load(self.folder / f"block{index}.npy", mmap_mode="c", allow_pickle=False)
        return self.blocks[index]

    def decode(self, node):
        if node is None or type(node) in (bool, str, int, float):
            return node
        if type(node) is list or type(node) is not dict:
            raise ObjectFileError(f"an untagged {type(node).__name__} where a tagged value belongs")
        tag = node.get("t")
        if tag not in TAGS:
            raise ObjectFileError(f"unknown tag {tag!r}")
        return getattr(self, f"_{tag}")(node)

    def _remember(self, node, value):
        self.memo[node["id"]] = value
        return value

    def _float(self, node):
        if node["v"] not in ("nan", "inf", "-inf"):
            raise ObjectFileError(f"float {node['v']!r}")
        return float(node["v"])

    def _np(self, node):
        dtype = np.dtype(node["dtype"])
        if dtype.kind not in SCALAR_KINDS:
            raise ObjectFileError(f"numpy scalar of dtype {dtype}")
        return dtype.type(float(node["v"]) if dtype.kind == "f" else node["v"])

    def _list(self, node):
        value = self._remember(node, [])
        value.extend(self.decode(v) for v in node["v"])
        return value

    def _tuple(self, node):
        return tuple(self.decode(v) for v in node["v"])

    def _set(self, node):
        value = self._remember(node, set())
        value.update(self.decode(v) for v in node["v"])
        return value

    def _frozenset(self, node):
        return self._remember(node, frozenset(self.decode(v) for v in node["v"]))

    def _dict(self, node):
        value = self._remember(node, {})
        if "items" in node:
            for key, item in node["items"]:
                value[self.decode(key)] = self.decode(item)
            return value
        keys = node.get("keys")
        if keys not in (None, "np.str_"):
            raise ObjectFileError(f"dict keys {keys!r}")
        make = np.str_ if keys else str
        for key, item in node["v"].items():
            value[make(key)] = self.decode(item)
        return value

    def _enum(self, node):
        cls = ENUMS.get(node["cls"])
        if cls is None:
            raise ObjectFileError(f"enum {node['cls']!r} is not an allowed one")
        return cls[node["v"]]

    def _strarray(self, node):
        values = node["v"]
        if not all(type(v) is str for v in values):
            raise ObjectFileError("a str array holding other than str")
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return self._remember(node, array)

    def _array(self, node):
        dtype = np.dtype(node["dtype"])
        if dtype.kind not in NUMPY_KINDS or node["kind"] not in ("ndarray", "tensor"):
            raise ObjectFileError(f"array of kind {node['kind']!r}, dtype {dtype}")
        shape = tuple(int(n) for n in node["shape"])
        view = self.graph["views"][int(node["view"])]
        if view["block"] is None:                    # an empty array
            array = np.empty(shape, dtype=dtype)
        else:
            block = self.block(view["block"])
            strides = tuple(int(s) for s in view["strides"])
            if (view["offset"] == 0 and block.dtype == dtype and block.shape == shape and block.strides == strides):
                array = block
            else:
                raw = block.reshape(-1).view(np.uint8)
                span = dtype.itemsize + sum((n - 1) * s for n, s in zip(shape, strides))
                if int(view["offset"]) < 0 or int(view["offset"]) + span > raw.nbytes:
                    raise ObjectFileError(f"a view past the end of block {view['block']}")
                array = np.ndarray(shape, dtype=dtype, buffer=raw, offset=int(view["offset"]), strides=strides)
        if node["kind"] == "tensor":
            return self._remember(node, torch.from_numpy(array))
        return self._remember(node, np.asarray(array))

    def _object(self, node):
        cls = CLASSES.get(node["cls"])
        if cls is None:
            raise ObjectFileError(f"class {node['cls']!r} is not an allowed one")
        value = self._remember(node, cls.__new__(cls))
        state = node["v"]
        if type(state) is not dict:
            raise ObjectFileError(f"the attributes of a {node['cls']} are not a mapping")
        for name, item in state.items():
            value.__dict__[name] = self.decode(item)
        return value

    def _config(self, node):
        return self.config

    def _logger(self, node):
        return self.logger_of(node["v"]) if node["v"] else logging.getLogger()

    def _ref(self, node):
        if node["id"] not in self.memo:
            raise ObjectFileError(f"a reference to object {node['id']!r} before it is defined")
        return self.memo[node["id"]]


def read_graph(folder, config=None) -> dict:
    """The roots ``write_graph`` wrote into ``folder``, arrays mapped from their files."""
    folder = Path(folder)
    try:
        graph = json.loads((folder / GRAPH_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ObjectFileError(f"{folder / GRAPH_FILE}: {error}") from None
    if not isinstance(graph, dict) or graph.get("format") != FORMAT:
        raise ObjectFileError(f"{folder / GRAPH_FILE}: not a graph of format {FORMAT}")
    reader = Reader(folder, graph, config)
    try:
        return {name: reader.decode(node) for name, node in graph["roots"].items()}
    except (KeyError, TypeError, ValueError, IndexError, OSError) as error:
        raise ObjectFileError(f"{folder}: {type(error).__name__}: {error}") from None
