"""Peak memory of the TikTok conversion at two raw-file sizes: it does not grow with the file.

Generates raw folders in the track 1 formats with the same heavy users (the rows the user filter
keeps) and 1x or 4x the rows in total, the extra rows belonging to light users below the filter
(as on the real file, where the paper's filter keeps 8.6 M of 276 M rows). Each conversion runs
in a fresh subprocess; its peak RSS is ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` read
by a small parent process of its own, so every figure covers exactly one conversion. A third
folder has 4x the kept rows, to show what memory does grow with (the kept rows, which are sorted
in memory), and an "imports only" child gives the interpreter's own share.

    python benchmarks/tiktok_stream_memory.py [--workdir DIR] [--chunk-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE_ROWS = 294_000  # the sample preset: 1,500 heavy users (290,000 rows) + 200 light users (4,000)
CASES = {
    "1x rows": {},
    "4x rows, same kept": {"n_light_users": 22_000, "light_rows": 4 * SAMPLE_ROWS - 290_000},
    "4x rows, 4x kept": {"heavy_rows": 4 * 290_000, "n_light_users": 800, "light_rows": 4 * 4_000},
}
CONVERT = ("import sys; from recbole_mma4ctr.prepare.tiktok import convert; "
           "convert(sys.argv[1], sys.argv[2], {'min_user_interactions': 50, 'chunk_rows': int(sys.argv[3])}, force=True)")
IMPORTS = "import sklearn.decomposition, recbole_mma4ctr.prepare.tiktok"


def measure(argv: list[str]) -> None:
    """Child mode: run one command as a grandchild, print its peak RSS (MiB) and seconds as JSON."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", *argv], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_mib": peak_kib / 1024, "seconds": time.time() - started}))


def peak(*argv: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", *argv], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="where the raw and converted folders go (default: a temporary folder)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="train rows read at a time")
    parser.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.measure)
        return
    from recbole_mma4ctr.prepare.synthetic.tiktok import write_tiktok_raw

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tiktok-memory-"))
    baseline = peak(IMPORTS)
    print(f"chunk_rows {args.chunk_rows:,}; imports only: peak RSS {baseline['peak_mib']:.0f} MiB")
    print(f"{'case':<20} {'raw rows':>10} {'kept rows':>10} {'raw MB':>8} {'peak RSS MiB':>13} {'seconds':>8}")
    results = {}
    for name, overrides in CASES.items():
        raw, out = workdir / name.replace(" ", "_").replace(",", ""), workdir / "out"
        summary = write_tiktok_raw(raw, scale="sample", seed=2024, **overrides)
        size = sum(p.stat().st_size for p in raw.iterdir()) / 1e6
        result = peak(CONVERT, str(raw), str(out), str(args.chunk_rows))
        kept = json.loads((out / "manifest.json").read_text())["rows"]["inter"]
        results[name] = result
        print(f"{name:<20} {summary['counts']['train_rows']:>10,} {kept:>10,} {size:>8.0f} "
              f"{result['peak_mib']:>13.0f} {result['seconds']:>8.1f}")
    same, grown = results["4x rows, same kept"], results["4x rows, 4x kept"]
    first = results["1x rows"]["peak_mib"]
    print(f"peak RSS ratio, 4x raw rows / 1x (same kept rows): {same['peak_mib'] / first:.2f}")
    print(f"peak RSS ratio, 4x kept rows / 1x:                 {grown['peak_mib'] / first:.2f}")
    print(f"above the imports: 1x {first - baseline['peak_mib']:.0f} MiB, 4x raw {same['peak_mib'] - baseline['peak_mib']:.0f} "
          f"MiB, 4x kept {grown['peak_mib'] - baseline['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
