"""Multi-task models (docs/multitask.md) on the generated WeChat sample, whose seven actions share
one planted engagement latent: the converter's action columns, what the models learn of the
actions' shared structure, the challenge score of a multi-task cell by hand, and the one-action
model against the single-task model it generalises."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_settings
from recbole_mma4ctr.prepare.digests import sha256_of
from recbole_mma4ctr.prepare.wechat import ACTIONS

ROUND1 = {"read_comment": 4, "like": 3, "click_avatar": 2, "forward": 1}


@pytest.fixture(scope="session")
def all_actions(tiny_raw, tmp_path_factory):
    """The tiny sample converted with every action as a column, read_comment as RecBole's label."""
    from recbole_mma4ctr.prepare.wechat import convert

    out = tmp_path_factory.mktemp("all_actions") / "wechat"
    manifest = convert(tiny_raw, out, {"min_user_actions": 0, "action_labels": True, "label_action": "read_comment"})
    return out, manifest


def day_split(tmp_path, **extra) -> dict:
    return run_settings(tmp_path, split_rule="day", split_days=[12, 13, 14], valid_interrupt=False, **extra)


def trained(model_name, folder, tmp_path, **settings):
    """(model, test loader) after training ``model_name`` on ``folder`` with ``settings``."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset, get_model, get_trainer

    config = build_config(model_name, "wechat", None, day_split(tmp_path, data_path=folder.parent, **settings))
    init_seed(config["seed"], True)
    train, valid, test = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    model = get_model(model_name)(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train, valid, saved=True, show_progress=False)
    trainer.evaluate(test, load_best_model=True)
    return model, test, trainer


def models_of(model_name, folder, tmp_path, **settings):
    """(``model_name`` built on ``folder``'s training split, untrained; the test loader)."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset, get_model

    config = build_config(model_name, "wechat", None, day_split(tmp_path, data_path=folder.parent, **settings))
    init_seed(config["seed"], True)
    train, _, test = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    return get_model(model_name)(config, train._dataset), test


# ---- the converter ---------------------------------------------------------------------------------
def test_the_converter_writes_every_action_beside_the_label_and_plain_recbole_ignores_them(
        tiny_raw, tiny_atomic, all_actions, tmp_path):
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    folder, manifest = all_actions
    inter = pd.read_csv(folder / "wechat.inter", sep="\t")
    raw = pd.read_csv(tiny_raw / "user_action.csv")
    raw = raw.iloc[np.argsort(raw["date_"].to_numpy(), kind="stable")]       # chronological, file order within a day
    assert manifest["action_labels"] == [f"label_{a}" for a in ACTIONS]
    for action in ACTIONS:
        assert np.array_equal(inter[f"label_{action}:float"].to_numpy(), raw[action].to_numpy()), action
    assert np.array_equal(inter["label:float"].to_numpy(), raw["read_comment"].to_numpy())
    single = pd.read_csv(tiny_atomic[0] / "wechat.inter", sep="\t", nrows=1)
    assert not [c for c in single.columns if c.startswith("label_")]          # the default: one label, as before
    config = build_config("DeepFM", "wechat", None, day_split(tmp_path, data_path=folder.parent))
    assert not [f for f in create_dataset(config).field2type if f.startswith("label_")]   # load_col keeps them out


def test_the_tiktok_converter_writes_finish_and_like_beside_the_label(tmp_path):
    from recbole_mma4ctr.prepare import tiktok
    from recbole_mma4ctr.prepare.synthetic import tiktok as synthetic_tiktok

    raw = tmp_path / "raw"
    synthetic_tiktok.write_tiktok_raw(raw, scale="tiny", seed=3)
    manifest = tiktok.convert(raw, tmp_path / "out", {"min_user_interactions": 50, "action_labels": True})
    inter = pd.read_csv(tmp_path / "out" / "tiktok.inter", sep="\t")
    train = pd.read_csv(raw / tiktok.TRAIN_FILE, sep="\t", header=None, names=list(tiktok.TRAIN_COLUMNS))
    kept = train[train.groupby("uid")["uid"].transform("size") >= 50]
    kept = kept.iloc[np.argsort(kept["time"].to_numpy(), kind="stable")]     # chronological, file order among ties
    assert manifest["action_labels"] == ["label_like", "label_finish"]
    for action in ("finish", "like"):
        assert np.array_equal(inter[f"label_{action}:float"].to_numpy(), kept[action].to_numpy()), action
    assert np.array_equal(inter["label:float"].to_numpy(), kept["like"].to_numpy())      # label_action: like


def test_a_multitask_model_refuses_a_file_without_action_columns_naming_it(tiny_atomic, tmp_path):
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.model.tasks import MultiTaskError
    from recbole_mma4ctr.utils import create_dataset

    folder, _ = tiny_atomic
    config = build_config("MMoE", "wechat", None, day_split(tmp_path, data_path=folder.parent))
    with pytest.raises(MultiTaskError, match=r"wechat\.inter: line 1: no action columns .*--action_labels=true"):
        create_dataset(config)


def test_plus_mm_multitask_models_read_the_fused_vector_and_never_their_labels(all_actions, tmp_path):
    from recbole_mma4ctr.model.tasks import MultiTaskError
    from recbole_mma4ctr.utils import check_model

    folder, _ = all_actions
    model, _ = models_of("PLE+mm", folder, tmp_path)
    embedded = model.token_field_names + model.float_field_names + model.float_seq_field_names
    assert "item_mm" in model.float_seq_field_names and not [f for f in embedded if f.startswith("label")]
    assert model.task_fields == [f"label_{a}" for a in ACTIONS]
    with pytest.raises(MultiTaskError, match="numerical_features lists the label column label_like"):
        models_of("MMoE", folder, tmp_path, numerical_features=["label_like"])
    with pytest.raises(ValueError, match="MMa4CTRMultiTask already reads the multimodal features"):
        check_model("MMa4CTRMultiTask+mm")


def test_plan_cells_gives_a_multitask_model_one_cell_for_the_round():
    from recbole_mma4ctr.experiment.compare import plan_cells

    wechat = plan_cells(["PLE+mm", "DeepFM+mm"], "wechat", [1], "challenge", None,
                        {"challenge_round": "2", "data_path": "/d"}, [7])
    assert [c["cell"] for c in wechat] == ["PLE+mm-seed7"] + [f"DeepFM+mm-seed7-{a}" for a in ACTIONS]
    assert wechat[0]["settings"] == {"split_rule": "day", "split_days": [12, 13, 14], "min_user_actions": 0,
                                     "challenge_round": 2, "seed": 7, "label_action": "read_comment",
                                     "action_labels": True, "task_actions": list(ACTIONS), "data_path": "/d/all_actions"}
    assert wechat[0]["extra"]["challenge_actions"] == list(ACTIONS)
    [tiktok] = plan_cells(["MMa4CTRMultiTask"], "tiktok", [1], "challenge", None, {}, None)
    assert tiktok["cell"] == "MMa4CTRMultiTask" and tiktok["settings"] == {
        "label_action": "finish", "action_labels": True, "task_actions": ["finish", "like"],
        "data_path": "dataset_atomic/challenge/all_actions"}


def test_the_challenge_score_bootstrap_pairs_its_draws():
    """Two entries with the same scores differ by 0 in every draw; the draws scatter around the
    score of all users; a model that ranks every user's rows right scores 1 in every draw."""
    from recbole_mma4ctr.stats import challenge_score, challenge_score_resamples, uauc_users

    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(40), 10).astype(str)
    entry = {}
    for action in ("a", "b"):
        labels = (rng.random(400) < 0.4).astype(float)
        entry[action] = {"score": labels + rng.normal(0, 1.0, 400), "label": labels, "user": users}
    perfect = {a: {**v, "score": v["label"]} for a, v in entry.items()}
    weights = {"a": 3, "b": 1}
    draws = challenge_score_resamples([entry, dict(entry), perfect], "uauc", weights, resamples=300)
    assert np.array_equal(draws[0], draws[1]) and np.allclose(draws[2], 1.0)
    score = challenge_score({a: uauc_users(**{"scores": v["score"], "labels": v["label"], "users": v["user"]})["uauc"]
                             for a, v in entry.items()}, weights)
    assert np.quantile(draws[0], 0.025) < score < np.quantile(draws[0], 0.975)
    assert abs(np.mean(draws[0]) - score) < 0.02


