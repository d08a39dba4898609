#!/bin/bash
# The paper's experiments on Tiny ImageNet (issue 34, part 7), on the two bases that
# experiments/tiny-imagenet.sh makes (run it first): both decomposed into compact and mask
# modules, then RQ1 beside the paper's table, reuse, replace by transplant and the open set.
#
#   experiments/tiny-imagenet-paper.sh [WORK_DIR] [RESULTS_DIR]
#
# WORK_DIR holds tiny-resnet{56,20}.safetensors (tiny-imagenet.sh's default work dir); module
# directories go there too and a finished one is not decomposed again. Mask modules cost about
# 200 forwards of the base an image when all 200 are composed, so every experiment that composes
# them scores a seeded class-balanced 2,000 of the 10,000 validation images (10 a class); the
# compact modules are scored on all 10,000 too. About 3 hours on a 2-core machine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared}
work=${1:-$here/target/tiny-imagenet}
results=${2:-$here/results}
data=$shared/data/tiny-imagenet-200.tar.gz
cd "$here"
for depth in 56 20; do
  if [ ! -e "$work/tiny-resnet$depth.safetensors" ]; then
    echo "$work/tiny-resnet$depth.safetensors is absent: run experiments/tiny-imagenet.sh first" >&2
    exit 2
  fi
done
cargo build --release -q -p classmod-host --bin classmod
classmod=$here/target/release/classmod

# Compact modules check themselves on the validation split (half chooses what grows, half
# confirms): on these bases they compose above the base there, so nothing grows and the RQ1
# figures on all 10,000 images are not chosen on (the JSON's `growth.rounds` says so; were any
# round kept, report `growth.confirm` beside them).
for depth in 56 20; do
  base=$work/tiny-resnet$depth.safetensors
  for kind in compact mask; do
    dir=$work/$kind-resnet$depth
    [ -e "$dir/manifest.json" ] || $classmod decompose --kind $kind --model "$base" --data "$data" --out "$dir" --json \
      | tail -n 1 > "$work/decompose-$kind-resnet$depth.json"
  done
done
c56=$work/compact-resnet56 m56=$work/mask-resnet56 c20=$work/compact-resnet20 m20=$work/mask-resnet20

# RQ1: the compact modules on every validation image; all four on the same 2,000.
$classmod experiment rq1 --packed "$c56" "$c20" --data "$data" --out "$results/rq1-tiny-imagenet" \
  --paper tiny-imagenet --json > /dev/null
$classmod experiment rq1 --packed "$c56" "$m56" "$c20" "$m20" --data "$data" \
  --out "$results/rq1-tiny-imagenet/val2000" --paper tiny-imagenet --limit 2000 --json > /dev/null
# Reuse: 200 seeded pairs of the 19,900 and 30 seeded five-class subsets, against the base
# restricted to them.
$classmod experiment reuse --packed "$c56" --data "$data" --out "$results/reuse-tiny-imagenet-resnet56/compact" --json > /dev/null
$classmod experiment reuse --packed "$m56" --data "$data" --out "$results/reuse-tiny-imagenet-resnet56/mask" \
  --limit 2000 --json > /dev/null
# The paper's reuse protocol: the 6 pairs of 4 seeded classes against a model fine-tuned on each
# pair alone, as the bases were made (the CIFAR-100 ResNet-56 that tiny-imagenet.sh imported).
$classmod experiment reuse --packed "$c56" --data "$data" --out "$results/reuse-tiny-imagenet-resnet56/trained-pairs" \
  --trained-pairs 4 --train-flags "--init $work/resnet56-cifar100.safetensors --freeze-stages 2 --epochs 20 --batch 128 --lr 0.1 --schedule one-cycle --seed 0" \
  --json > /dev/null
# Replace: 20 seeded classes of the ResNet-20 base distilled onto the ResNet-56 base's trunk,
# each swapped in for the ResNet-56's own compact module.
$classmod experiment transplant --model "$work/tiny-resnet56.safetensors" --with "$work/tiny-resnet20.safetensors" \
  --own "$c56" --class-sample 20 --data "$data" --out "$results/transplant-tiny-imagenet-resnet20-onto-resnet56" --json > /dev/null
# Open set: 1,000 seeded subsets of 3 and of 5 loaded classes, the other classes' images to be
# answered none; compact alone on every image, compact and mask on the 2,000.
$classmod experiment open-set --packed "$c56" --data "$data" --out "$results/open-set-tiny-imagenet-resnet56" --json > /dev/null
$classmod experiment open-set --packed "$c56" "$m56" --data "$data" --out "$results/open-set-tiny-imagenet-resnet56/val2000" \
  --sizes 5 --limit 2000 --json > /dev/null
echo "written under $results"
