#!/usr/bin/env bash
# One check of a GPU machine with no network: all nine models, one or two epochs each, on CUDA.
#
#     bash benchmarks/gpu_check.sh [--epochs=1] [--scale=sample] [--budget=450] [--no-full] [--cpu] [-- --key=value ...]
#
# Settings after "--" go to every model run (e.g. -- --MAX_ITEM_LIST_LENGTH=10 for a quick CPU try).
# It uses the machine's own Python, torch (CUDA), numpy, pandas, scipy, pyarrow, scikit-learn and
# matplotlib, and installs nothing but the wheels in benchmarks/gpu_wheels/ (prepared beforehand on
# a machine with network by benchmarks/gpu_wheels.sh) into a folder of its own, put first on
# PYTHONPATH: nothing of the machine's is changed or shadowed except RecBole, which must be 1.2.1.
# Then, in a temporary working folder (GPU_CHECK_DIR to choose it):
#   1. generates the default synthetic WeChat sample (--scale) and converts it (timed);
#   2. runs MMa4CTR, BPR, FPMC, NGCF, LightGCN, BERT4Rec, GCSAN, DIN and DIEN for --epochs epochs,
#      each under a share of the time budget that is left (--budget seconds for the whole check);
#   3. if at least 150 s of the budget remain, MMa4CTR on a full-size (7.3 M rows) WeChat sample;
#   4. prints the device, per-epoch train seconds and test metrics of every model next to the
#      paper's RTX 3090 training times (MMa4CTR 181 s, DIN 170 s, GCSAN 4,756 s on real WeChat).
# --cpu runs the same on the CPU (to try the script on a machine without a GPU); otherwise a
# machine where torch sees no CUDA device is an error. PYTHON picks the interpreter (python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
wheels=${GPU_WHEELS:-$here/gpu_wheels}
epochs=1 scale=sample budget=450 full=yes use_gpu=True
extra=()
while (( $# )); do
    arg=$1
    shift
    case $arg in
        --) extra=("$@"); break ;;
        --epochs=*) epochs=${arg#*=} ;;
        --scale=*) scale=${arg#*=} ;;
        --budget=*) budget=${arg#*=} ;;
        --no-full) full=no ;;
        --cpu) use_gpu=False ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done
started=$(date +%s)
deadline=$((started + budget))

if ! ls "$wheels"/recbole-1.2.1-*.whl "$wheels"/recbole_mma4ctr-*.whl >/dev/null 2>&1; then
    echo "error: $wheels has no recbole 1.2.1 / recbole_mma4ctr wheel: prepare it with benchmarks/gpu_wheels.sh" >&2
    exit 2
