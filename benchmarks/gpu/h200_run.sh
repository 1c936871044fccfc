#!/usr/bin/env bash
# The H200 run, call by call (benchmarks/gpu/README.md, "Prepared: the H200 run"; the work: h200_run.py beside this).
#
# HERE (the CPU box, once):     bash benchmarks/gpu/h200_run.sh prepare   # wheels -> /tmp/h200/pieces, RTX toy engines
# HERE (before the first call): bash benchmarks/gpu/h200_run.sh stage     # .whl/h200/cN: piece N (+ manifest, toy)
# THERE (device call N):        run(command="bash benchmarks/gpu/h200_run.sh call N", carry=[".whl/h200/cN"],
#                                   timeout_s=...)  (timeouts, times: benchmarks/gpu/README.md)
# HERE (at the end):            bash benchmarks/gpu/h200_run.sh clean
#
# Each device call keeps its carried piece outside the tree (/root/h200/pieces), assembles and installs every wheel
# that is complete (sha256 of every piece, of the stream and of every member against the wheel's RECORD), then does
# the most important pending work whose prerequisites are there, in this order:
#   1. (first call) machine facts; in the background: the random-weight exports (church-256, ffhq-1024; torch, CPU)
#      and compute-sanitizer (memcheck, racecheck on a subset, synccheck) over tests/gpu + tests/kernels/test_gpu.py,
#      so both run while the next pieces travel;
#   2. once onnxruntime-gpu is installed: the ORT CUDA EP loop on church-256 (FP32, FP16, FP32 without TF32; bound
#      loop and CUDA graph; batch 1, 4, 8; per-step parity vs the CPU loop) -- waits for the sanitizer first (GPU
#      free) and stops it after 90 s;
#   3. in the next call: the same on ffhq-1024 (FP32, FP16);
#   4. once TensorRT-RTX is installed: rtx-probe on the AOT toy engines (carried from call 5 on, cN/rtx-toy).
# At most one ORT preset per call, so each call's results come back before the next starts (losing the machine
# loses at most the call in flight). Every call copies what exists so far to $OUT (at most 8 files). Run calls until
# one prints "ALL DONE"; with the 5 pieces of the default split that is call 5 (pieces 1-4 carry onnxslim and
# onnxruntime-gpu, 4-5 TensorRT-RTX). The warm machine is released after ~30 s idle: issue the next call at once.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
RUN=("$PY" benchmarks/gpu/h200_run.py)
DL=${H200_DL:-/tmp/h200/dl}
PIECES=${H200_PIECES:-/tmp/h200/pieces}
RTX_TOY=${H200_RTX_TOY:-/tmp/h200/rtx-toy}
STAGE=${H200_STAGE:-.whl/h200}                # ignored by .gitignore (/.whl/); call N carries $STAGE/cN
W=${H200_WORK:-/root/h200}                    # on the device, outside the tree: kept while the machine is warm
PRESETS=${H200_PRESETS-church-256 ffhq-1024}
WHEELS=("onnxslim==0.1.98" "onnxruntime-gpu==1.31.1" "tensorrt-rtx-cu13-bindings==1.7.1.116"
        "tensorrt-rtx-cu13-libs==1.7.1.116")
RACE_K='13x37x5x19 or 64x3x8x8 or noise_modes'   # racecheck: every kernel kind, partial tiles, both batches

die() { echo "h200_run.sh: $*" >&2; exit 2; }

# --- here --------------------------------------------------------------------------------------------------------

do_prepare() {
  mkdir -p "$DL"
  for w in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$DL" "$w" || die "pip download $w failed"
  done
  ls -l "$DL"
  [ -e "$PIECES" ] && die "$PIECES exists; remove it to split again"
  # order = what is needed first; libonnxruntime.so (the C API library, 29 MB) is never loaded by Python: left out.
  # The TensorRT EP library stays (0.4 MiB): the product's default provider list meets it as users will.
  nice "${RUN[@]}" pieces split "$DL"/onnxslim-*.whl "$DL"/onnxruntime_gpu-*.whl \
    "$DL"/tensorrt_rtx_cu13_bindings-*.whl "$DL"/tensorrt_rtx_cu13_libs-*.whl --encoding wheel-xz \
    --size "${H200_PIECE_SIZE:-58MiB}" --out "$PIECES" \
    --drop 'onnxruntime/capi/libonnxruntime.so.*' --json "${PIECES%/}.split.json" || die "split failed"
  rm -rf "$RTX_TOY"
  nice "${RUN[@]}" rtx-engine "$RTX_TOY" || echo "h200_run.sh: no TensorRT-RTX here: the RTX probe will have no engines"
}