# ---- known structure ---------------------------------------------------------------------------------
def test_a_multitask_model_recovers_the_actions_shared_engagement(all_actions, tmp_path):
    """The generator draws every action from one latent engagement with positive loadings, so the
    actions' true probabilities are increasing functions of one number: any two rank the rows
    alike. After three epochs MMoE's per-action scores must too (every pair's Spearman correlation
    on the test rows above 0.5; an untrained model's heads point anywhere), and each action with
    at least 10 test positives must be ranked above chance (AUC > 0.6)."""
    from scipy.stats import spearmanr

    from recbole_mma4ctr.stats import weighted_auc
    from recbole_mma4ctr.model.tasks import action_predictions

    folder, _ = all_actions
    model, test, _ = trained("MMoE", folder, tmp_path, epochs=3, train_batch_size=512)
    scored = action_predictions(model, test, "cpu")
    correlation = spearmanr(np.stack([scored[f"score_{a}"] for a in ACTIONS], axis=1)).correlation
    assert (correlation[np.triu_indices(len(ACTIONS), 1)] > 0.5).all(), np.round(correlation, 2)
    frequent = [a for a in ACTIONS if scored[f"label_{a}"].sum() >= 10]
    assert len(frequent) >= 4
    for action in frequent:
        assert weighted_auc(scored[f"score_{action}"], scored[f"label_{action}"]) > 0.6, action


