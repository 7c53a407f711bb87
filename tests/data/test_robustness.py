"""The missing-modality study (issue 23, part 3): the replacement rule, the re-fused item vectors
the model reads, and a planted case.

Known answers: the rule on a small matrix (which items, which values, seeded, nested shares);
MMa4CTR's own fused matrix reproduced for unchanged inputs and changed only in the chosen rows;
on the tiny WeChat sample with its visual and acoustic matrices replaced by one vector shared by
every item (they then carry nothing) and its textual one kept (the generator plants the feed's topic in its
description, keywords and tags), replacing the textual vectors costs MMa4CTR more test AUC
than replacing either noise modality.
"""

from pathlib import Path

import numpy as np
import pytest

from conftest import copy_atomic, run_settings
from recbole_mma4ctr.errors import UsageError
from recbole_mma4ctr.data.robustness import replace_modality, training_mean

NAME = "rob"           # the planted sample
PLAIN = "robplain"     # the tiny sample as generated
SPEC = {"modalities": ["visual", "acoustic", "textual"], "fills": ["mean"], "shares": [0.0, 1.0],
        "control": "shuffle", "seed": 3}


# ------------------------------------------------------------------ the rule


def matrix_of(rows=12, width=3):
    return np.arange(rows * width, dtype=np.float32).reshape(rows, width) + 1.0


def test_a_share_of_the_distinct_test_items_is_chosen_seeded_and_nested():
    matrix = matrix_of()
    test_items = [2, 3, 3, 5, 7, 8, 9, 9, 10]            # 7 distinct items
    chosen = {share: replace_modality(matrix, test_items, share, "zeros", seed=11)[1] for share in (0, .25, .5, 1)}
    assert [len(chosen[s]) for s in (0, .25, .5, 1)] == [0, 2, 4, 7]
    assert sorted(chosen[1].tolist()) == [2, 3, 5, 7, 8, 9, 10]
    assert chosen[.25].tolist() == chosen[.5][:2].tolist() == chosen[1][:2].tolist()
    assert replace_modality(matrix, test_items, .5, "zeros", seed=11)[1].tolist() == chosen[.5].tolist()
    others = {tuple(replace_modality(matrix, test_items, .5, "zeros", seed=s)[1]) for s in range(6)}
    assert len(others) > 1


def test_zeros_and_mean_replace_only_the_chosen_rows_and_leave_the_input_alone():
    matrix = matrix_of()
    before = matrix.copy()
    zeroed, chosen = replace_modality(matrix, [1, 4, 6, 11], .5, "zeros", seed=0)
    untouched = np.setdiff1d(np.arange(len(matrix)), chosen)
    assert np.all(zeroed[chosen] == 0) and np.array_equal(zeroed[untouched], matrix[untouched])
    mean = training_mean(matrix, [0, 0, 2])              # distinct training items 0 and 2
    assert np.allclose(mean, (matrix[0] + matrix[2]) / 2)
    filled, same = replace_modality(matrix, [1, 4, 6, 11], .5, "mean", seed=0, mean=mean)
    assert same.tolist() == chosen.tolist() and np.allclose(filled[chosen], mean)
    assert np.array_equal(filled[untouched], matrix[untouched]) and np.array_equal(matrix, before)


def test_the_shuffled_control_gives_every_chosen_item_another_chosen_item_s_vector():
    matrix = matrix_of()
    shuffled, chosen = replace_modality(matrix, [1, 4, 6, 9, 11], 1.0, "shuffle", seed=5)
    assert sorted(map(tuple, shuffled[chosen])) == sorted(map(tuple, matrix[chosen]))
    assert not np.any(np.all(shuffled[chosen] == matrix[chosen], axis=1))
    assert np.array_equal(shuffled[chosen], matrix[np.roll(chosen, -1)])


@pytest.mark.parametrize("args, message", [(("blank", 0.5), "fills must be among"), (("zeros", 1.5), "between 0 and 1"),
                                           (("mean", 0.5), "needs the training mean")])
