#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer on stable Rust (the flags of README.md), writes the seed
# corpora, runs each target for RUNS executions (default 10^7), one after another, and prints one
# line per target: executions, seconds, corpus size, findings (crash-*, leak-*, oom-*, timeout-*
# files under artifacts/TARGET/). Usage: fuzz/run-all.sh [RUNS] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-10000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(blob_parse manifest_parse inbox_entry image_file)
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares" \
  cargo build --release --target "$host" $(printf -- '--bin %s ' "${targets[@]}")
cargo run --release --bin seed_corpus -- corpus
for t in "${targets[@]}"; do
  mkdir -p "artifacts/$t"
  start=$(date +%s)
  "target/$host/release/$t" "corpus/$t" -runs="$runs" -artifact_prefix="artifacts/$t/" \
    -print_final_stats=1 > "artifacts/$t.log" 2>&1 || true
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "artifacts/$t.log" | tail -1)
  findings=$(find "artifacts/$t" -type f | wc -l)
  echo "$t: ${execs:-?} executions in ${secs} s, corpus $(ls "corpus/$t" | wc -l) files, findings: $findings (log artifacts/$t.log)"
done
