"""The prepared store (``data/prepared_store.py``, ``data/object_files.py``, ``data/config_reads.py``).

- A cell run twice, the second mapping the first's dataset from the store, gives the same test
  scores bit for bit and the same effective config, for MMa4CTR, a ``+mm`` model, DIN and BPR.
- Changing a data file, a setting the build reads (``profile_length``, ``MAX_ITEM_LIST_LENGTH``)
  or the code version misses the store; a setting it does not read (``learning_rate``) hits it.
- A truncated block or a damaged graph is ignored, removed and built again.
- The reader refuses unknown tags and classes; the writer refuses values it does not know.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.utils import FeatureType, init_seed

from conftest import run_settings
from recbole_mma4ctr.cells import make_cell
from recbole_mma4ctr.config import build_config
from recbole_mma4ctr.data import prepared_store
from recbole_mma4ctr.data.config_reads import MISSING, recording_reads
from recbole_mma4ctr.data.object_files import ObjectFileError, read_graph, Unsupported, write_graph
from recbole_mma4ctr.run import run_cell

TIMING = ("train_seconds", "valid_seconds", "seconds")


@pytest.fixture()
def data(tiny_atomic, tmp_path):
    source, _ = tiny_atomic
    shutil.copytree(source, tmp_path / "data" / "wechat")
    return tmp_path


def settings_of(root: Path, **extra) -> dict:
    chosen = {"data_path": root / "data", "prepared_store": root / "store", "prepared_store_keep": 10,
              "digest_cache": root / "cache" / "digests.json", **extra}
    return run_settings(root, **chosen)


def digest(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def outcome(record, predictions) -> dict:
    return {"test": record["test"], "best_valid": record["best_valid"], "history": without_timing(record["history"]),
            "config": record["config"], "split_sizes": record["split_sizes"], "features": record["features"],
            "score": digest(predictions["score"]), "raw_score": digest(predictions["raw_score"])}


@pytest.mark.parametrize("model, extra", [("MMa4CTR", {}), ("DeepFM+mm", {}), ("DIN", {"MAX_ITEM_LIST_LENGTH": 10}),
                                          ("BPR", {})])
def test_a_cell_from_the_store_is_the_cell_that_built_it(data, model, extra):
    outcomes, sources = [], []
    for _ in range(2):
        cell = make_cell(model, "wechat", None, settings_of(data, epochs=2, **extra), kind="compare", prepare=False)
        record, predictions = run_cell(cell)
        sources.append(record["prepared_data"]["source"])
        assert record["startup_seconds"] > 0
        outcomes.append(outcome(record, predictions))
    assert sources == ["built", "store"]
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("model, extra", [("MMa4CTR", {}), ("DIN", {"MAX_ITEM_LIST_LENGTH": 10})])
def test_a_cell_of_another_seed_maps_the_entry_and_matches_its_own_build(data, model, extra):
    """The build draws no random number, so seed 7 reuses seed 2024's entry and scores exactly as
    a seed-7 cell that built its own dataset (store off)."""
    def cell_of(seed, **more):
        settings = settings_of(data, epochs=2, seed=seed, **extra, **more)
        return run_cell(make_cell(model, "wechat", None, settings, kind="compare", prepare=False))

    assert cell_of(2024)[0]["prepared_data"]["source"] == "built"
    mapped, mapped_predictions = cell_of(7)
    built, built_predictions = cell_of(7, prepared_store="~")
    assert (mapped["prepared_data"]["source"], built["prepared_data"]["source"]) == ("store", "built (prepared_store off)")
    mapped_outcome, built_outcome = outcome(mapped, mapped_predictions), outcome(built, built_predictions)
    for side in (mapped_outcome, built_outcome):
        side["config"] = {k: v for k, v in side["config"].items() if k != "prepared_store"}
    assert mapped_outcome == built_outcome


def test_a_build_that_draws_random_numbers_is_reused_only_from_the_same_random_state(data, monkeypatch):
    def drawing(config):
        torch.rand(1)                                   # a build that draws: its output may depend on the seed
        return create(config)

    create = prepared_store.create_dataset
    monkeypatch.setattr(prepared_store, "create_dataset", drawing)
    assert prepare(data, seed=2024)[1].source == "built"
    assert prepare(data, seed=2024)[1].source == "store"
    assert prepare(data, seed=7)[1].source == "built"
    monkeypatch.undo()
    first = prepare(data, seed=11)[1]                   # draws nothing: keyed without the random state
    assert first.source == "built"
    assert prepare(data, seed=12)[1].source == "store"


def prepare(root: Path, model: str = "MMa4CTR", **extra):
    config = build_config(model, "wechat", None, settings_of(root, **extra))
    init_seed(config["seed"], config["reproducibility"])
    return config, prepared_datasets_of(config)


def prepared_datasets_of(config):
    return prepared_store.prepared_datasets(config)


def test_the_store_is_used_only_for_the_same_data_settings_and_code(data, monkeypatch):
    config, first = prepare(data)
    assert first.source == "built"
    config, again = prepare(data, learning_rate=0.01, epochs=3)       # read by training only
    assert (again.source, again.key) == ("store", first.key)
    assert config["train_profile"] == "leave_one_out"                 # the build's write, put back
    assert prepare(data, profile_length=5)[1].source == "built"
    assert prepare(data, "DIN", MAX_ITEM_LIST_LENGTH=10)[1].source == "built"
    assert prepare(data, "DIN", MAX_ITEM_LIST_LENGTH=10)[1].source == "store"
    assert prepare(data, "DIN", MAX_ITEM_LIST_LENGTH=12)[1].source == "built"
    assert prepare(data, prepared_store="~")[1].source == "built (prepared_store off)"

    monkeypatch.setattr(prepared_store, "code_version", lambda: "another code version")
    assert prepare(data)[1].source == "built"
    monkeypatch.undo()
    assert prepare(data)[1].source == "store"

    inter = data / "data" / "wechat" / "wechat.inter"
    lines = inter.read_text().splitlines(keepends=True)
    fields = lines[1].split("\t")
    fields[3] = "1" if fields[3] == "0" else "0"                      # one label flipped
    inter.write_text("".join([lines[0], "\t".join(fields)] + lines[2:]))
    changed = prepare(data)[1]
    assert changed.source == "built" and changed.key != first.key


def test_a_damaged_entry_is_removed_and_built_again(data):
    _, first = prepare(data)
    entry = data / "store" / first.key
    blocks = sorted(entry.glob("block*.npy"), key=lambda path: path.stat().st_size)
    with open(blocks[-1], "r+b") as handle:
        handle.truncate(blocks[-1].stat().st_size - 100)
    assert prepare(data)[1].source == "built"
    assert prepare(data)[1].source == "store"
    graph = (entry / "graph.json").read_text()
    (entry / "graph.json").write_text(graph.replace('"t":"object"', '"t":"objekt"', 1))   # same size, unknown tag
    assert prepare(data)[1].source == "built"
    assert prepare(data)[1].source == "store"


def test_the_keep_setting_bounds_the_entries(data):
    for length in (3, 4, 5):
        prepare(data, profile_length=length, prepared_store_keep=2)
    entries = [path for path in (data / "store").iterdir() if path.is_dir()]
    assert len(entries) == 2


@pytest.mark.unit
def test_a_graph_comes_back_with_its_values_shapes_and_sharing(tmp_path):
    column = torch.arange(10, dtype=torch.int64)
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    shared = {"a": 1}
    roots = {
        "column": column, "slice": column[2:7], "strided": column[::3], "matrix": matrix,
        "tensor_of_matrix": torch.from_numpy(matrix), "tokens": np.array(["[PAD]", "u1", "u22"]),
        "objects": np.array(["x", "yz"], dtype=object), "keys": {np.str_("u1"): 1, np.str_("u2"): 2},
        "mixed": {1: "one", (2, 3): [4.5, float("nan")], None: {7}}, "shared": [shared, shared],
        "enum": FeatureType.FLOAT_SEQ, "scalars": (np.int64(3), np.float32(0.1), np.bool_(True), np.str_("s")),
        "empty": torch.empty((0, 4)), "flags": torch.tensor([True, False]),
    }
    write_graph(tmp_path, roots)
    back = read_graph(tmp_path)
    assert torch.equal(back["column"], column) and torch.equal(back["slice"], column[2:7])
    assert torch.equal(back["strided"], column[::3]) and back["strided"].stride() == (3,)
    assert np.array_equal(back["matrix"], matrix) and back["matrix"].dtype == np.float32
    assert back["tokens"].tolist() == ["[PAD]", "u1", "u22"] and back["objects"].dtype == object
    assert all(type(key) is np.str_ for key in back["keys"]) and back["keys"] == {"u1": 1, "u2": 2}
    assert back["mixed"][1] == "one" and back["mixed"][None] == {7} and np.isnan(back["mixed"][(2, 3)][1])
    assert back["shared"][0] is back["shared"][1]
    assert back["enum"] is FeatureType.FLOAT_SEQ
    assert [type(value) for value in back["scalars"]] == [np.int64, np.float32, np.bool_, np.str_]
    assert back["scalars"][1] == np.float32(0.1)
    assert back["empty"].shape == (0, 4) and back["flags"].dtype == torch.bool
    back["column"][3] = -1                           # views of one block share memory, as before
    assert back["slice"][1] == -1
    back["matrix"][0, 0] = 99.0
    assert back["tensor_of_matrix"][0, 0] == 99.0
    assert len(list(tmp_path.glob("block*.npy"))) == 4   # column (with its views), matrix (with its tensor), tokens, flags


@pytest.mark.unit
@pytest.mark.parametrize("node, refused", [({"t": "pickle", "v": "cos\nsystem"}, "unknown tag"),
                                          ({"t": "object", "id": 0, "cls": "Popen", "v": {}}, "not an allowed"),
                                          ({"t": "enum", "cls": "Signals", "v": "SIGKILL"}, "not an allowed"),
                                          ({"t": "ref", "id": 5}, "before it is defined")])
def test_the_reader_refuses_what_it_does_not_know(tmp_path, node, refused):
    (tmp_path / "graph.json").write_text(json.dumps({"format": 1, "blocks": 0, "views": [], "roots": {"x": node}}))
    with pytest.raises(ObjectFileError, match=refused):
        read_graph(tmp_path)


@pytest.mark.unit
@pytest.mark.parametrize("value", [lambda: 1, object(), torch.zeros(2, requires_grad=True), np.array([1, "a"], dtype=object)])
def test_the_writer_refuses_values_it_does_not_write(tmp_path, value):
    with pytest.raises(Unsupported):
        write_graph(tmp_path, {"x": {"inner": [value]}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_the_reads_and_writes_of_a_build_are_recorded():
    class Config:
        def __init__(self, values):
            self.final_config_dict = values

        def __getitem__(self, key):
            return self.final_config_dict.get(key)

        def __setitem__(self, key, value):
            self.final_config_dict[key] = value

    config = Config({"profile_length": 21, "split": {"RS": [0.8]}, "learning_rate": 0.001, "numerical": []})
    with recording_reads(config) as recorded:
        assert config["profile_length"] == 21
        assert config["absent"] is None
        config["numerical"] = ["item_mm"]
        assert config["numerical"] == ["item_mm"]     # read after its write: not an input
        config["split"]["RS"].append(0.2)             # changed in place: a write
    assert set(recorded.reads) == {"profile_length", "absent", "split"}
    assert recorded.reads["absent"] == MISSING and not recorded.everything
    assert recorded.writes == {"numerical": ["item_mm"], "split": {"RS": [0.8, 0.2]}}
    assert type(config.final_config_dict) is dict
