#!/usr/bin/env bash
# Builds `classmod`, `classmod-edge` and the GPU test binary with candle's CUDA backend for one
# compute capability, on any x86-64 Linux machine, with or without a GPU or a CUDA toolkit.
#
#   scripts/cuda-build.sh CAP [--cudnn] [--out DIR]
#
# CAP is the compute capability without the dot: 90 (H100/H200), 87 (Jetson Orin), 72 (Xavier NX).
# The toolkit, in this order: $CUDA_HOME when it holds bin/nvcc; an `nvcc` on PATH; else CUDA 13.0
# installed from PyPI's NVIDIA wheels (nvcc, nvvm, crt, cccl, cudart, nvrtc, cublas, curand; about
# 700 MB) into target/cuda-13.0, once. The binary loads the same libraries' major versions at run
# time (libcublas.so.13, libcurand.so.10, libnvrtc.so.13, the driver's libcuda.so.1): on the device
# from the CUDA install, elsewhere from LD_LIBRARY_PATH (scripts/gpu-check.sh finds PyTorch's).
# The PTX candle compiles must not be newer than the driver: 13.0 runs on a 13.0 driver (R580)
# and later. Jetsons build on the device with JetPack's nvcc instead (README, "GPU").
#
# The binaries land in DIR (default target/cuda-smCAP/bin): classmod, classmod-edge, gpu-tests.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/cuda-build.sh CAP [--cudnn] [--out DIR]   (CAP e.g. 90, 87, 72)" >&2; exit 2; }
[ $# -ge 1 ] || usage
cap=$1; shift
[[ $cap =~ ^[0-9]{2,3}a?$ ]] || { echo "cuda-build: compute capability '$cap' is not like 90 or 87" >&2; exit 2; }
features=cuda
out=""
while [ $# -gt 0 ]; do
  case $1 in
    --cudnn) features=cudnn ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    *) usage ;;
  esac
  shift
done
target_dir=target/cuda-sm$cap${features/cuda/}
out=${out:-$target_dir/bin}

# The CUDA 13.0 wheels, pinned: nvcc 13.0 writes PTX ISA 9.0, which a 13.0 driver loads.
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
        nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35)
cudnn_wheel=nvidia-cudnn-cu13==9.13.0.50

nvcc_release() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p'; }

if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "cuda-build: the toolkit at CUDA_HOME=$CUDA_HOME (nvcc $(nvcc_release "$CUDA_HOME/bin/nvcc"))"
elif command -v nvcc >/dev/null; then
  CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  echo "cuda-build: the toolkit of the nvcc on PATH: $CUDA_HOME (nvcc $(nvcc_release nvcc))"
elif [ "$(uname -m)" != x86_64 ]; then
  echo "cuda-build: no CUDA toolkit found; on $(uname -m) (a Jetson) install JetPack's (nvcc under /usr/local/cuda) and set CUDA_HOME" >&2
  exit 2
else
  CUDA_HOME=$PWD/target/cuda-13.0
  want=("${wheels[@]}")
  [ "$features" = cudnn ] && want+=("$cudnn_wheel")
  stamp="$CUDA_HOME/.installed-$(echo "${want[*]}" | md5sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "cuda-build: no CUDA toolkit here; installing CUDA 13.0 from PyPI's NVIDIA wheels into $CUDA_HOME"
    command -v python3 >/dev/null || { echo "cuda-build: python3 is needed to fetch the CUDA wheels (apt-get install python3-pip)" >&2; exit 2; }
    rm -rf "$CUDA_HOME" && mkdir -p "$CUDA_HOME/wheels"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
      -d "$CUDA_HOME/wheels" "${want[@]}"
    for w in "$CUDA_HOME"/wheels/*.whl; do python3 -m zipfile -e "$w" "$CUDA_HOME/unpacked"; done
    # Each wheel puts its part under nvidia/cu13 (cudnn under nvidia/cudnn): one toolkit tree.
    for part in "$CUDA_HOME"/unpacked/nvidia/*/; do cp -a "$part". "$CUDA_HOME/"; done
    rm -rf "$CUDA_HOME/unpacked" "$CUDA_HOME/wheels"
    chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/*
    touch "$stamp"
  fi
  echo "cuda-build: CUDA from PyPI's wheels at $CUDA_HOME (nvcc $(nvcc_release "$CUDA_HOME/bin/nvcc"))"
fi

# The linker wants unversioned names (-lcublas ...), which wheels lack, and the driver's libcuda,
# which no toolkit wheel has: a stub libcuda.so.1 whose functions are the ones cudarc binds. At
# run time the driver's own libcuda.so.1 is loaded in its place.
links=$PWD/$target_dir/link
mkdir -p "$links"
for lib in cudart cublas cublasLt curand nvrtc cudnn; do
  so=$(ls "$CUDA_HOME"/lib/lib$lib.so.[0-9]* "$CUDA_HOME"/lib64/lib$lib.so.[0-9]* 2>/dev/null | head -1 || true)
  [ -n "$so" ] && ln -sf "$so" "$links/lib$lib.so"
done
if ! ls "$CUDA_HOME"/lib*/stubs/libcuda.so /usr/lib/x86_64-linux-gnu/libcuda.so >/dev/null 2>&1; then
  cargo fetch -q
  cudarc=$(cargo metadata --format-version 1 --features classmod/cuda 2>/dev/null |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')
  scripts/cuda-stub.sh "$(dirname "$cudarc")/src/driver/sys/mod.rs" "$links"
fi

export CUDA_HOME CUDA_COMPUTE_CAP=$cap PATH="$CUDA_HOME/bin:$PATH"
export LIBRARY_PATH="$links${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$links"
# The device profile (stripped, optimised): what ships to a board and what the GPU check carries.
bin_features=classmod-host/cuda,classmod-edge/cuda
[ "$features" = cudnn ] && bin_features+=,classmod-runtime/cudnn
cargo build --profile device --target-dir "$target_dir" --features "$bin_features" \
  -p classmod-host --bin classmod -p classmod-edge --bin classmod-edge
tests=$(cargo test --profile device --target-dir "$target_dir" --features "classmod/$features" \
  -p classmod --test gpu --no-run --message-format=json |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])')
mkdir -p "$out"
cp "$target_dir/device/classmod" "$target_dir/device/classmod-edge" "$out/"
cp "$tests" "$out/gpu-tests"
strip "$out/gpu-tests" 2>/dev/null || true
echo "cuda-build: sm_$cap, features $features: $(cd "$out" && ls | tr '\n' ' ')in $out"
