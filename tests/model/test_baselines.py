"""The eight RecBole baselines through our run, on the tiny generated sample: same split, same
test pairs as MMa4CTR, histories from the past, LogLoss on sigmoid(score), real labels for DIN."""

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import copy_atomic, run_settings

RANKING = ["BPR", "FPMC", "NGCF", "LightGCN", "BERT4Rec", "GCSAN"]
PROBABILITY = ["DIN", "DIEN"]
BASELINES = RANKING + PROBABILITY
SEQUENTIAL = ["FPMC", "BERT4Rec", "GCSAN", "DIN", "DIEN"]

# Smaller layers and histories keep the file fast; the code path is the real one.
SHRINK = {
    "BERT4Rec": {"MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 2048},
    "GCSAN": {"MAX_ITEM_LIST_LENGTH": 10},
    "DIN": {"MAX_ITEM_LIST_LENGTH": 10, "mlp_hidden_size": "[32,32]"},
    "DIEN": {"MAX_ITEM_LIST_LENGTH": 10, "mlp_hidden_size": "[32,32]"},
    "MMa4CTR": {"profile_length": 5},
}


class Capture:
    """Wraps run.py's trainer lookup to keep each run's trainer, config, evaluated datasets
    and (when asked) the labels of every training batch."""

    def __init__(self):
        self.runs = {}

    def wrap(self, get_trainer):
        capture = self

        def capturing(model_type, model_name):
            trainer_class = get_trainer(model_type, model_name)

            class Capturing(trainer_class):
                def __init__(self, config, model):
                    super().__init__(config, model)
                    run = capture.runs.setdefault(model_name, {})
                    run.update(trainer=self, config=config, base=trainer_class, train_batches=[])
                    loss = model.calculate_loss

                    def recording_loss(interaction):
                        run["train_batches"].append({k: interaction[k].detach().cpu().clone()
                                                     for k in (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"],
                                                               config["TIME_FIELD"], config["LABEL_FIELD"])
                                                     if k in interaction})
                        return loss(interaction)

                    model.calculate_loss = recording_loss

                def fit(self, train_data, *args, **kwargs):
                    capture.runs[model_name]["train_dataset"] = train_data._dataset
                    return super().fit(train_data, *args, **kwargs)

                def evaluate(self, eval_data, *args, **kwargs):
                    capture.runs[model_name]["eval_dataset"] = eval_data._dataset
                    capture.runs[model_name]["eval_data"] = eval_data
                    return super().evaluate(eval_data, *args, **kwargs)

            return Capturing

        return capturing


@pytest.fixture(scope="module")
def runs(tiny_atomic, tmp_path_factory):
    from recbole_mma4ctr import run as run_module

    source, _ = tiny_atomic
    root = tmp_path_factory.mktemp("baselines")
    copy_atomic(source, root / "data", "tb")
    capture = Capture()
    records = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "get_trainer", capture.wrap(run_module.get_trainer))
        for model in BASELINES + ["MMa4CTR"]:
            settings = run_settings(root / model, data_path=root / "data", epochs=1, **SHRINK.get(model, {}))
            started = time.time()
            records[model] = run_module.run_recbole_mma4ctr(model, "tb", None, settings)
            print(f"{model}: {time.time() - started:.1f} s")
    inter = pd.read_csv(source / "wechat.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    return records, capture.runs, inter


def scored_pairs(run):
    scored = run["trainer"].last_scored
    return list(zip(scored["user"].astype(str), scored["item"].astype(str), scored["timestamp"].astype(np.int64)))


def test_every_baseline_writes_a_record_with_the_four_metrics(runs):
    records, captured, _ = runs
    for model in BASELINES:
        record = records[model]
        assert record["model"] == model
        assert set(record["test"]) == {"auc", "gauc", "uauc", "logloss"}, model
        assert all(math.isfinite(v) for v in record["test"].values()), (model, record["test"])
        assert record["epochs_run"] == 1


def test_every_model_scores_the_same_test_pairs_as_mma4ctr(runs):
    records, captured, inter = runs
    reference = scored_pairs(captured["MMa4CTR"])
    # the last 10% of the interactions in time order (RecBole rounds the valid and test parts down)
    n_test = int(0.1 * len(inter))
    assert len(reference) == n_test
    by_time = inter.sort_values("timestamp", kind="stable").tail(n_test)
    assert reference == list(zip(by_time["user_id"].astype(str), by_time["item_id"].astype(str),
                                 by_time["timestamp"].astype(np.int64)))
    for model in BASELINES:
        assert records[model]["split_sizes"] == records["MMa4CTR"]["split_sizes"], model
        assert scored_pairs(captured[model]) == reference, model
        labels = captured[model]["trainer"].last_scored["label"]
        assert np.array_equal(labels, captured["MMa4CTR"]["trainer"].last_scored["label"]), model


def every_row(dataset):
    """All rows of a dataset as its batches carry them (the history lists are made per batch)."""
    return dataset[np.arange(len(dataset))]


def test_first_interactions_are_kept_with_an_empty_history(runs):
    """RecBole's SequentialDataset would drop them and shift the split; they are kept here."""
    _, captured, inter = runs
    first_rows = inter.sort_values("timestamp", kind="stable").drop_duplicates("user_id")
    for model in SEQUENTIAL:
        rows = 0
        for split in ("train_dataset", "eval_dataset"):
            feat = every_row(captured[model][split])
            empty = ~feat["item_id_list"].numpy().any(axis=1)
            assert set(feat["item_length"].numpy()[empty]) <= {0 if model == "DIN" else 1}, model
            rows += int(empty.sum())
        assert rows == captured[model]["train_dataset"].user_num - 1 == len(first_rows), model


def test_histories_are_the_users_earlier_interactions(runs):
    _, captured, inter = runs
    for model in ["BERT4Rec", "DIN", "DIEN", "FPMC"]:
        test_set = captured[model]["eval_dataset"]
        max_len = test_set.field2seqlen["item_id_list"]
        feat = every_row(test_set)
        users = test_set.id2token("user_id", feat["user_id"].numpy())
        times = feat["timestamp"].numpy().astype(np.int64)
        picked = np.linspace(0, len(users) - 1, 25).astype(int)
        for row in picked:
            earlier = inter[(inter["user_id"].astype(str) == str(users[row])) & (inter["timestamp"] < times[row])]
            earlier = earlier.sort_values("timestamp", kind="stable")["item_id"].astype(str).tolist()
            expected = earlier[-max_len:]
            length = int(feat["item_length"][row])
            items = feat["item_id_list"][row].numpy()
            history = [str(t) for t in test_set.id2token("item_id", items[items > 0])]
            assert history == expected, (model, row)
            assert length == max(len(expected), 0 if model == "DIN" else 1), (model, row)
            # every history item belongs to an interaction of that user with an earlier timestamp
            assert set(history) <= set(earlier)


def test_dien_negative_histories_follow_the_history(runs):
    _, captured, _ = runs
    feat = every_row(captured["DIEN"]["eval_dataset"])
    items, negatives = feat["item_id_list"].numpy(), feat["neg_item_id_list"].numpy()
    assert np.array_equal(items > 0, negatives > 0)
    assert not np.any((items == negatives) & (items > 0))


def test_ranking_models_logloss_is_the_logloss_of_sigmoid_scores(runs):
    records, captured, _ = runs
    from sklearn.metrics import roc_auc_score

    for model in RANKING + PROBABILITY + ["MMa4CTR"]:
        trainer = captured[model]["trainer"]
        scored = trainer.last_scored
        raw, labels = scored["raw_score"].astype(np.float64), scored["label"].astype(np.float64)
        if model in RANKING:
            assert trainer.scores_squashed, model
            probability = 1.0 / (1.0 + np.exp(-raw))
        else:
            assert not trainer.scores_squashed, model  # already probabilities: not squashed twice
            assert raw.min() >= 0.0 and raw.max() <= 1.0
            probability = raw
        assert np.allclose(scored["score"], probability, rtol=0, atol=1e-12), model
        clipped = np.clip(probability, 1e-15, 1 - 1e-15)
        by_hand = float(np.mean(-labels * np.log(clipped) - (1 - labels) * np.log(1 - clipped)))
        assert records[model]["test"]["logloss"] == pytest.approx(by_hand, abs=1e-4), model
        if model in RANKING:
            # sigmoid(score) of a ranking model is not calibrated (NGCF's scores all start above
            # 0, so its LogLoss is near 2 after one epoch), but it is a log loss of probabilities,
            # not RecBole's clip of raw scores (10-25 in the paper)
            assert by_hand < 3.0, (model, by_hand)
        else:
            assert by_hand < 1.0, (model, by_hand)
        # a monotone squash leaves the AUC alone
        assert records[model]["test"]["auc"] == pytest.approx(roc_auc_score(labels, raw), abs=1e-4), model


def test_our_trainer_reloads_each_baselines_best_checkpoint(runs):
    from recbole_mma4ctr.trainer import Trainer

    _, captured, _ = runs
    for model in BASELINES:
        run = captured[model]
        trainer = run["trainer"]
        assert issubclass(run["base"], Trainer), model
        assert trainer.scheduler is None and trainer.interrupt is False, model  # paper's extras off
        checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())
        before = trainer.last_scored["raw_score"].copy()
        with torch.no_grad():  # spoil every float tensor of the state, buffers (DIN's BatchNorm) included
            for tensor in trainer.model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.add_(0.5)
        trainer.evaluate(run["eval_data"], load_best_model=True)
        assert np.array_equal(trainer.last_scored["raw_score"], before), model
        for name, tensor in trainer.model.state_dict().items():
            assert torch.equal(tensor, checkpoint["state_dict"][name]), (model, name)