# ---- the challenge score of a multi-task cell, by hand -------------------------------------------------
def naive_uauc(scores, labels, users) -> float:
    from sklearn.metrics import roc_auc_score

    frame = pd.DataFrame({"u": users, "y": labels, "s": scores})
    return float(np.mean([roc_auc_score(g["y"], g["s"]) for _, g in frame.groupby("u") if g["y"].nunique() == 2]))


def single_action_folder(source, root, action):
    """``source`` with ``action`` as RecBole's label: the single-task cell's folder (the converter
    keeps the same rows whatever the label, so only the label column differs)."""
    target = root / action / "wechat"
    shutil.copytree(source, target)
    inter = pd.read_csv(source / "wechat.inter", sep="\t")
    inter["label:float"] = inter[f"label_{action}:float"]
    inter.drop(columns=[c for c in inter.columns if c.startswith("label_")]).to_csv(target / "wechat.inter", sep="\t",
                                                                                     index=False)
    # the manifest describes the rewritten file, as the converter's own manifest for that label would
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["file_digests"]["wechat.inter"] = {"bytes": (target / "wechat.inter").stat().st_size,
                                                "sha256": sha256_of(target / "wechat.inter")}
    (target / "manifest.json").write_text(json.dumps(manifest))


def test_the_multitask_cell_scores_every_action_by_the_challenge_formula(all_actions, tmp_path):
    from recbole_mma4ctr.experiment.compare import plan_cells
    from recbole_mma4ctr.record import read_predictions, read_record, write_record
    from recbole_mma4ctr.report.comparison import write_comparison
    from recbole_mma4ctr.run import run_cell

    folder, _ = all_actions
    root = tmp_path / "data"
    shutil.copytree(folder, root / "all_actions" / "wechat")
    for action in ROUND1:
        single_action_folder(folder, root, action)
    cells = plan_cells(["PLE", "MMa4CTR"], "wechat", [1], "challenge", None,
                       run_settings(tmp_path, data_path=root, valid_interrupt=False, train_batch_size=1024), None)
    assert [c["cell"] for c in cells] == ["PLE"] + [f"MMa4CTR-{a}" for a in ROUND1]
    assert cells[0]["settings"]["task_actions"] == list(ROUND1) and cells[0]["settings"]["label_action"] == "read_comment"
    results = tmp_path / "results"
    outcomes = []
    for cell in cells:
        record, predictions = run_cell(cell)
        outcomes.append((cell, read_record(write_record(record, results, predictions))))
    record = outcomes[0][1]
    predictions = read_predictions(record)
    by_hand = {a: naive_uauc(predictions[f"score_{a}"], predictions[f"label_{a}"], predictions["user"]) for a in ROUND1}
    score = sum(ROUND1[a] * by_hand[a] for a in ROUND1) / 10
    assert record["challenge_score"] == pytest.approx(score, abs=1e-12)
    for action in ROUND1:
        assert record["test_by_action"][action]["uauc"] == pytest.approx(by_hand[action], abs=1e-12)
        # the single-task run on that action scored the same rows with the same labels
        single = next(r for c, r in outcomes if c["cell"] == f"MMa4CTR-{action}")
        assert record["test_by_action"][action]["test_rows"] == single["test_rows"]
    # predict (RecBole's own evaluation) scores the primary action
    assert np.allclose(predictions["score"], predictions["score_read_comment"], atol=1e-6)
    write_comparison(results, outcomes, [1], "challenge")
    summary = json.loads((results / "comparison.json").read_text())
    part = summary["challenge"]
    entries = {e["model"]: e for e in part["entries"]}
    assert entries["PLE"]["kind"] == "multi-task, one run" and entries["PLE"]["score"] == pytest.approx(score, abs=1e-12)
    assert part["same_test_rows"] == {a: True for a in ROUND1}
    low, high = entries["PLE"]["score_ci95"]
    assert low < score < high and high - low < 0.3
    [pair] = part["paired"]          # the multi-task cell against MMa4CTR's four runs, on the same user draws
    assert pair["model"] == "PLE" and pair["against"] == "MMa4CTR"
    assert pair["difference"] == pytest.approx(score - entries["MMa4CTR"]["score"], abs=1e-12)
    assert pair["ci95"][0] <= pair["difference"] <= pair["ci95"][1]
    paired = {(e["model"], e.get("action")): e for e in summary["paired"]}
    for action in ROUND1:
        entry = paired[(f"PLE-{action}", action)]
        assert "error" not in entry and entry["against_cell"] == f"MMa4CTR-{action}"
    markdown = (results / "comparison.md").read_text()
    assert "| PLE | - | multi-task, one run |" in markdown and "yes, for every action" in markdown


