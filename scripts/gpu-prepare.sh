#!/usr/bin/env bash
# Prepares .gpu-check/ (ignored by git) for scripts/gpu-check.sh on a GPU machine without a Rust
# toolchain or network: the CUDA binaries for compute capability CAP (scripts/cuda-build.sh), the
# shared ResNet-20/56 imported, 10 mask and 10 compact modules of ResNet-20 packed, and the part
# of ../shared the check reads (the 20 lossless PNGs with PyTorch's logits, the CIFAR-10 JPEG
# archive). About 50 MB; run on any x86-64 Linux machine:
#
#   scripts/gpu-prepare.sh [CAP]        # CAP defaults to 90 (H100/H200)
set -euo pipefail
cd "$(dirname "$0")/.."
cap=${1:-90}
shared=$(cd "${CLASSMOD_SHARED:-../shared}" && pwd)
G=.gpu-check
[ -f "$shared/models/resnet20-cifar10.safetensors" ] || { echo "gpu-prepare: $shared has no models (set CLASSMOD_SHARED)" >&2; exit 2; }
mkdir -p $G/fixtures $G/shared/data $G/shared/models

scripts/cuda-build.sh "$cap" --out $G/bin
# Compressed: the working tree a GPU machine is sent is limited; gpu-check.sh unpacks it.
tar -cJf $G/bin.tar.xz -C $G/bin classmod classmod-edge gpu-tests

cp "$shared/README.md" $G/shared/
cp -r "$shared/data/cifar10-lossless-20" "$shared/data/cifar10-jpeg.tar.gz" $G/shared/data/

# The fixtures, made on the CPU with this machine's own build.
cargo build -q -p classmod-host --bin classmod
classmod=$PWD/target/debug/classmod
cd $G/fixtures
for n in 20 56; do
  [ -f r$n.safetensors ] || $classmod import "$shared/models/resnet$n-cifar10.safetensors" --out r$n.safetensors \
    --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
    --class-names airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck
done
data=$shared/data/cifar10-jpeg.tar.gz
[ -f mask20/manifest.json ] || $classmod decompose --model r20.safetensors --data "$data" --out mask20 --n-pos 100 --golden 4
# One epoch on 2,000 images: the branches need not be good, only the same on GPU and CPU.
[ -f compact20/manifest.json ] || $classmod decompose --kind compact --model r20.safetensors --data "$data" \
  --out compact20 --epochs 1 --max-images 2000 --golden 4
cd ../..
rm -rf $G/bin
du -sh $G
echo "gpu-prepare: ready; on the GPU machine: scripts/gpu-check.sh OUT_DIR"
