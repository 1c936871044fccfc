#!/usr/bin/env bash
# Record the CPU benchmarks in benchmarks/cpu/ (see benchmarks/README.md).
#   benchmarks/run_cpu.sh            church-256, then ffhq-1024
#   benchmarks/run_cpu.sh church-256 one preset
# Presets are built and exported on first use (ffhq-1024: several minutes, ~10 GB peak memory) and cached under
# $RESTYLE_RT_CACHE (default ~/.cache/restyle-rt). The machine should be otherwise idle: each JSON records the
# load average before and after every configuration; re-run when it is above ~2.5 on a 2-core box.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/cpu
mkdir -p "$out"
presets=("${@:-church-256 ffhq-1024}")
for p in ${presets[@]}; do
  case "$p" in
    church-256) extra=(--warmup 1 --repeat 2 --memory --profile-ort 1) ;;
    # 1024: torch-official takes ~40 s per image-loop at batch 1 here; keep the repeat count small
    ffhq-1024) extra=(--warmup 1 --repeat 2 --memory) ;;
    *) extra=(--warmup 1 --repeat 3) ;;
  esac
  python -m restyle_rt.cli bench --preset "$p" --backend ort,torch,torch-official --batch 1,4 --iters 5 \
    "${extra[@]}" --json "$out/$p.json" --plot "$out/$p.png" | tee "$out/$p.md"
done