# ---- one action: the single-task model ---------------------------------------------------------------
def test_one_action_mma4ctr_multitask_is_mma4ctr(all_actions, tmp_path):
    """MMa4CTRMultiTask with task_actions [read_comment] on the file whose label is read_comment is
    MMa4CTR with the same settings and seed: the very same parameters at the start (its one
    output is MMa4CTR's classifier, base-rate bias included), the same training losses and, after
    two epochs, the same predictions (up to the float order of the loss's mean: 1e-6)."""
    folder, _ = all_actions
    single, test, single_trainer = trained("MMa4CTR", folder, tmp_path / "a", epochs=2, train_batch_size=1024)
    multi, _, multi_trainer = trained("MMa4CTRMultiTask", folder, tmp_path / "b", epochs=2, train_batch_size=1024,
                                      task_actions=["read_comment"])
    assert multi.actions == ["read_comment"] and multi.primary == 0
    first = list(single_trainer.train_loss_dict.values())
    assert list(multi_trainer.train_loss_dict.values()) == pytest.approx(first, rel=1e-6)
    batch = next(iter(test))[0]
    assert torch.allclose(single.predict(batch), multi.predict(batch), atol=1e-6)
    assert torch.equal(multi.predict_actions(batch)[:, 0], multi.predict(batch))
    untrained = [models_of(name, folder, tmp_path / name, task_actions=["read_comment"])[0]
                 for name in ("MMa4CTR", "MMa4CTRMultiTask")]
    states = [model.state_dict() for model in untrained]
    assert list(states[0]) == list(states[1]) and all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_one_expert_mmoe_is_share_bottom(all_actions, tmp_path):
    """MMoE with one expert: its gates' softmax over one expert is 1, so with ShareBottom's weights
    (bottom = the expert) it computes ShareBottom's scores for every action."""
    folder, _ = all_actions
    share, test = models_of("ShareBottom", folder, tmp_path, bottom_mlp_sizes=[32, 16])
    mmoe, _ = models_of("MMoE", folder, tmp_path, num_experts=1, expert_mlp_sizes=[32, 16])
    state = {k.replace("bottom.", "expert_layers.0."): v for k, v in share.state_dict().items()}
    state.update({k: v for k, v in mmoe.state_dict().items() if k.startswith("gates.")})
    mmoe.load_state_dict(state)
    batch = next(iter(test))[0]
    assert torch.allclose(mmoe.predict_actions(batch), share.predict_actions(batch), atol=1e-6)
    mmoe.gates[0].weight.data.normal_()          # the gate cannot matter with one expert
    assert torch.allclose(mmoe.predict_actions(batch), share.predict_actions(batch), atol=1e-6)
