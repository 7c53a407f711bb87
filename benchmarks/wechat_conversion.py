"""WeChat conversion speed against a plain CSV read (pyarrow), on the full-scale generated sample.

    python benchmarks/wechat_conversion.py [--raw /tmp/wechat_full/raw] [--out /tmp/wechat_full/atomic]

1. Generates the full-scale WeChat sample in ``--raw`` unless one is already there
   (``python -m recbole_mma4ctr.prepare synth wechat --scale full``: ~160 s, 1.8 GB on disk).
   Keep it outside the repository.
2. Baseline: ``pyarrow.csv.read_csv`` of user_action.csv + feed_info.csv (multi-threaded,
   columnar; the fastest way to get these files into memory, nothing else done).
3. Ours: ``wechat.convert(raw, out, force=True)`` in a subprocess, so its peak RSS
   (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) is its own.
Prints both times, their ratio (target <= 3x) and the conversion's peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, sys, time
from recbole_mma4ctr.prepare import wechat
started = time.perf_counter()
manifest = wechat.convert(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), force=True)
print(json.dumps({"seconds": time.perf_counter() - started, "rows": manifest["rows"],
                  "modality_dims": manifest["modality_dims"]}))
"""


def ensure_sample(raw: Path, seed: int) -> None:
    from recbole_mma4ctr.prepare import wechat
    from recbole_mma4ctr.prepare.sources import synthetic_matches

    if wechat.has_raw_files(raw) and synthetic_matches(raw, "full", seed, "wechat"):
        print(f"reusing the full-scale sample in {raw}")
        return
    print(f"generating the full-scale sample in {raw} (a few minutes)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", "synth", "wechat", "--scale", "full",
                    "--seed", str(seed), "--out", str(raw)], check=True)
    print(f"generated in {time.perf_counter() - started:.0f} s")


def pyarrow_baseline(raw: Path) -> float:
    from pyarrow import csv

    started = time.perf_counter()
    rows = 0
    for name in ("user_action.csv", "feed_info.csv"):
        rows += csv.read_csv(raw / name).num_rows
    seconds = time.perf_counter() - started
    print(f"pyarrow.csv.read_csv: {rows:,} rows in {seconds:.1f} s")
    return seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=Path("/tmp/wechat_full/raw"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/wechat_full/atomic"))
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--settings", default="{}", help="converter settings as JSON, e.g. '{\"text_recipe\": \"tfidf\"}'")
    args = parser.parse_args(argv)
    ensure_sample(args.raw, args.seed)
    baseline = pyarrow_baseline(args.raw)
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, str(args.raw), str(args.out), args.settings],
                           capture_output=True, text=True)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        sys.stderr.write(child.stderr)
        raise SystemExit(f"conversion failed with exit status {child.returncode}")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    inner = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "pyarrow_seconds": round(baseline, 2),
        "convert_seconds": round(inner["seconds"], 2),
        "convert_wall_seconds_with_startup": round(wall, 2),
        "ratio": round(inner["seconds"] / baseline, 2),
        "target_ratio": 3.0,
        "peak_rss_mib": round(peak_mib),
        "rows": inner["rows"],
        "modality_dims": inner["modality_dims"],
    }
    print(f"wechat.convert: {inner['seconds']:.1f} s ({wall:.1f} s with interpreter start-up)")
    print(f"ratio convert / pyarrow: {result['ratio']:.2f}x (target <= 3x): "
          f"{'OK' if result['ratio'] <= 3 else 'ABOVE TARGET'}")
    print(f"conversion peak RSS: {peak_mib:,.0f} MiB")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