fi
# What the machine itself must bring (a GPU image has them; none of them travels as a wheel).
missing=()
for pair in torch:torch numpy:numpy pandas:pandas scipy:scipy sklearn:scikit-learn pyarrow:pyarrow \
            matplotlib:matplotlib; do
    "$python" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if (( ${#missing[@]} )); then
    echo "error: $("$python" -c 'import sys; print(sys.executable)') lacks ${missing[*]}: this check uses the machine's own" >&2
    exit 2
fi
work=${GPU_CHECK_DIR:-$(mktemp -d)}
mkdir -p "$work/site" "$work/run" "$work/logs"

# Install only what the machine lacks (RecBole itself always: 1.2.1 exactly, without its deps).
wanted=(recbole==1.2.1 recbole_mma4ctr)
for pair in colorlog:colorlog colorama:colorama thop:thop texttable:texttable tabulate:tabulate yaml:pyyaml \
            tqdm:tqdm psutil:psutil packaging:packaging absl:absl-py google.protobuf:protobuf tensorboard:tensorboard; do
    "$python" -c "import ${pair%%:*}" 2>/dev/null || wanted+=("${pair#*:}")
done
echo "installing from $wheels into $work/site: ${wanted[*]}"
"$python" -m pip install --quiet --no-index --no-deps --find-links "$wheels" --target "$work/site" "${wanted[@]}"
export PYTHONPATH="$work/site" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

"$python" - "$use_gpu" <<'PY'
import platform, sys
import numpy, pandas, scipy, torch, recbole
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}  torch {torch.__version__}  numpy {numpy.__version__}  "
      f"pandas {pandas.__version__}  scipy {scipy.__version__}  recbole {recbole.__version__}")
print("device:", torch.cuda.get_device_name(0) if cuda else "cpu", f"(CUDA {torch.version.cuda})" if cuda else "")
if sys.argv[1] == "True" and not cuda:
    sys.exit("error: torch sees no CUDA device (torch.cuda.is_available() is False); --cpu runs on the CPU")
PY

cd "$work/run"
common=(--dataset=wechat --epochs="$epochs" --stopping_step=100 --show_progress=False
        --use_gpu="$use_gpu" --gpu_id=0 --results_dir=results "${extra[@]}")
t0=$(date +%s)
"$python" -m recbole_mma4ctr.prepare synth wechat --scale "$scale" --seed 2024 --out dataset/synthetic/wechat \
    > "$work/logs/generate.log" 2>&1
echo "generated the $scale sample in $(( $(date +%s) - t0 )) s"

run_model() {  # model, seconds allowed, folder, extra settings...
    local model=$1 allowed=$2 folder=$3
    shift 3
    local t=$(date +%s) status=ok
    (cd "$folder" && timeout "$allowed" "$python" -m recbole_mma4ctr --model="$model" "${common[@]}" "$@") \
        > "$work/logs/$model-$(basename "$folder").log" 2>&1 || status="failed (exit $?, log: $work/logs/$model-$(basename "$folder").log)"
    echo "$model: $status in $(( $(date +%s) - t )) s"
}

models=(MMa4CTR BPR FPMC NGCF LightGCN BERT4Rec GCSAN DIN DIEN)
left=${#models[@]}
for model in "${models[@]}"; do
    reserve=0
    [[ $full == yes ]] && reserve=150
    allowed=$(( (deadline - $(date +%s) - reserve) / left ))
    (( allowed < 30 )) && allowed=30
    run_model "$model" "$allowed" "$work/run" --synthetic_scale="$scale"
    left=$((left - 1))
done

if [[ $full == yes ]] && (( deadline - $(date +%s) >= 150 )); then
    mkdir -p "$work/full"
    run_model MMa4CTR $(( deadline - $(date +%s) )) "$work/full" --synthetic_scale=full
elif [[ $full == yes ]]; then
    echo "full-size MMa4CTR skipped: less than 150 s of the ${budget} s budget left"
fi

"$python" - "$work" "$scale" "${models[@]}" <<'PY'
import json, sys
from pathlib import Path

PAPER = {"MMa4CTR": 181, "DIN": 170, "GCSAN": 4756}  # whole training on real WeChat, RTX 3090 (paper)
work, scale, models = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
rows = []
for folder, data, wanted in (("run", scale, models), ("full", "full", ["MMa4CTR"])):
    if not (work / folder).exists():
        continue
    records = {}
    for path in sorted((work / folder / "results").glob("*.json")):
        record = json.loads(path.read_text())
        if "history" in record:
            records[record["model"]] = record
    for model in wanted:
        record = records.get(model)
        if record is None:
            rows.append((model, data, "failed or timed out: see its log") + ("",) * 6 + (PAPER.get(model, ""),))
            continue
        epochs = [h["train_seconds"] for h in record["history"] if not h.get("interrupted")]
        test = record.get("test") or {}
        rows.append((model, data, record.get("device", "?"), record.get("split_sizes", {}).get("train", ""),
                     " ".join(f"{s:.2f}" for s in epochs), record.get("fit_seconds"),
                     test.get("auc"), test.get("gauc"), test.get("logloss"), PAPER.get(model, "")))
head = ("model", "data", "device", "train rows", "train s per epoch", "fit s", "test AUC", "GAUC", "LogLoss",
        "paper train s (3090, real WeChat)")
table = [head] + [tuple("" if v is None else str(v) for v in row) for row in rows]
widths = [max(len(row[i]) for row in table) for i in range(len(head))]
for row in table:
    print("  ".join(value.ljust(width) for value, width in zip(row, widths)))
PY
echo "gpu_check took $(( $(date +%s) - started )) s; work folder $work"
