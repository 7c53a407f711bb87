"""Feature-fair baselines (<Model>+mm) and the converter's float_seq columns (issue 14, part 1).

Known answers: RecBole's own embedding code on vectors with equal means and different
directions; parameter counts from each architecture's formula; the batches' item_mm against
MMa4CTR's fused matrix, by raw item id; stock RecBole's Dataset reading the .item float_seq
columns against the .mm.npz rows.
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, copy_atomic, run_settings

NAME = "ff"


@pytest.fixture(scope="module")
def data(tiny_atomic, tmp_path_factory):
    source, _ = tiny_atomic
    root = tmp_path_factory.mktemp("feature_fair")
    copy_atomic(source, root / "data", NAME)
    return root


def settings(root: Path, **extra) -> dict:
    return run_settings(root, data_path=root / "data", MAX_ITEM_LIST_LENGTH=10, state="warning", **extra)


def built(root: Path, model: str, **extra):
    """(config, dataset, train dataloader, model, trainable parameters) as run.py builds them."""
    from recbole.data import data_preparation

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset, get_model

    config = build_config(model, NAME, None, settings(root, **extra))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    net = get_model(model)(config, train._dataset)
    return config, dataset, train, net, sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def mma4ctr_features(data):
    """MMa4CTR's own dataset on the same files: fused item matrix and profiles, by raw id."""
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    dataset = create_dataset(build_config("MMa4CTR", NAME, None, settings(data)))
    dataset.build()
    return dataset


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["DIN+mm", "DIEN+mm", "DeepFM+mm", "WideDeep+mm", "xDeepFM+mm"])
def test_a_plus_mm_name_of_a_feature_model_is_accepted(name):
    from recbole_mma4ctr.utils import check_model, get_model

    assert check_model(name) == name
    assert get_model(name).__name__ == name[:-3]


@pytest.mark.unit
@pytest.mark.parametrize("name, why", [("BPR+mm", "general recommender that does not embed item features"),
                                       ("LightGCN+mm", "does not embed item features"),
                                       ("GCSAN+mm", "sequential recommender that does not embed item features"),
                                       ("MMa4CTR+mm", "already reads the multimodal features"),
                                       ("Nope+mm", "unknown model 'Nope'")])
def test_a_model_without_a_plus_mm_variant_is_refused_saying_why(name, why):
    from recbole_mma4ctr.cells import make_cell
    from recbole_mma4ctr.errors import CellError

    with pytest.raises(CellError, match=why):
        make_cell(name, "wechat")


