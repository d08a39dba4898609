#!/bin/bash
# Tiny ImageNet bases (issue 34): chenyaofo's CIFAR-100 ResNets from ../shared fine-tuned on the
# 200 Tiny ImageNet classes with `classmod train --init`: a fresh 200-class head, the stem and
# the first two stages frozen (their features cached once), the last stage and the head trained
# at 32x32 with SGD one-cycle for 4 epochs. Weights are not committed; this script makes them.
#
#   experiments/tiny-imagenet.sh [WORK_DIR] [RESULTS_DIR]
#
# Each run checkpoints every epoch: run the script again after an interruption and it goes on
# (`--resume`); a finished base is only evaluated again. Writes RESULTS_DIR/train-<base>.json
# (classmod's JSON, per-class accuracy included) and RESULTS_DIR/summary.md.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared}
work=${1:-$here/target/tiny-imagenet}
results=${2:-$here/results/tiny-imagenet-bases}
data=$shared/data/tiny-imagenet-200.tar.gz
mkdir -p "$work" "$results"
cd "$here"
if [ ! -e "$data" ]; then
  echo "$data is absent: Tiny ImageNet comes from ../shared (see its README)" >&2
  exit 2
fi
cargo build --release -q -p classmod-host --bin classmod
classmod=$here/target/release/classmod

recipe=(--freeze-stages 2 --epochs 4 --batch 128 --lr 0.1 --schedule one-cycle --seed 0 --json)
for depth in 56 20; do
  init=$work/resnet$depth-cifar100.safetensors
  out=$work/tiny-resnet$depth.safetensors
  [ -e "$init" ] || $classmod import "$shared/models/resnet$depth-cifar100-chenyaofo.safetensors" --out "$init"
  resume=()
  [ -e "$out.resume" ] && resume=(--resume)
  $classmod train --data "$data" --init "$init" --out "$out" "${recipe[@]}" "${resume[@]}" \
    | tail -n 1 > "$results/train-resnet$depth.json"
done

python3 - "$results" "$(uname -m)" "$(nproc)" <<'PY'
import json, sys, os
results, machine, cores = sys.argv[1], sys.argv[2], sys.argv[3]
rows = []
for depth in (56, 20):
    v = json.load(open(os.path.join(results, f"train-resnet{depth}.json")))
    t = v["train"]
    rows.append(f"| ResNet-{depth} (CIFAR-100, chenyaofo) | {v['freeze_stages']} | {v['input_size']}x{v['input_size']} "
                f"| {t['epochs']:.1f} | {100*v['top1']:.2f} | {100*v['top5']:.2f} | {t['seconds']/60:.1f} | {v['seconds']/60:.1f} |")
open(os.path.join(results, "summary.md"), "w").write(
    "# Tiny ImageNet bases fine-tuned from CIFAR-100 ResNets\n\n"
    "`experiments/tiny-imagenet.sh` (classmod train --init ... --freeze-stages 2 --epochs 4 --batch 128 --lr 0.1 "
    f"--schedule one-cycle --seed 0), {cores} cores, {machine}. Top-1/top-5 on the 10,000 validation images.\n\n"
    "| base from | frozen stages | input | epochs | top-1 % | top-5 % | training min | whole run min |\n"
    "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
print(open(os.path.join(results, "summary.md")).read())
PY
