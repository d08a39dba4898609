#!/usr/bin/env bash
# The GPU check: one command on a CUDA machine that proves the GPU path and measures it against
# PyTorch on the same GPU, in the same run. Self-contained in the working tree: it needs only
# what scripts/gpu-prepare.sh put in .gpu-check/ (CUDA binaries, imported models, packed module
# directories, the 20 lossless PNGs and the CIFAR-10 JPEG archive), a CUDA driver, and a python3
# with torch (CUDA) for the baseline. No Rust toolchain, no network.
#
#   scripts/gpu-check.sh OUT_DIR
#
# Writes OUT_DIR/summary.md (parity checks PASS/FAIL and the throughput table) and the logs.
# Exit 0 when every parity check passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu-check.sh OUT_DIR}
mkdir -p "$out"
G=${GPU_CHECK_DIR:-.gpu-check}
bin=$G/bin
fx=$G/fixtures
export CLASSMOD_SHARED=$PWD/$G/shared CLASSMOD_GPU_FIXTURES=$PWD/$fx
data=$CLASSMOD_SHARED/data/cifar10-jpeg.tar.gz
secs=${GPU_CHECK_SECONDS:-1}
start=$(date +%s)
log() { echo "[gpu-check +$(($(date +%s) - start))s] $*" | tee -a "$out/check.log"; }

[ -f $G/bin.tar.xz ] && [ ! -x $bin/classmod ] && mkdir -p $bin && tar -xJf $G/bin.tar.xz -C $bin
for f in $bin/classmod $bin/gpu-tests $fx/r20.safetensors $fx/mask20/manifest.json "$data"; do
  [ -e "$f" ] || { echo "gpu-check: $f is missing: run scripts/gpu-prepare.sh first" >&2; exit 2; }
done