def test_the_command_line_refuses_it_in_one_line():
    done = subprocess.run([sys.executable, str(REPO / "run_recbole_mma4ctr.py"), "--model=BPR+mm", "--dataset=wechat"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "BPR+mm" in lines[0] and "does not embed item features" in lines[0]


def test_the_marker_setting_cannot_be_given_by_hand(data):
    from recbole_mma4ctr.config import build_config

    with pytest.raises(ValueError, match="set by the model name"):
        build_config("DIN", NAME, None, settings(data, feature_fair=True))


# ------------------------------------------------------------------ RecBole's float_seq embedding


def pooled(rule: str, vectors, table):
    """RecBole 1.2.1's own pooling (context-aware and sequence layers) of ``vectors`` as pairs."""
    from recbole.model.abstract_recommender import ContextRecommender
    from recbole.model.layers import ContextSeqEmbAbstractLayer

    from recbole_mma4ctr.data.feature_fair import float_seq_pairs

    pairs = torch.from_numpy(float_seq_pairs(np.asarray(vectors, dtype=np.float32), rule))
    context = ContextRecommender.embed_float_seq_fields(SimpleNamespace(float_seq_embedding_table=[table],
                                                                        device="cpu"), [pairs])[:, 0]
    sequence = ContextSeqEmbAbstractLayer.embed_float_seq_fields(
        SimpleNamespace(float_seq_embedding_table={"item": [table]}, pooling_mode="mean", device="cpu"),
        [pairs[None]], "item")[0, :, 0]
    return context, sequence


@pytest.mark.unit
def test_position_indices_keep_a_vectors_direction_recbole_stock_indices_collapse_it():
    from recbole_mma4ctr.data.feature_fair import bucket_count

    torch.manual_seed(0)
    a, b = [0.9, 0.1, 0.8, 0.2], [0.2, 0.8, 0.1, 0.9]     # equal means (0.5), different directions
    position = torch.nn.Embedding(bucket_count(4, "position"), 3)
    stock = torch.nn.Embedding(bucket_count(4, "recbole"), 3)
    assert position.num_embeddings == 5 and stock.num_embeddings == 2
    with torch.no_grad():
        for context, sequence in (pooled("position", [a, b], position),):
            assert torch.allclose(context, sequence)
            for row, vector in zip(context, (a, b)):       # (1/d) sum_j v_j E[j + 1]
                assert torch.allclose(row, (torch.tensor(vector)[:, None] * position.weight[1:]).mean(0), atol=1e-6)
            assert (context[0] - context[1]).abs().max() > 0.05
        context, sequence = pooled("recbole", [a, b], stock)
        assert torch.allclose(context, sequence)
        assert torch.allclose(context[0], context[1])       # mean(v) * E[1] for both
        assert torch.allclose(context[0], 0.5 * stock.weight[1], atol=1e-6)


# ------------------------------------------------------------------ the features reach the model


def test_parameter_counts_grow_by_exactly_the_feature_s_share(data):
    """DeepFM: the float_seq table ((d+1) x emb), its first-order table ((d+1) x 1) and one more
    field into the deep MLP (emb x width). DIN: the table, and one more item field into the DNN
    (3 emb) and the attention MLP (4 emb), each times its first width."""
    config, dataset, _, _, plain = built(data, "DeepFM")
    mm_config, mm_dataset, _, _, with_mm = built(data, "DeepFM+mm")
    d = int(mm_dataset.field2seqlen["item_mm"])
    emb, width = config["embedding_size"], config["mlp_hidden_size"][0]
    assert d == 128 and mm_dataset.field2bucketnum["item_mm"] == d + 1
    assert with_mm - plain == (d + 1) * emb + (d + 1) + emb * width
    assert mm_config["model"] == "DeepFM" and mm_config["feature_fair"] is True
    assert mm_config["numerical_features"] == ["item_mm"] and not config["feature_fair"]

    config, _, _, _, plain = built(data, "DIN")
    _, _, _, _, with_mm = built(data, "DIN+mm")
    emb, width = config["embedding_size"], config["mlp_hidden_size"][0]
    assert with_mm - plain == (d + 1) * emb + (3 + 4) * emb * width

    _, _, _, _, stock = built(data, "DeepFM+mm", mm_float_seq_index="recbole")
    _, _, _, _, plain = built(data, "DeepFM")
    emb, width = 10, 128
    assert stock - plain == 2 * emb + 2 + emb * width    # RecBole's stock table: two rows


def item_vectors(dataset, ids, reference):
    """MMa4CTR's fused vectors of ``dataset``'s internal item ids, found by raw id."""
    tokens = dataset.id2token(dataset.iid_field, ids.numpy())
    return reference.item_feat["item_mm"][torch.as_tensor(reference.token2id(reference.iid_field, tokens))]


@pytest.mark.parametrize("model", ["DeepFM+mm", "DIN+mm"])
def test_a_batch_carries_the_fused_vector_of_its_items(data, mma4ctr_features, model):
    config, dataset, train, net, _ = built(data, model)
    batch = next(iter(train))
    d = mma4ctr_features.item_feat["item_mm"].shape[1]
    items = batch[config["ITEM_ID_FIELD"]]
    assert batch["item_mm"].shape == (len(items), d, 2)
    assert torch.equal(batch["item_mm"][..., 0], item_vectors(dataset, items, mma4ctr_features))
    assert torch.equal(batch["item_mm"][..., 1], torch.arange(1, d + 1, dtype=torch.float32).expand(len(items), d))
    if model == "DIN+mm":      # DIN reads the history's features from its own table, by item id
        table = net.embedding_layer.item_feat["item_mm"]
        history = batch["item_id_list"][batch["item_length"] > 0][:, 0]
        assert torch.equal(table[history][..., 0], item_vectors(dataset, history, mma4ctr_features))
    net.calculate_loss(batch).backward()
    weights = [m for m in net.modules() if isinstance(m, torch.nn.Embedding) and m.num_embeddings == d + 1]
    assert len(weights) >= 1 and all(w.weight.grad is not None and w.weight.grad[1:].abs().sum() > 0 for w in weights)


@pytest.mark.parametrize("model", ["DIN+mm", "DIEN+mm"])
def test_the_lean_sequence_pooling_gives_recbole_s_scores(data, model):
    """DIN's and DIEN's +mm fields are pooled by a matrix product (feature_fair.lean_float_seq_fields);
    with RecBole's own method put back, the same batch gets the same scores."""
    _, _, train, net, _ = built(data, model)
    batch = next(iter(train))
    layer = net.embedding_layer
    assert "embed_float_seq_fields" in vars(layer)              # the lean method is in place
    net.eval()
    with torch.no_grad():
        lean = net.predict(batch)
        seq = batch["item_id_list"][:64]
        fields = [layer.item_feat["item_mm"][seq]]
        pooled = layer.embed_float_seq_fields(fields, "item")
        del layer.embed_float_seq_fields                        # RecBole's ContextSeqEmbAbstractLayer method
        stock = net.predict(batch)
        assert torch.allclose(pooled, layer.embed_float_seq_fields(fields, "item"), atol=1e-6)
    assert torch.allclose(lean, stock, atol=1e-5)
    assert type(net).__name__ == model[:-3]


def test_user_profiles_are_mma4ctr_s_train_only_profiles(data, mma4ctr_features):
    _, plain_dataset, _, _, without = built(data, "DeepFM+mm")
    config, dataset, train, _, with_profiles = built(data, "DeepFM+mm", mm_user_profiles=True)
    fields = [f"profile_{m}" for m in ("visual", "acoustic", "textual")]
    assert config["numerical_features"] == fields + ["item_mm"]
    length = mma4ctr_features.user_feat[fields[0]].shape[1]             # L + 1
    emb, width = config["embedding_size"], config["mlp_hidden_size"][0]
    assert with_profiles - without == 3 * ((length + 1) * emb + (length + 1) + emb * width)
    users = torch.arange(1, dataset.user_num)
    tokens = dataset.id2token(dataset.uid_field, users.numpy())
    theirs = torch.as_tensor(mma4ctr_features.token2id(mma4ctr_features.uid_field, tokens))
    for field in fields:
        assert torch.equal(dataset.user_feat[field][users][..., 0], mma4ctr_features.user_feat[field][theirs])
    assert "profile_visual" in next(iter(train))
    assert plain_dataset.user_feat is None or "profile_visual" not in plain_dataset.user_feat


# ------------------------------------------------------------------ runs, records, the comparison


def test_short_runs_are_recorded_under_the_name_given_and_compare_side_by_side(data):
    import json

    from recbole_mma4ctr.cells import make_cell
    from recbole_mma4ctr.record import read_record, write_record
    from recbole_mma4ctr.report.comparison import write_comparison
    from recbole_mma4ctr.run import run_cell

    small = {"epochs": 1, "mlp_hidden_size": "[32,32]", **settings(data)}
    outcomes = []
    for model in ("DIN", "DIN+mm", "DeepFM+mm"):
        cell = make_cell(model, NAME, None, small, kind="compare", name=model, prepare=False)
        record, predictions = run_cell(cell)
        path = write_record(record, data / "results", predictions)
        outcomes.append((cell, read_record(path)))
        assert path.name.startswith(f"{model}-{NAME}-")
    records = {cell["cell"]: record for cell, record in outcomes}
    assert records["DIN+mm"]["model"] == "DIN+mm" and records["DIN+mm"]["config"]["model"] == "DIN"
    assert records["DeepFM+mm"]["config"]["model"] == "DeepFM"
    assert records["DIN+mm"]["features"]["input_dims"] == {"item_mm": 128}
    assert records["DIN+mm"]["trainable_parameters"] > records["DIN"]["trainable_parameters"]
    assert len({r["key"] for r in records.values()}) == 3      # the model as named is part of the identity
    table = write_comparison(data / "results", outcomes, [], "honest")
    names = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert names[:3] == ["DIN", "DIN+mm", "DeepFM+mm"]
    summary = json.loads((data / "results" / "comparison.json").read_text())
    assert summary["same_test_pairs"] is True
    assert [row["model"] for row in summary["rows"][:3]] == ["DIN", "DIN+mm", "DeepFM+mm"]


# ------------------------------------------------------------------ the converter's float_seq columns


def stock_dataset(folder: Path, name: str, columns, numerical=()):
    """RecBole's own Config and Dataset (not ours) reading the atomic files, built."""
    from recbole.config import Config
    from recbole.data.dataset import Dataset

    from recbole_mma4ctr.compat import element_lengths, recbole_stack_settings

    stock_settings = Config.compatibility_settings
    if int(np.__version__.split(".")[0]) >= 2:
        # RecBole 1.2.1's Config dies on numpy 2 before reading anything (np.float_); only that
        # alias table is replaced, the reading stays RecBole's own
        Config.compatibility_settings = lambda self: recbole_stack_settings()
    try:
        config = Config(model="DeepFM", dataset=name, config_dict={
            "data_path": str(folder.parent), "load_col": {"inter": ["user_id", "item_id", "label", "timestamp"],
                                                          "item": ["item_id", *columns]},
            "numerical_features": list(numerical), "show_progress": False, "checkpoint_dir": str(folder / "saved")})
    finally:
        Config.compatibility_settings = stock_settings
    # on pandas 3 RecBole's own reading of a float_seq column needs the one pandas shim that
    # restores Series.agg(len) as element lengths (compat.element_lengths); on pandas 2 it is a no-op
    agg = pd.Series.agg
    pd.Series.agg = element_lengths(agg)
    try:
        dataset = Dataset(config)
        dataset.build()
    finally:
        pd.Series.agg = agg
    return dataset


def test_item_float_seq_writes_the_modality_vectors_stock_recbole_reads(tiny_raw, tmp_path):
    from recbole_mma4ctr.data.feature_fair import float_seq_pairs
    from recbole_mma4ctr.prepare.wechat import convert

    out = tmp_path / "wechat"
    convert(tiny_raw, out, {"min_user_actions": 0})
    assert "float_seq" not in (out / "wechat.item").read_text().splitlines()[0]    # off by default
    convert(tiny_raw, out, {"min_user_actions": 0, "item_float_seq": True})
    header = (out / "wechat.item").read_text().splitlines()[0].split("\t")
    assert header[-3:] == ["visual:float_seq", "acoustic:float_seq", "textual:float_seq"]
    archive = np.load(out / "wechat.mm.npz")
    modalities = ("visual", "acoustic", "textual")
    dataset = stock_dataset(out, "wechat", modalities)
    ids = dataset.token2id("item_id", archive["item_id"])
    for name in modalities:
        assert np.array_equal(dataset.item_feat[name][ids].numpy(), archive[name])     # bit for bit
    # listed in numerical_features, stock RecBole makes the (value, 1) pairs of mm_float_seq_index: recbole
    dataset = stock_dataset(out, "wechat", ["visual"], numerical=["visual"])
    assert np.array_equal(dataset.item_feat["visual"][ids].numpy(), float_seq_pairs(archive["visual"], "recbole"))
    assert dataset.num("visual") == 2


def test_tiktok_item_float_seq(tmp_path):
    from recbole_mma4ctr.prepare.synthetic import tiktok as synthetic_tiktok
    from recbole_mma4ctr.prepare import tiktok

    raw = tmp_path / "raw"
    synthetic_tiktok.write_tiktok_raw(raw, scale="tiny", seed=3)
    out = tmp_path / "tiktok"
    tiktok.convert(raw, out, {"item_float_seq": True})
    archive = np.load(out / "tiktok.mm.npz")
    dataset = stock_dataset(out, "tiktok", ("visual", "acoustic", "textual"))
    ids = dataset.token2id("item_id", archive["item_id"])
    for name in ("visual", "acoustic", "textual"):
        assert np.array_equal(dataset.item_feat[name][ids].numpy(), archive[name])
