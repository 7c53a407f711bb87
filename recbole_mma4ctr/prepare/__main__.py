"""python -m recbole_mma4ctr.prepare: convert raw files, or generate a sample in the raw formats.

    python -m recbole_mma4ctr.prepare wechat --raw RAW_DIR --out OUT_DIR [--label_action like] [--text_recipe tfidf]
    python -m recbole_mma4ctr.prepare tiktok --raw RAW_DIR --out OUT_DIR [--label_action finish] [--min_user_interactions N]
    python -m recbole_mma4ctr.prepare synth wechat --scale sample --seed 2024 --out RAW_DIR
    python -m recbole_mma4ctr.prepare synth tiktok --scale sample --seed 2024 --out RAW_DIR

Every converter flag is a key of properties/dataset/<name>.yaml, which holds its default (the
run path reads the same keys); a value is read as YAML (``~`` for none, ``true``, ``0.8``).
``synth`` takes its defaults from ``synthetic_scale`` / ``synthetic_seed`` in overall.yaml.
Exit status 0 on success, 1 on bad input, 2 on bad arguments, with one line ``error: ...``
naming file, line and field. Conversion is skipped when OUT_DIR's manifest shows the same
inputs and settings and every file it lists has its recorded size. OUT_DIR must be new, empty or
a folder converted earlier: a folder of files without the converter's manifest.json is somebody's
own data and is refused (exit 1), never written into.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError, SettingError, UsageError
from ..settings import properties_dir, read_yaml, setting
from . import tiktok, wechat
from .atomic import dataset_defaults, log
from .sources import CONVERTERS
from .synthetic.tiktok import write_tiktok_raw
from .synthetic.wechat import write_wechat_raw

SUMMARIES = {"wechat": ("rows", "dropped", "label_rate", "modality_dims"),
             "tiktok": ("rows", "dropped", "label_rate", "action_rates", "items_without", "modality_dims")}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit status 2), like every other error here."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def yaml_value(text: str):
    """A flag's value read as a YAML scalar (safe loader): '0.8' -> 0.8, '~' -> None, 'true' -> True."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool, type(None))) else text


def seed_value(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def add_settings(command, dataset: str, names) -> None:
    """One flag per converter setting, named as its yaml key; no default here (the yaml's applies)."""
    defaults = dataset_defaults(dataset, names)
    for name in names:
        command.add_argument(f"--{name}", type=yaml_value, default=argparse.SUPPRESS, metavar="VALUE",
                             help=f"default {json.dumps(defaults[name])} (properties/dataset/{dataset}.yaml)")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m recbole_mma4ctr.prepare", description=__doc__.split("\n\n")[0],
                           allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, module, raw_help in (("wechat", wechat, "folder with user_action.csv and feed_info.csv"),
                                   ("tiktok", tiktok, "folder with final_track1_train.txt and the feature files")):
        command = commands.add_parser(name, help=f"{name} raw files -> RecBole atomic files", allow_abbrev=False)
        command.add_argument("--raw", required=True, help=raw_help)
        command.add_argument("--out", required=True, help=f"output folder for {name}.inter/.item/.mm.npz/manifest.json")
        command.add_argument("--force", action="store_true", help="convert even if the manifest says up to date")
        add_settings(command, name, module.SETTINGS)
    overall = read_yaml(properties_dir() / "overall.yaml")
    synth = commands.add_parser("synth", help="write generated raw files in the real formats", allow_abbrev=False)
    synth.add_argument("dataset", choices=["wechat", "tiktok"])
    synth.add_argument("--scale", default=setting(overall, "synthetic_scale"), choices=["tiny", "sample", "full"],
                       help="default: synthetic_scale in properties/overall.yaml (%(default)s)")
    synth.add_argument("--seed", type=seed_value, default=setting(overall, "synthetic_seed"),
                       help="default: synthetic_seed in properties/overall.yaml (%(default)s)")
    synth.add_argument("--out", required=True, help="raw folder to write")
    return parser


def _run(args) -> dict:
    if args.command in SUMMARIES:
        converter = CONVERTERS[args.command]
        settings = {name: getattr(args, name) for name in converter.SETTINGS if hasattr(args, name)}
        manifest = converter.convert(args.raw, args.out, settings, force=args.force)
        return {key: manifest[key] for key in SUMMARIES[args.command]}
    if args.dataset == "tiktok":
        log(f"generating a {args.scale} TikTok-format sample (seed {args.seed}) in {args.out}")
        summary = write_tiktok_raw(args.out, scale=args.scale, seed=args.seed)
        return {key: summary[key] for key in ("counts", "positive_rate", "oracle_auc")}

    log(f"generating a {args.scale} WeChat-format sample (seed {args.seed}) in {args.out}")
    summary = write_wechat_raw(args.out, scale=args.scale, seed=args.seed)
    return {key: summary[key] for key in ("counts", "weighted_label", "oracle_auc")}


def main(argv=None) -> int:
    try:
        parser = _parser()
    except SettingError as error:  # properties/dataset/<name>.yaml unreadable or missing a key
        print(f"error: {error}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        print(json.dumps(_run(args), indent=2, default=str))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (InputError, OSError) as error:  # OSError: a missing or unreadable file, a full disk
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
