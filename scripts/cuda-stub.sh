#!/usr/bin/env bash
# Writes OUT_DIR/libcuda.so, a stub of the CUDA driver library to link against where no driver
# is installed (a build machine without a GPU): every `cu*` function cudarc's driver bindings
# (SYS_RS, cudarc's src/driver/sys/mod.rs) declare, as an empty function, under the soname
# libcuda.so.1, so that the binary asks for the driver's real libcuda.so.1 when it runs.
#
#   scripts/cuda-stub.sh SYS_RS OUT_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: scripts/cuda-stub.sh SYS_RS OUT_DIR" >&2; exit 2; }
sys_rs=$1 out=$2
[ -f "$sys_rs" ] || { echo "cuda-stub: $sys_rs: no such file" >&2; exit 2; }
mkdir -p "$out"
{ grep -oE '^ +fn cu[A-Za-z0-9_]+\(' "$sys_rs" || true; } |
  sed -E 's/.*fn (cu[A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u >"$out/libcuda-stub.c"
n=$(wc -l <"$out/libcuda-stub.c")
[ "$n" -gt 0 ] || { echo "cuda-stub: $sys_rs declares no cu* functions" >&2; exit 2; }
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so" "$out/libcuda-stub.c"
echo "cuda-stub: $out/libcuda.so, a stub libcuda.so.1 of $n driver functions"
