"""WeChat conversion speed against a plain CSV read (pyarrow), on the full-scale generated sample.

    python benchmarks/wechat_conversion.py [--raw /tmp/wechat_full/raw] [--out /tmp/wechat_full/atomic]

1. Generates the full-scale WeChat sample in ``--raw`` unless one is already there
   (``python -m recbole_mma4ctr.prepare synth wechat --scale full``: ~160 s, 1.8 GB on disk).
   Keep it outside the repository.
2. Baseline: ``pyarrow.csv.read_csv`` of the same CSV files the conversion reads (multi-threaded,
   columnar; the fastest way to get them into memory, nothing else done).
3. Ours: ``wechat.convert(raw, out, force=True)`` in a subprocess, so its peak RSS
   (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) is its own.

Two measurements, each against its own baseline, in one run:

- ``real layout`` (the target): a folder holding only user_action.csv and feed_info.csv (links),
  as the real data comes;
- ``with oracle``: the generated folder as is, whose oracle_prob.csv (0.9 GB, generated data
  only) the converter also reads; the baseline then reads it too.

Each side runs ``--repeats`` times (default 3), every run in a fresh interpreter, and the
fastest run of each side counts (this machine's timings vary by 2x from run to run). Prints
every time, the ratios (target <= 3x) and the conversions' peak memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from recbole_mma4ctr.prepare import wechat
started = time.perf_counter()
manifest = wechat.convert(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), force=True)
print(json.dumps({"seconds": time.perf_counter() - started, "rows": manifest["rows"],
                  "modality_dims": manifest["modality_dims"],
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
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


BASELINE = """
import sys, time
from pathlib import Path
from pyarrow import csv
started = time.perf_counter()
rows = sum(csv.read_csv(Path(sys.argv[1]) / name).num_rows for name in sys.argv[2:])
print(time.perf_counter() - started, rows)
"""


def pyarrow_baseline(raw: Path, names, repeats: int) -> float:
    """The fastest of ``repeats`` reads, each in a fresh interpreter like the conversion (timed
    from after the imports; the first read also warms the page cache)."""
    times = []
    for _ in range(repeats):
        child = subprocess.run([sys.executable, "-c", BASELINE, str(raw), *names], capture_output=True, text=True,
                               check=True)
        seconds, rows = child.stdout.split()
        times.append(float(seconds))
    print(f"pyarrow.csv.read_csv of {', '.join(names)}: {int(rows):,} rows, best of {repeats} "
          f"{min(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})")
    return min(times)


def timed_conversion(raw: Path, out: Path, settings: str) -> dict:
    """One conversion in a fresh interpreter: its seconds, wall time and own peak RSS (MiB)."""
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(out), settings], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        sys.stderr.write(child.stderr)
        raise SystemExit(f"conversion failed with exit status {child.returncode}")
    return {**json.loads(child.stdout.strip().splitlines()[-1]), "wall": wall}


def real_layout(raw: Path, folder: Path) -> Path:
    """A folder with links to the two files the real data has (no oracle, no SYNTHETIC.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("user_action.csv", "feed_info.csv"):
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((raw / name).resolve())
    return folder


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=Path("/tmp/wechat_full/raw"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/wechat_full/atomic"))
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the fastest counts")
    parser.add_argument("--settings", default="{}", help="converter settings as JSON, e.g. '{\"text_recipe\": \"tfidf\"}'")
    args = parser.parse_args(argv)
    ensure_sample(args.raw, args.seed)
    plain = real_layout(args.raw, args.out.parent / (args.out.name + "_real_layout_raw"))
    two = ("user_action.csv", "feed_info.csv")
    result = {"target_ratio": 3.0}
    for label, raw, names, out in (("real layout", plain, two, args.out.parent / (args.out.name + "_real_layout")),
                                   ("with oracle", args.raw, two + ("oracle_prob.csv",), args.out)):
        baseline = pyarrow_baseline(raw, names, args.repeats)
        runs = [timed_conversion(raw, out, args.settings) for _ in range(args.repeats)]
        run = min(runs, key=lambda r: r["seconds"])
        run["peak_mib"] = max(r["peak_mib"] for r in runs)
        each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(f"{label}: conversions took {each} s")
        ratio = run["seconds"] / baseline
        print(f"{label}: wechat.convert {run['seconds']:.1f} s ({run['wall']:.1f} s with interpreter start-up), "
              f"{ratio:.2f}x pyarrow's read (target <= 3x): {'OK' if ratio <= 3 else 'ABOVE TARGET'}; "
              f"peak RSS {run['peak_mib']:,.0f} MiB")
        result[label.replace(" ", "_")] = {"pyarrow_seconds": round(baseline, 2), "convert_seconds": round(run["seconds"], 2),
                                           "ratio": round(ratio, 2), "peak_rss_mib": round(run["peak_mib"]),
                                           "rows": run["rows"], "modality_dims": run["modality_dims"]}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