def test_din_trains_on_the_real_labels_without_sampled_rows(runs):
    records, captured, inter = runs
    for model in PROBABILITY:
        batches = captured[model]["train_batches"]
        seen = {key: torch.cat([b[key] for b in batches]).numpy() for key in batches[0]}
        assert len(seen["label"]) == records[model]["split_sizes"]["train"], model
        truth = dict(zip(inter["timestamp"].astype(np.int64), inter["label"]))
        expected = np.array([truth[int(t)] for t in seen["timestamp"]])
        assert np.array_equal(seen["label"], expected), model
        assert 0 < seen["label"].mean() < 0.5


def test_pairwise_models_train_on_every_interaction_with_sampled_negatives(runs):
    records, captured, _ = runs
    for model in ["BPR", "FPMC", "NGCF", "LightGCN"]:
        batches = captured[model]["train_batches"]
        rows = sum(len(b["item_id"]) for b in batches)
        assert rows == records[model]["split_sizes"]["train"], model
        assert captured[model]["config"]["train_neg_sample_args"]["distribution"] == "uniform"


@pytest.mark.unit
def test_vectorised_gcsan_graph_equals_recboles_loop():
    from recbole.model.sequential_recommender.gcsan import GCSAN as RecBoleGCSAN

    from recbole_mma4ctr.model.baselines import session_graphs

    class Device:
        device = "cpu"

    for seed, (batch, length, vocabulary) in enumerate([(300, 12, 6), (200, 50, 40), (50, 1, 3), (50, 2, 2)]):
        generator = torch.Generator().manual_seed(seed)
        sequences = torch.randint(1, vocabulary, (batch, length), generator=generator)
        lengths = torch.randint(0, length + 1, (batch,), generator=generator)
        sequences[torch.arange(length)[None, :] >= lengths[:, None]] = 0
        expected = RecBoleGCSAN._get_slice(Device(), sequences)
        for mine, theirs in zip(session_graphs(sequences), expected):
            assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), seed