do_stage() {  # one folder per call, made once, so nothing has to be copied between calls (30 s warm window)
  local n count part dir out
  [ -f "$PIECES/pieces.json" ] || die "no $PIECES/pieces.json: run '$0 prepare' first"
  count=$("$PY" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['pieces']))" "$PIECES/pieces.json")
  rm -rf "$STAGE" && mkdir -p "$STAGE"
  for n in $(seq 1 $((count + 1))); do
    dir="$STAGE/c$n"
    mkdir -p "$dir" && cp "$PIECES/pieces.json" "$dir/"
    part=$(printf 'part-%03d' "$n")
    [ -f "$PIECES/$part" ] && cp "$PIECES/$part" "$dir/"
    # the toy engines ride with the last (smallest) piece, the one that completes TensorRT-RTX, and after it
    if [ "$n" -ge "$count" ] && [ -d "$RTX_TOY" ]; then cp -r "$RTX_TOY" "$dir/rtx-toy"; fi
    echo "call $n carries $dir: $(ls "$dir" | tr '\n' ' ')"
    out=$("${RUN[@]}" budget --carry "$dir") || die "call $n would carry more than 64 MiB: recut smaller pieces \
(${RUN[*]} pieces recut $PIECES --out DIR --size 55MiB; then H200_PIECES=DIR $0 stage)"
    echo "  ${out%%$'\n'*}"
  done
}

do_plan() {
  [ -f "$PIECES/pieces.json" ] || die "no $PIECES/pieces.json: run '$0 prepare' first"
  "$PY" - "$PIECES/pieces.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
for e in m["files"]:
    print(f"{e['name']}: {e['source_size'] / 2**20:.1f} MiB -> {e['size'] / 2**20:.1f} MiB ({e['encoding']}), "
          f"pieces {', '.join(e['pieces'])}")
for p in m["pieces"]:
    have = [e["name"].split("-")[0] for e in m["files"] if e["pieces"][-1] == p["file"]]
    print(f"call {int(p['file'][5:])}: carries {p['file']} ({p['size'] / 2**20:.1f} MiB)"
          + (f"; completes {', '.join(have)}" if have else ""))
EOF
}

# --- there -------------------------------------------------------------------------------------------------------

done_mark() { [ -e "$W/done/$1" ]; }
mark() { mkdir -p "$W/done" && date -u +%FT%TZ > "$W/done/$1"; }
have_ort_gpu() {
  "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
    2>/dev/null
}
have_rtx() {  # bindings and libs (they complete in different calls)
  "$PY" -c "import importlib.util as u, sys
sys.exit(not (u.find_spec('tensorrt_rtx_bindings') and u.find_spec('tensorrt_rtx_libs')))" 2>/dev/null
}

wait_for() {  # wait_for MARK SECONDS [PIDFILE]: until MARK exists, or its background job is gone, or time is up
  local mark_=$1 limit=$2 pidf=${3:-} t=0
  while ! done_mark "$mark_" && [ "$t" -lt "$limit" ]; do
    if [ -n "$pidf" ] && [ -f "$pidf" ] && ! kill -0 "$(cat "$pidf")" 2>/dev/null; then break; fi
    sleep 5; t=$((t + 5))
  done
  done_mark "$mark_"
}

bg() {  # bg NAME COMMAND...: run in its own session (survives the call), pid in $W/NAME.pid, output in results/
  local name=$1; shift
  local ss; ss=$(command -v setsid || true)  # setsid: its own session, so it outlives the call (and `kill -- -PID`)
  $ss bash -c 'echo $$ > "$0/$1.pid"; shift; exec "$@"' "$W" "$name" "$@" > "$W/results/$name.out" 2>&1 < /dev/null &
  sleep 1
}

collect() {  # copy what the background jobs wrote since the last call ($OUT takes at most 8 files a call)
  local f sent
  for f in "$W"/results/prepare-*.json "$W"/results/sanitize.json "$W"/results/sanitize.log; do
    [ -f "$f" ] || continue
    [ "${f##*.}" = log ] && ! done_mark sanitize && continue      # the log once the sanitizer is done
    sent="$W/done/sent-$(basename "$f")"
    if [ ! -e "$sent" ] || [ "$f" -nt "$sent" ]; then cp "$f" "$OUT/" && touch "$sent"; fi
  done
}