# The CUDA 13 libraries the binaries link (cuBLAS, cuRAND, NVRTC): a CUDA install's, else the
# wheels under the python's site-packages (PyTorch's), found by name.
libs=$(find /usr/local/cuda/lib64 /usr/local/cuda/targets/*/lib \
  "$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)" \
  -name 'libcudart.so.13' -o -name 'libcublas.so.13' -o -name 'libcurand.so.10' -o -name 'libnvrtc.so.13' -o -name 'libcudnn.so.9' 2>/dev/null |
  xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd $bin/classmod | grep -E 'cuda|cublas|curand|nvrtc|cudnn|not found'
  nproc
} >"$out/machine.txt" 2>&1
log "machine: $(head -2 "$out/machine.txt" | tail -1)"

verdict() { # NAME RC DETAIL
  if [ "$2" = 0 ]; then echo "| $1 | PASS | $3 |"; else echo "| $1 | **FAIL** | $3 |"; fi >>"$out/parity.md"
}
echo -e "| check | result | detail |\n|---|---|---|" >"$out/parity.md"

# 1. The GPU tests: logits against PyTorch's, mask and compact groups against the CPU path, a
#    GPU-backed runtime's load, hot swap, field update and rollback.
log "GPU tests"
timeout 300 $bin/gpu-tests --test-threads 1 --nocapture >"$out/gpu-tests.log" 2>&1
rc=$?
verdict "GPU tests (tests/gpu.rs)" $rc "$(grep -E '^test result' "$out/gpu-tests.log" | tail -1); $(grep -cE '^GPU ' "$out/gpu-tests.log") measurements in gpu-tests.log"
grep -E '^GPU |SKIPPED|panicked' "$out/gpu-tests.log" | sed 's/^/    /' | tee -a "$out/check.log"

# 2. The device program on the GPU as a board profile picks it (orin-nano: the GPU, f16): three
#    classes of ResNet-20, the 20 PNGs, and cat's compact module arriving through the inbox.
log "classmod-edge on the GPU (board orin-nano: auto device, auto precision)"
dev=$(mktemp -d)
cp -r $fx/mask20 "$dev/dir" && mkdir "$dev/inbox"
cp "$(ls $fx/compact20/class-003-*.blob | head -1)" "$dev/inbox/cat.blob"
timeout 120 $bin/classmod-edge "$dev/dir" --classes cat,dog,ship --board orin-nano --images \
  "$CLASSMOD_SHARED"/data/cifar10-lossless-20/*.png --inbox "$dev/inbox" --once --min-score off \
  >"$out/edge.stdout" 2>"$out/edge.log"
rc=$?
grep -q 'computing on the CUDA GPU 0 (sm_87) in f16' "$out/edge.log" || rc=9
[ "$(wc -l <"$out/edge.stdout")" -ge 20 ] || rc=8
[ -f "$dev/inbox/done/cat.blob" ] || rc=7
verdict "classmod-edge --board orin-nano (GPU, f16)" $rc "exit/check code $rc; $(wc -l <"$out/edge.stdout") results; $(grep -cE 'updated|added' "$out/edge.log") update line(s); edge.log"
rm -rf "$dev"

# 3. The 10,000 test images: top-1 on the GPU (f32, f16) against the CPU path's.
for n in 20 56; do
  for run in cpu:f32 cuda:f32 cuda:f16; do
    log "eval ResNet-$n on $run"
    timeout 240 $bin/classmod eval --model $fx/r$n.safetensors --data "$data" --device ${run%:*} \
      --precision ${run#*:} --batch 256 --json >"$out/eval-r$n-${run/:/-}.log" 2>&1 || log "eval failed: see eval-r$n-${run/:/-}.log"
  done
  python3 - "$out" $n >>"$out/parity.md" <<'EOF'
import json, sys
out, n = sys.argv[1], sys.argv[2]
def top1(run):
    try:
        with open(f"{out}/eval-r{n}-{run}.log") as f:
            return json.loads([l for l in f if l.startswith("{")][-1])["top1"]
    except Exception:
        return None
cpu = top1("cpu-f32")
for run, bound in (("cuda-f32", 0.0005), ("cuda-f16", 0.003)):
    g = top1(run)
    ok = cpu is not None and g is not None and abs(g - cpu) <= bound
    detail = f"top-1 {g!r} vs CPU {cpu!r} (bound {100 * bound:.2f} points)" if g is not None and cpu is not None else "did not run"
    print(f"| ResNet-{n} 10,000 test images, {run} | {'PASS' if ok else '**FAIL**'} | {detail} |")
EOF
done

# 4. Throughput: classmod (base f32/f16 at batch 1, 64, 256; mask and compact groups of 10)
#    and PyTorch eager (f32, f16 autocast; batch 640 = a group of 10 on 64 images' work).
for n in 20 56; do
  for p in f32 f16; do
    log "throughput ResNet-$n $p"
    timeout 120 $bin/classmod throughput --model $fx/r$n.safetensors --device cuda --precision $p \
      --batches 1,64,256 --seconds "$secs" --json >"$out/tp-r$n-$p.log" 2>&1
  done
  log "PyTorch ResNet-$n"
  timeout 180 python3 tools/gpu_reference.py --model $fx/r$n.safetensors --batches 1,10,64,256,640 \
    --seconds "$secs" --json >"$out/torch-r$n.log" 2>&1
done
for kind in mask20 compact20; do
  for p in f32 f16; do
    log "throughput $kind group of 10, $p"
    timeout 120 $bin/classmod throughput --packed $fx/$kind --classes 10 --device cuda --precision $p \
      --batches 1,64 --seconds "$secs" --json >"$out/tp-$kind-$p.log" 2>&1
  done
done

python3 - "$out" >"$out/throughput.md" <<'EOF'
import json, sys
out = sys.argv[1]
def rows(name):
    try:
        with open(f"{out}/{name}.log") as f:
            return json.loads([l for l in f if l.startswith("{")][-1])["rows"]
    except Exception:
        return []
print("| model | batch | classmod f32 img/s (ms) | classmod f16 img/s (ms) | PyTorch f32 img/s (ms) | PyTorch f16 autocast img/s (ms) | classmod f32 / PyTorch f32 |")
print("|---|---|---|---|---|---|---|")
cell = lambda r: f"{r['images_per_second']:,.0f} ({r['median_ms']:.3f})" if r else "-"
for n in (20, 56):
    t = rows(f"torch-r{n}")
    for b in (1, 64, 256):
        c32 = next((r for r in rows(f"tp-r{n}-f32") if r["batch"] == b), None)
        c16 = next((r for r in rows(f"tp-r{n}-f16") if r["batch"] == b), None)
        t32 = next((r for r in t if r["batch"] == b and r["mode"] == "f32"), None)
        t16 = next((r for r in t if r["batch"] == b and r["mode"] == "f16-autocast"), None)
        ratio = f"{c32['images_per_second'] / t32['images_per_second']:.2f}" if c32 and t32 else "-"
        print(f"| ResNet-{n} | {b} | {cell(c32)} | {cell(c16)} | {cell(t32)} | {cell(t16)} | {ratio} |")
t = rows("torch-r20")
for kind in ("mask20", "compact20"):
    for b in (1, 64):
        c32 = next((r for r in rows(f"tp-{kind}-f32") if r["batch"] == b), None)
        c16 = next((r for r in rows(f"tp-{kind}-f16") if r["batch"] == b), None)
        # A group of 10 on b images; PyTorch's base on 10*b images (640) is a mask group's work.
        t32 = next((r for r in t if r["batch"] == 10 * b and r["mode"] == "f32"), None)
        t16 = next((r for r in t if r["batch"] == 10 * b and r["mode"] == "f16-autocast"), None)
        ratio = f"{(c32['images_per_second'] * 10) / t32['images_per_second']:.2f}" if c32 and t32 else "-"
        print(f"| ResNet-20 {kind[:-2]} group of 10 | {b} | {cell(c32)} | {cell(c16)} | {cell(t32)} (batch {10 * b}) | {cell(t16)} | {ratio} |")
print()
print("img/s: images per second at the median pass (a group: images, each scored by all 10 modules); ms: the median pass.")
print("A group's PyTorch columns: the base on 10x the images, a mask group's work; its ratio: 10 x group img/s over that.")
print("One pass at a time, each waited for (logits or scores back on the host for classmod; torch.cuda.synchronize for PyTorch).")
EOF
head -3 "$out/torch-r20.log" | head -1 >"$out/torch-version.txt" 2>/dev/null
{
  echo "# GPU check, $(date -u +%Y-%m-%d), $(sed -n 2p "$out/machine.txt")"
  echo
  cat "$out/parity.md"
  echo
  cat "$out/throughput.md"
  echo
  echo "PyTorch: $(grep -m1 '^PyTorch' "$out/torch-r20.log" 2>/dev/null)"
} >"$out/summary.md"
cat "$out/summary.md"
fails=$(grep -c 'FAIL\*\*' "$out/parity.md")
log "done, $fails parity check(s) failed"
[ "$fails" = 0 ]
