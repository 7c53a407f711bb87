"""python -m recbole_mma4ctr.prepare: convert raw files, or generate a sample in the raw formats.

    python -m recbole_mma4ctr.prepare wechat --raw RAW_DIR --out OUT_DIR [--label weighted] [--text-recipe tfidf]
    python -m recbole_mma4ctr.prepare tiktok --raw RAW_DIR --out OUT_DIR [--label like] [--min-user-interactions N]
    python -m recbole_mma4ctr.prepare synth wechat --scale sample --seed 2024 --out RAW_DIR
    python -m recbole_mma4ctr.prepare synth tiktok --scale sample --seed 2024 --out RAW_DIR

Exit status 0 on success, 1 on bad input (the message names file, line and field), 2 on bad
arguments. Conversion is skipped when OUT_DIR's manifest shows the same inputs and settings.
"""

from __future__ import annotations

import argparse
import json
import sys

from .atomic import log


MODALITIES = ("visual", "acoustic", "textual")


def add_fixed_dims(command, defaults: dict) -> None:
    for name in MODALITIES:
        command.add_argument(f"--{name}-dim", type=int, default=defaults[name],
                             help=f"fixed {name} width; 0: PCA keeping --variance (default {defaults[name]})")


def fixed_dims(args) -> dict:
    return {f"{name}_dim": getattr(args, f"{name}_dim") or None for name in MODALITIES}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recbole_mma4ctr.prepare", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    wechat = commands.add_parser("wechat", help="WeChat Big Data Challenge 2021 raw files -> RecBole atomic files")
    wechat.add_argument("--raw", required=True, help="folder with user_action.csv and feed_info.csv")
    wechat.add_argument("--out", required=True, help="output folder for wechat.inter/.item/.mm.npz/manifest.json")
    wechat.add_argument("--label", default="weighted", help="weighted (the paper's) or one action, e.g. like")
    wechat.add_argument("--min-user-actions", type=int, default=100, help="drop users with fewer actions (paper: 100)")
    wechat.add_argument("--variance", type=float, default=0.9, help="PCA variance share kept per modality")
    wechat.add_argument("--token-maxlen", type=int, default=512, help="cap on padded token-id length")
    wechat.add_argument("--text-recipe", default="paper", choices=["paper", "tfidf"],
                        help="paper: padded token ids -> PCA; tfidf: bag of tokens -> TF-IDF -> truncated SVD")
    wechat.add_argument("--text-max-dim", type=int, default=128, help="tfidf: cap on a modality's width")
    wechat.add_argument("--feed-embedding", action="store_true",
                        help="add feed_embeddings.csv's 512-d vectors as a fourth matrix, 'embedding'")
    add_fixed_dims(wechat, {"visual": 0, "acoustic": 0, "textual": 0})
    from .wechat import DEFAULT_SETTINGS, ROW_CHOICES

    for name, choices in ROW_CHOICES.items():  # the paper protocol's row settings (wechat.py)
        wechat.add_argument(f"--{name.replace('_', '-')}", default=DEFAULT_SETTINGS[name], choices=list(choices))
    wechat.add_argument("--force", action="store_true", help="convert even if the manifest says up to date")
    tiktok = commands.add_parser("tiktok", help="TikTok ICME 2019 track 1 raw files -> RecBole atomic files")
    tiktok.add_argument("--raw", required=True, help="folder with final_track1_train.txt and the feature files")
    tiktok.add_argument("--out", required=True, help="output folder for tiktok.inter/.item/.mm.npz/manifest.json")
    tiktok.add_argument("--label", default="like", choices=["like", "finish"], help="like (the paper's) or finish")
    tiktok.add_argument("--min-user-interactions", type=int, default=None,
                        help="drop users with fewer rows (default: the paper's 4000 on real files; on a generated "
                             "sample the threshold its heavy users were planted at)")
    tiktok.add_argument("--variance", type=float, default=0.9, help="PCA variance share kept (visual, textual)")
    add_fixed_dims(tiktok, {"visual": 0, "acoustic": 10, "textual": 0})
    tiktok.add_argument("--chunk-rows", type=int, default=1_000_000, help="train-file rows read at a time")
    tiktok.add_argument("--force", action="store_true", help="convert even if the manifest says up to date")
    synth = commands.add_parser("synth", help="write generated raw files in the real formats")
    synth.add_argument("dataset", choices=["wechat", "tiktok"])
    synth.add_argument("--scale", default="sample", choices=["tiny", "sample", "full"])
    synth.add_argument("--seed", type=int, default=2024)
    synth.add_argument("--out", required=True, help="raw folder to write")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "wechat":
            from .wechat import convert

            settings = {"label": args.label, "min_user_actions": args.min_user_actions,
                        "variance": args.variance, "token_maxlen": args.token_maxlen,
                        "text_recipe": args.text_recipe, "text_max_dim": args.text_max_dim,
                        "feed_embedding": args.feed_embedding, "dedupe": args.dedupe, "row_order": args.row_order,
                        "device_choice": args.device_choice,
                        **{key: value for key, value in fixed_dims(args).items() if value}}
            manifest = convert(args.raw, args.out, settings, force=args.force)
            summary = {k: manifest[k] for k in ("rows", "dropped", "label_rate", "modality_dims")}
            print(json.dumps(summary, indent=2))
        elif args.command == "tiktok":
            from .tiktok import convert

            settings = {"label": args.label, "min_user_interactions": args.min_user_interactions,
                        "variance": args.variance, "chunk_rows": args.chunk_rows, **fixed_dims(args)}
            manifest = convert(args.raw, args.out, settings, force=args.force)
            summary = {k: manifest[k] for k in ("rows", "dropped", "label_rate", "action_rates", "items_without",
                                                "modality_dims")}
            print(json.dumps(summary, indent=2))
        elif args.dataset == "tiktok":
            from .synthetic_tiktok import write_tiktok_raw

            log(f"generating a {args.scale} TikTok-format sample (seed {args.seed}) in {args.out}")
            summary = write_tiktok_raw(args.out, scale=args.scale, seed=args.seed)
            print(json.dumps({k: summary[k] for k in ("counts", "positive_rate", "oracle_auc")}, indent=2))
        else:
            from .synthetic import write_wechat_raw

            log(f"generating a {args.scale} WeChat-format sample (seed {args.seed}) in {args.out}")
            summary = write_wechat_raw(args.out, scale=args.scale, seed=args.seed)
            print(json.dumps({"counts": summary["counts"], "weighted_label": summary["weighted_label"],
                              "oracle_auc": summary["oracle_auc"]}, indent=2, default=str))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