@pytest.mark.unit
def test_user_histories_break_time_ties_by_row_order():
    from recbole_mma4ctr.model.baselines import chronological_order, history_lists

    users = np.array([1, 2, 1, 1, 2, 1])
    times = np.array([5.0, 1.0, 5.0, 0.0, 1.0, 9.0])
    order, earlier, position = chronological_order(users, times)
    # user 1 in time order (ties by row order): rows 3, 0, 2, 5; then user 2's: rows 1, 4
    assert order.tolist() == [3, 0, 2, 5, 1, 4] and earlier.tolist() == [0, 1, 2, 3, 0, 1]
    lists = history_lists(order + 1, np.minimum(earlier, 2), position, 2)   # row r's value: r + 1 (0 pads)
    assert lists.tolist() == [[4, 0], [0, 0], [4, 1], [0, 0], [2, 0], [1, 3]]
    assert lists.dtype == order.dtype


def test_fpmc_one_item_history_is_the_last_item_of_the_long_one(tiny_atomic, tmp_path):
    """FPMC reads only item_id_list[item_length - 1]: its 1-item history (FPMC.yaml) gives it the
    same input as RecBole's 50-item default."""
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", "tf")
    last_items = {}
    for length in (1, 50):
        config = build_config("FPMC", "tf", None, run_settings(tmp_path, data_path=tmp_path / "data",
                                                               MAX_ITEM_LIST_LENGTH=length))
        dataset = create_dataset(config)
        dataset.build()
        feat = every_row(dataset)
        index = (feat["item_length"] - 1).unsqueeze(1)
        last_items[length] = (feat["item_id_list"].gather(1, index).squeeze(1), feat["item_id"], feat["timestamp"])
    for short, long in zip(last_items[1], last_items[50]):
        assert torch.equal(short, long)
