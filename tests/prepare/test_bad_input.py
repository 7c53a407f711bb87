"""Raw input that used to end in a traceback or a silently wrong dataset (issue 10, items 4, 5, 9).

Each case names what happened before: a csv/pyarrow/OverflowError traceback without a location,
a valid file refused, or a filter that emptied the dataset exiting 0 and replacing good output.
Now each is one line naming file, line and field, exit status 1 (2 for bad arguments), and the
earlier output stays.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_mma4ctr.errors import InputError, UsageError
from recbole_mma4ctr.prepare import tiktok
from recbole_mma4ctr.prepare.wechat import convert

FEED = "feed_info.csv"


def prepare(*args):
    return subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def last_line(done) -> str:
    """The one line a failed command prints (progress lines start with '[prepare')."""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("[prepare")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def feed_copy(tiny_raw: Path, folder: Path, line: int, column: str, value: str) -> Path:
    """The tiny raw folder with one feed_info.csv cell replaced (line 1 is the header)."""
    folder.mkdir(parents=True)
    (folder / "user_action.csv").symlink_to(tiny_raw / "user_action.csv")
    lines = (tiny_raw / FEED).read_text().split("\n")
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    (folder / FEED).write_text("\n".join(lines))
    return folder


def test_an_unbalanced_quote_is_named_by_line_and_field(tiny_raw, tmp_path):
    # before: _csv.Error: field larger than field limit (131072), no file or line
    folder = feed_copy(tiny_raw, tmp_path / "raw", 5, "description", '"12 34')
    with pytest.raises(InputError) as raised:
        convert(folder, tmp_path / "out", {"min_user_actions": 0})
    assert str(raised.value) == (f"{folder / FEED}, line 5, field 'description': unbalanced quote (a quoted field "
                                 f"opens here and never closes)")


def test_an_error_in_a_file_with_a_line_over_128_kb_is_named(tiny_raw, tmp_path):
    # before: _csv.Error: field larger than field limit (131072) hid the real problem (line 10)
    folder = feed_copy(tiny_raw, tmp_path / "raw", 5, "description", " ".join(["7"] * 70_000))
    lines = (folder / FEED).read_text().split("\n")
    lines[9] += ",extra"
    (folder / FEED).write_text("\n".join(lines))
    with pytest.raises(InputError) as raised:
        convert(folder, tmp_path / "out", {"min_user_actions": 0})
    assert str(raised.value) == f"{folder / FEED}, line 10: expected 15 comma-separated fields, found 16"


def test_a_valid_line_over_the_read_block_is_read(tiny_raw, tiny_atomic, tmp_path):
    # before: pyarrow's "straddling object straddles two block boundaries", then the csv field limit
    tokens = " ".join(str(7 + i % 5) for i in range(1_500_000))  # 3.0 MB on one line
    folder = feed_copy(tiny_raw, tmp_path / "raw", 5, "description", tokens)
    assert max(len(line) for line in (folder / FEED).read_bytes().split(b"\n")) > 3 * 2**20
    manifest = convert(folder, tmp_path / "out", {"min_user_actions": 0})
    assert manifest["rows"] == tiny_atomic[1]["rows"]  # every row and feed read, none refused
    with np.load(tmp_path / "out" / "wechat.mm.npz") as archive:
        assert len(archive["item_id"]) == manifest["rows"]["items"]


def test_a_tiktok_uid_beyond_int64_is_named(tmp_path):
    # before: OverflowError: Overflow, no file, line or field
    from recbole_mma4ctr.prepare.synthetic.tiktok import write_tiktok_raw

    raw = tmp_path / "raw"
    write_tiktok_raw(raw, scale="tiny", seed=3)
    train = raw / tiktok.TRAIN_FILE
    lines = train.read_text().split("\n")
    cells = lines[2].split("\t")
    cells[0] = "99999999999999999999"
    lines[2] = "\t".join(cells)
    train.write_text("\n".join(lines))
    with pytest.raises(InputError) as raised:
        tiktok.convert(raw, tmp_path / "out", {"min_user_interactions": 50})
    assert str(raised.value) == (f"{train}, line 3, field 'uid': integer out of range (beyond 64-bit) "
                                 f"(value '99999999999999999999')")


def test_a_user_filter_that_drops_every_row_is_an_error_and_keeps_the_old_output(tiny_raw, tiny_atomic, tmp_path):
    # before: exit 0, and wechat.inter replaced by a header-only file
    out = tmp_path / "out"
    convert(tiny_raw, out, {"min_user_actions": 0})
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(InputError) as raised:
        convert(tiny_raw, out, {"min_user_actions": 100_000})
    most = int(pd.read_csv(tiny_raw / "user_action.csv", usecols=["userid"])["userid"].value_counts().max())
    assert str(raised.value) == (f"{tiny_raw / 'user_action.csv'}: no rows left after the user filter: "
                                 f"min_user_actions 100,000 drops all 30,000 actions of feeds in feed_info.csv (the "
                                 f"most active user has {most:,}); lower min_user_actions")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    done = prepare("wechat", "--raw", tiny_raw, "--out", out, "--min_user_actions", 100_000)
    assert done.returncode == 1 and last_line(done) == f"error: {raised.value}"
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_a_feed_filter_that_drops_every_row_is_named(tiny_raw, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "user_action.csv").symlink_to(tiny_raw / "user_action.csv")
    feeds = pd.read_csv(tiny_raw / FEED, dtype=str, keep_default_na=False)
    feeds["feedid"] = [str(10**9 + i) for i in range(len(feeds))]  # no action's feed
    feeds.to_csv(folder / FEED, index=False)
    with pytest.raises(InputError, match=r"user_action.csv: no rows left after the feed filter: none of the 30,000 "
                                         r"actions has a feedid listed in feed_info.csv"):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})


def test_tiktok_refuses_an_empty_filter_the_same_way_and_keeps_the_old_output(tmp_path):
    from recbole_mma4ctr.prepare.synthetic.tiktok import write_tiktok_raw

    raw = tmp_path / "raw"
    write_tiktok_raw(raw, scale="tiny", seed=3)
    out = tmp_path / "out"
    tiktok.convert(raw, out, {"min_user_interactions": 50})
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(InputError, match=r"no rows left after the user filter: no user has >= 100,000 rows "
                                         r"\(min_user_interactions 100,000, as set; [0-9,]+ rows of [0-9,]+ users, the "
                                         r"most active with [0-9,]+\); lower min_user_interactions"):
        tiktok.convert(raw, out, {"min_user_interactions": 100_000})
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.parametrize("args, message", [
    (["wechat", "--raw", "x"], "error: the following arguments are required: --out"),
    (["wechat", "--raw", "x", "--out", "y", "--label", "like"], "error: unrecognized arguments: --label like"),
    (["wechat", "--raw", "x", "--out", "y", "--label_action", "clicks"], "error: label_action must be 'weighted' or one"),
    (["wechat", "--raw", "x", "--out", "y", "--pca_variance", "1.5"], "error: pca_variance must be a share in (0, 1]"),
    (["tiktok", "--raw", "x", "--out", "y", "--chunk_rows", "0"], "error: chunk_rows must be an integer >= 1; got 0"),
    (["tiktok", "--raw", "x", "--out", "y", "--min_user_interactions", "many"],
     "error: min_user_interactions must be an integer >= 0 or ~ (by source); got 'many'"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    done = prepare(*args)
    assert done.returncode == 2 and last_line(done).startswith(message), done.stderr


def test_bad_input_exits_1_with_one_line(tiny_raw, tmp_path):
    folder = feed_copy(tiny_raw, tmp_path / "raw", 5, "description", '"12 34')
    done = prepare("wechat", "--raw", folder, "--out", tmp_path / "out", "--min_user_actions", 0)
    assert done.returncode == 1
    assert last_line(done) == f"error: {folder / FEED}, line 5, field 'description': unbalanced quote (a quoted " \
                              f"field opens here and never closes)"
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_usage_errors_are_input_errors_for_the_cli():
    assert issubclass(UsageError, InputError) and issubclass(InputError, ValueError)
    with pytest.raises(UsageError, match="unknown wechat converter setting"):
        convert("nowhere", "nowhere", {"variance": 0.8})  # the old name is no longer a setting


# ------------------------------------------------------------------ issue 19, defect 11: data-file messages
# Each case through the command line (cli.main, in-process): exit status 1 and one line naming the
# file, the line where there is one and the field. Before: KeyError 'label'; "[timestamp] is not
# exist in interaction"; "could not convert string to float"; pandas' "EOF inside string"; "Length
# mismatch"; "labels must be binary"; BadZipFile; a missing .pth for all-0 labels; "run prepare"
# for a bring-your-own dataset; a traceback (NaN to integer) for an empty TikTok train file.

def _drop_column(index: int):
    def edit(folder: Path):
        inter = folder / "byo.inter"
        lines = inter.read_text().splitlines()
        inter.write_text("".join("\t".join(c for i, c in enumerate(line.split("\t")) if i != index) + "\n"
                                 for line in lines))
    return edit


def _replace(old: str, new: str, count: int = 1):
    def edit(folder: Path):
        inter = folder / "byo.inter"
        inter.write_text(inter.read_text().replace(old, new, count))
    return edit


def _cell(line: int, field: int, value: str):
    def edit(folder: Path):
        from test_byo import edit_line

        edit_line(folder / "byo.inter", line, field, value)
    return edit


def _truncate_npz(folder: Path):
    npz = folder / "byo.mm.npz"
    npz.write_bytes(npz.read_bytes()[:5000])


def _modality_value(value: float):
    def edit(folder: Path):
        npz = folder / "byo.mm.npz"
        with np.load(npz) as archive:
            arrays = {name: archive[name] for name in archive.files}
        arrays["acoustic"][4, 2] = value
        np.savez(npz, **arrays)
    return edit


INTER = "{inter}"
DATA_CASES = {
    "no label field": (_drop_column(3), f"{INTER}, line 1: no field 'label' (the label; fields are user_id, item_id, "
                       f"timestamp, device); add label:float, 0 or 1 on every row"),
    "no timestamp field": (_drop_column(2), f"{INTER}, line 1: no field 'timestamp' (the timestamp; fields are "
                           f"user_id, item_id, label, device); add timestamp:float, e.g. the row's position 0, 1, 2 "
                           f"... or unix seconds"),
    "text timestamp": (_cell(9, 2, "yesterday"), f"{INTER}, line 9, field 'timestamp': expected a number as the "
                       f"timestamp (value 'yesterday')"),
    "unbalanced quote": (_cell(9, 1, '"i7'), f"{INTER}, line 9, field 'item_id': starts with a double quote ('\"i7'), "
                         f"which RecBole's reader takes as the start of a quoted field (read on to the next quote, "
                         f"over tabs and line ends); atomic files are not quoted: remove the quote"),
    "repeated header name": (_replace("device:float", "label:float"), f"{INTER}, line 1, field 'label': named twice "
                             f"in the header (fields 4 and 5); each field once"),
    "label typed token": (_replace("label:float", "label:token"), f"{INTER}, line 1, field 'label:token': the label "
                          f"must be typed float (label:float); RecBole reads a token field as ids, not numbers"),
    "every label 0": (_replace("\t1.0\t", "\t0.0\t", -1), f"{INTER}, field 'label': no positive rows (all 17,600 "
                      f"labels are 0); a CTR model needs rows of both labels to train and be scored"),
    "truncated .mm.npz": (_truncate_npz, "{npz}: not a readable NumPy .npz archive (File is not a zip file); write "
                          "it again with np.savez (docs/byo_dataset.md)"),
    "modality value 3e38": (_modality_value(3e38), "{npz}, field 'acoustic', row 4 (item_id 'i4'), column 2: value "
                            "3e+38 outside [0, 1] (1 of 4,800 values; range 0 to 3e+38); min-max scale each column "
                            "to [0, 1] before saving, the model does not rescale (docs/byo_dataset.md)"),
    "missing .mm.npz": (lambda folder: (folder / "byo.mm.npz").unlink(), "{npz}: modality file not found. MMa4CTR "
                        "needs the items' modality matrices there: a NumPy archive (np.savez) with item_id (strings, "
                        "the .inter's item_id tokens) and visual, acoustic, textual (float32, one row per id, values "
                        "in [0, 1]); see docs/byo_dataset.md, or give another file with --mm_file=PATH"),
}


def files_under(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(tmp_path, capsys, *args) -> tuple[int, str]:
    from recbole_mma4ctr import cli

    capsys.readouterr()
    status = cli.main([*map(str, args), f"--results_dir={tmp_path / 'results'}",
                       f"--checkpoint_dir={tmp_path / 'saved'}", "--epochs=1", "--show_progress=False"])
    return status, capsys.readouterr().err.strip().splitlines()[-1]


def assert_nothing_written(tmp_path, data: Path, before: dict) -> None:
    """The input folder is as it was, no checkpoint and no temporary file exist; the results folder
    holds at most the failure's own record."""
    import json

    assert files_under(data) == before
    assert not list(tmp_path.glob("saved/*"))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    for path in tmp_path.glob("results/*"):
        assert path.suffix == ".json" and json.loads(path.read_text())["status"] == "failed", path


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_a_bad_byo_file_stops_the_command_with_one_line(tmp_path, capsys, case):
    from test_byo import write_byo

    edit, message = DATA_CASES[case]
    folder = write_byo(tmp_path / "data")
    edit(folder)
    before = files_under(tmp_path / "data")
    status, line = run_cli(tmp_path, capsys, "--model=MMa4CTR", "--dataset=byo", f"--data_path={tmp_path / 'data'}")
    assert status == 1
    assert line == "error: " + message.format(inter=folder / "byo.inter", npz=folder / "byo.mm.npz")
    assert_nothing_written(tmp_path, tmp_path / "data", before)


def test_an_empty_tiktok_train_file_stops_the_command_with_one_line(tmp_path, capsys):
    from recbole_mma4ctr.prepare.synthetic.tiktok import write_tiktok_raw

    raw = tmp_path / "raw" / "TikTok2019ICME" / "track1"
    write_tiktok_raw(raw, scale="tiny", seed=3)
    (raw / tiktok.TRAIN_FILE).write_text("")
    before = files_under(tmp_path / "raw")
    status, line = run_cli(tmp_path, capsys, "--model=MMa4CTR", "--dataset=tiktok", f"--raw_root={tmp_path / 'raw'}",
                           f"--data_path={tmp_path / 'out'}")
    assert status == 1
    assert line == (f"error: {raw / tiktok.TRAIN_FILE}: no rows (the file is empty); expected one interaction per "
                    f"line, 12 tab-separated integers: uid user_city item_id author_id item_city channel finish like "
                    f"music_id device time duration_time")
    assert_nothing_written(tmp_path, tmp_path / "raw", before)
    assert not list((tmp_path / "out").rglob("*.inter")) and not list((tmp_path / "out").rglob("manifest.json"))
