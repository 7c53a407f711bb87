"""RecBole dataset construction with pandas' C engine (ours) against RecBole's python engine.

    python benchmarks/atomic_loading.py [--data_path dataset_atomic] [--dataset wechat] [--model MMa4CTR]

Builds the same dataset twice in one process, first as RecBole 1.2.1 reads atomic files (pandas'
python engine), then through ``recbole_mma4ctr.utils.create_dataset`` (``compat.building_dataset``),
checks that both loaded the same interactions, and prints both times and their ratio. The
dataset must already be converted (run the model once, or ``python -m recbole_mma4ctr.prepare``).
With the full-scale WeChat files (7 M rows) the difference is about half a minute per run.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", default="dataset_atomic")
    parser.add_argument("--dataset", default="wechat")
    parser.add_argument("--model", default="MMa4CTR")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # RecBole 1.2.1's own, on pandas 2

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import _create_dataset, create_dataset

    config = build_config(args.model, args.dataset, None, {"data_path": args.data_path, "show_progress": "False"})
    started = time.perf_counter()
    plain = _create_dataset(config)  # RecBole's own read (python engine)
    python_seconds = time.perf_counter() - started
    started = time.perf_counter()
    fast = create_dataset(config)
    c_seconds = time.perf_counter() - started
    for field in (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["LABEL_FIELD"]):
        assert np.array_equal(np.asarray(plain.inter_feat[field]), np.asarray(fast.inter_feat[field])), field
    rows = len(fast.inter_feat)
    print(f"{args.dataset} ({rows:,} interactions), {args.model}'s dataset class:")
    print(f"  RecBole's read (python engine): {python_seconds:.1f} s")
    print(f"  ours (C engine):                {c_seconds:.1f} s")
    print(f"  ratio ours / RecBole's: {c_seconds / python_seconds:.2f}")
    return {"rows": rows, "python_engine_seconds": python_seconds, "c_engine_seconds": c_seconds}


if __name__ == "__main__":
    main()
