#!/usr/bin/env bash
# Every GPU figure of issue #10 in one device call (under 9 minutes), on the same card:
#   bench/run_gpu.sh [OUT]      (OUT: where the JSON lines go; default $OUT, else bench/results/new)
# plain generate and a plain LoRA step (baseline), the factory's own paths (bench/gpu_foley.py: the
# three decoders, the chain on one clip, the factory over 32 clips, LoRA steps), then transformers'
# static cache + compile (baseline). Each part has its own time limit, so one stuck part costs only
# its own slot. Name the card's files after it: `nvidia-smi --query-gpu=name --format=csv,noheader`.
set -u
out=${1:-${OUT:-bench/results/new}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.
card=$( (nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo cpu) | head -1 | tr ' ' '-')
date -u +%FT%TZ >"$out/when.txt"
timeout 90 python3 bench/baselines/gpu_videollava_baseline.py >"$out/$card-baseline-plain.jsonl" 2>"$out/baseline-plain.err"
BUDGET_S=${BUDGET_S:-270} timeout 330 python3 bench/gpu_foley.py >"$out/$card-foley.jsonl" 2>"$out/foley.err"
timeout 100 python3 bench/baselines/gpu_videollava_static_compile.py >"$out/$card-baseline-static-compile.jsonl" 2>"$out/static-compile.err"
tail -n 3 "$out"/*.err