do_call() {
  local n=$1 preset
  [ -n "${OUT:-}" ] || die "'call' runs on the device machine (\$OUT is unset); here use prepare / stage / plan"
  mkdir -p "$W/results" "$W/done"
  export PYTHONUNBUFFERED=1 H200_WORK="$W" PYTHONPATH="$W/site${PYTHONPATH:+:$PYTHONPATH}"
  echo "== call $n $(date -u +%FT%TZ) on $(hostname); $(nvidia-smi -L 2>/dev/null | head -1)"
  local carried="$STAGE/c$n"
  if [ -d "$carried" ]; then
    "${RUN[@]}" pieces stash "$carried" --into "$W/pieces" --join "$W/files" --install "$W/site" \
      --json "$OUT/c$n-stash.json" || echo "!! stash failed (see c$n-stash.json)"
    [ -d "$carried/rtx-toy" ] && [ ! -d "$W/rtx-toy" ] && cp -r "$carried/rtx-toy" "$W/rtx-toy"
  else
    echo "nothing carried ($carried missing): carry=[\"$carried\"]"
  fi

  if ! done_mark env; then
    "${RUN[@]}" env --json "$OUT/c$n-env.json" --work "$W/work" > /dev/null && mark env
    grep -E '"(name|driver_version|driver_cuda_version|compute_cap)"' "$OUT/c$n-env.json" | head -4
  fi
  if ! done_mark bg-started; then
    mark bg-started
    # exports first (CPU), then nothing else on the CPU side; the sanitizer meanwhile on the GPU
    bg prepare bash -c "for p in $PRESETS; do ${RUN[*]} prepare --preset \$p --work $W/work \
      --json $W/results/prepare-\$p.json && date > $W/done/prepared-\$p; done; date > $W/done/prepare"
    bg sanitize bash -c "${RUN[*]} sanitize --tools memcheck,racecheck,synccheck --tool-k racecheck='$RACE_K' \
      --timeout 150 --json $W/results/sanitize.json --log $W/results/sanitize.log; date > $W/done/sanitize"
    echo "background: exports ($PRESETS) and compute-sanitizer started"
  fi

  if have_ort_gpu; then
    for preset in $PRESETS; do
      done_mark "ort-$preset" && continue
      if ! done_mark sanitize; then  # the GPU to itself for timings
        wait_for sanitize 90 "$W/sanitize.pid" || {
          echo "sanitizer still running after 90 s: stopped (its report so far is kept)"
          kill -- -"$(cat "$W/sanitize.pid")" 2>/dev/null; sleep 2; mark sanitize; }
      fi
      if ! wait_for "prepared-$preset" 240 "$W/prepare.pid"; then  # stopped, not raced: ort-loop makes what is missing
        echo "export of $preset not done after 240 s: background exports stopped, ort-loop makes it"
        kill -- -"$(cat "$W/prepare.pid")" 2>/dev/null; sleep 2
      fi
      if [ "$preset" = church-256 ]; then precs=fp32,fp16,fp32-notf32; rep=10; else precs=fp32,fp16; rep=5; fi
      "${RUN[@]}" ort-loop --preset "$preset" --work "$W/work" --batch 1,4,8 --iters 5 --warmup 2 --repeat "$rep" \
        --precisions "$precs" --json "$OUT/ort-$preset.json"
      mark "ort-$preset"
      break                          # one preset per call: its results come back before the next one starts
    done
  else
    echo "onnxruntime-gpu not installed yet"
  fi

  if have_rtx && [ -d "$W/rtx-toy" ] && ! done_mark rtx; then
    "${RUN[@]}" rtx-probe "$W/rtx-toy" --json "$OUT/rtx-probe.json"; mark rtx
  fi

  collect
  local pending=()
  for preset in $PRESETS; do done_mark "ort-$preset" || pending+=("ort-$preset"); done
  done_mark rtx || pending+=(rtx-probe)
  done_mark sanitize || pending+=(sanitize)
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null | sed 's/^/gpu now: /'
  if [ ${#pending[@]} -eq 0 ]; then echo "ALL DONE"; else echo "pending: ${pending[*]}"; fi
  ls "$OUT"
}

case "${1:-}" in
  prepare) do_prepare ;;
  stage) do_stage ;;
  plan) do_plan ;;
  call) [ -n "${2:-}" ] || die "call N"; [ -n "${OUT:-}" ] || die "'call' runs on the device machine (\$OUT unset)"
        do_call "$2" 2>&1 | tee -a "$OUT/c$2.log" ;;
  clean) rm -rf "$STAGE"; echo "removed $STAGE" ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