def test_a_bad_fill_or_share_is_refused_in_one_line(args, message):
    fill, share = args
    with pytest.raises(UsageError, match=message):
        replace_modality(matrix_of(), [1, 2], share, fill, seed=0)


# ------------------------------------------------------------------ the vectors the model reads


@pytest.fixture(scope="module")
def planted(tiny_atomic, tmp_path_factory):
    """The tiny sample with visual and acoustic replaced by one seeded random vector for all items
    (they carry nothing; per-item noise would not do: a random vector per item is an item id the
    model can learn item effects from)."""
    source, _ = tiny_atomic
    root = tmp_path_factory.mktemp("robustness")
    copy_atomic(source, root / "data", PLAIN)
    folder = copy_atomic(source, root / "data", NAME)
    with np.load(folder / f"{NAME}.mm.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    rng = np.random.default_rng(0)
    for modality in ("visual", "acoustic"):          # one random vector, the same for every item
        width = arrays[modality].shape[1]
        arrays[modality] = np.tile(rng.random(width, dtype=np.float32), (len(arrays[modality]), 1))
    np.savez(folder / f"{NAME}.mm.npz", **arrays)
    return root


def settings(root: Path, **extra) -> dict:
    return run_settings(root, data_path=root / "data", state="warning", **extra)


def built_dataset(root: Path, model: str, name: str = NAME, **extra):
    from recbole.data import data_preparation

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    config = build_config(model, name, None, settings(root, **extra))
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    return config, train, test


@pytest.mark.parametrize("extra", [{"fusion_max_dim": 256}, {}], ids=["row-wise", "affine (PCA to 128)"])
def test_re_fused_vectors_change_only_the_chosen_items(planted, extra):
    from recbole_mma4ctr.data.robustness import refuser

    _, _, test = built_dataset(planted, "MMa4CTR", PLAIN, **extra)
    dataset = test._dataset
    fuse_again = refuser(dataset)
    assert np.allclose(fuse_again(dataset.modality_matrices), dataset.item_matrix, atol=1e-5)
    items = np.unique(dataset.inter_feat[dataset.iid_field].numpy())
    replaced, chosen = replace_modality(dataset.modality_matrices["textual"], items, 0.5, "zeros", seed=1)
    fused = fuse_again({**dataset.modality_matrices, "textual": replaced})
    untouched = np.setdiff1d(np.arange(len(fused)), chosen)
    assert np.array_equal(fused[untouched], dataset.item_matrix[untouched])
    assert np.abs(fused[chosen] - dataset.item_matrix[chosen]).max() > 0.01
    if extra:        # vat_concat of 49 + 91 + 41 columns kept whole: the textual block is the last columns, now zero
        width = dataset.modality_matrices["textual"].shape[1]
        assert np.all(fused[chosen, -width:] == 0)


def test_a_plus_mm_model_reads_the_new_values_with_its_indices_kept(planted):
    import torch

    from recbole_mma4ctr.data.item_modalities import ITEM_FIELD
    from recbole_mma4ctr.data.robustness import set_item_vectors
    from recbole_mma4ctr.utils import get_model

    config, train, test = built_dataset(planted, "DeepFM+mm", PLAIN)
    dataset = test._dataset
    model = get_model("DeepFM+mm")(config, train._dataset).eval()
    batch = dataset[torch.arange(64)]
    before = model.predict(batch.to(config["device"])).detach()
    stored = dataset.item_feat.interaction[ITEM_FIELD].clone()
    set_item_vectors(dataset, model, np.zeros_like(dataset.item_matrix))
    after_stored = dataset.item_feat.interaction[ITEM_FIELD]
    assert torch.all(after_stored[..., 0] == 0) and torch.equal(after_stored[..., 1], stored[..., 1])
    after = model.predict(dataset[torch.arange(64)].to(config["device"])).detach()
    assert not torch.allclose(before, after)
    set_item_vectors(dataset, model, dataset.item_matrix)
    assert torch.equal(dataset.item_feat.interaction[ITEM_FIELD], stored)


def test_replacing_the_planted_modality_costs_more_auc_than_replacing_noise(planted):
    from recbole_mma4ctr.cells import make_cell
    from recbole_mma4ctr.run import run_cell

    cell = make_cell("MMa4CTR", NAME, None, settings(planted, epochs=4, train_batch_size=512, learning_rate=0.003,
                                                        fusion_max_dim=256),
                     kind="study", prepare=False)
    cell["robustness"] = dict(SPEC)
    record, _ = run_cell(cell)
    block = record["robustness"]
    auc = {(r["modality"], r["fill"], r["share"]): r["auc"] for r in block["rows"]}
    plain = record["test"]["auc"]
    assert all(auc[(m, "mean", 0.0)] == plain for m in SPEC["modalities"])
    lost = {m: plain - auc[(m, "mean", 1.0)] for m in SPEC["modalities"]}
    assert plain > 0.6, record["test"]
    assert lost["textual"] > max(lost["visual"], lost["acoustic"]) + 0.01, lost
    shuffled = {m: plain - auc[(m, "shuffle", 1.0)] for m in SPEC["modalities"]}
    assert shuffled["textual"] > max(shuffled["visual"], shuffled["acoustic"]) + 0.01, shuffled
    assert {r["items_replaced"] for r in block["rows"] if r["share"] == 1.0} == {block["test_items"]}


# ------------------------------------------------------------------ the study's table, from records


def test_the_study_table_is_made_from_the_records_robustness_rows(tmp_path):
    import json

    from recbole_mma4ctr.report.robustness import write_robustness

    def row(modality, fill, share, auc, items):
        return {"modality": modality, "fill": fill, "share": share, "items_replaced": items, "auc": auc,
                "control": fill == "shuffle"}

    record = {"status": "ok", "model": "MMa4CTR", "run_id": "r1", "robustness": {
        "test_items": 40, "fusion": "vat_concat", "seed": 3, "rows": [
            row("textual", "zeros", 0.0, 0.70, 0), row("textual", "zeros", 0.5, 0.66, 20),
            row("textual", "zeros", 1.0, 0.61, 40), row("textual", "shuffle", 1.0, 0.64, 40)]}}
    failed = {"status": "failed", "cell": "DCNV2+mm", "error": "RuntimeError: boom"}
    study = {"name": "missing_modality", "title": "Missing modalities",
             "evaluate": {"shares": [0.0, 0.5, 1.0], "seed": 3, "modalities": ["textual"]}}
    table = write_robustness(tmp_path, study, [record, failed], "wechat")
    lines = table.splitlines()
    assert lines[2].split("|")[1:-1] == [" MMa4CTR ", " textual ", " zeros ", " 0.7000 ", " 0.6600 ", " 0.6100 ",
                                         " 0.0900 ", " 40 "]
    assert "shuffle (control)" in lines[3] and "| 0.0600 |" in lines[3]
    assert "DCNV2+mm: failed RuntimeError: boom" in (tmp_path / "study.md").read_text()
    saved = json.loads((tmp_path / "study.json").read_text())
    assert len(saved["rows"]) == 4 and (tmp_path / "study.png").stat().st_size > 0
    assert (tmp_path / "study.csv").read_text().count("\n") == 5


def test_a_model_that_reads_no_modality_vectors_is_refused_before_anything_trains(tmp_path):
    from recbole_mma4ctr import cli

    settings = run_settings(tmp_path)
    args = ["--study=missing_modality", "--models=MMa4CTR,DeepFM", "--dataset=wechat"] + \
        [f"--{key}={value}" for key, value in settings.items()]
    assert cli.main(args) == 2
    assert not (tmp_path / "results").exists()
