#!/usr/bin/env bash
# Every GPU figure of issue #10 in one device call (under 9.5 minutes), on the same card:
#   bench/run_gpu.sh [OUT]      (OUT: where the JSON lines go; default $OUT, else bench/results/new)
# plain generate and a plain LoRA step (baseline), the factory's own paths (bench/gpu_foley.py: the
# decoders, the chain on one clip, the factory over 32 clips, LoRA steps, most important first), then
# transformers' static cache + compile (baseline) in the time left; last, bench/targets.py's table of
# the issue's targets beside this call's baseline (targets.md). Each part has its own time limit, so
# one stuck part costs only its own slot. The files are named after the card (nvidia-smi). A second,
# short call for what a full one missed: ONLY=part,part (bench/gpu_run.py) on bench/gpu_foley.py.
# The lent machines lack most dependencies and have no network: pack them first with
# bench/device/pack_site.sh, then run(command='bench/run_gpu.sh "$OUT"', carry=[".devsite"]).
set -u
out=${1:-${OUT:-bench/results/new}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
devsite="not carried"
if [ -f .devsite/site.tar.xz ]; then
  devsite="unpacking failed"
  mkdir -p /tmp/site && tar -C /tmp/site -xJf .devsite/site.tar.xz && devsite="unpacked to /tmp/site" \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
# What the run used, in one line per package (a missing one shows here before any part fails on it).
python3 - >"$out/env.txt" 2>&1 <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "xgrammar", "av", "prefect", "datasets", "peft", "pyarrow", "v2t_foley"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "ok"))
    except Exception as error:
        print(name, "MISSING:", error)
PY
card=$( (nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo cpu) | head -1 | tr ' ' '-')
echo ".devsite: $devsite" >>"$out/env.txt"
date -u +%FT%TZ >>"$out/env.txt"
# Slots sized on an H100 (2026-11-27): the plain baseline's batches 1 and 32 take about 75 s there; the
# continuous decoder's first compile about 150 s of the foley part; the static cache + compile baseline
# never finished its compile within 100 s on either card, so it gets what time is left, if 45 s are.
BATCHES=1,32 timeout 100 python3 bench/baselines/gpu_videollava_baseline.py >"$out/$card-baseline-plain.jsonl" 2>"$out/baseline-plain.err"
BUDGET_S=${BUDGET_S:-360} timeout 420 python3 bench/gpu_foley.py >"$out/$card-foley.jsonl" 2>"$out/foley.err"
left=$((565 - SECONDS))
if ((left >= 45)); then
  timeout "$left" python3 bench/baselines/gpu_videollava_static_compile.py >"$out/$card-baseline-static-compile.jsonl" 2>"$out/static-compile.err"
else
  echo "static cache + compile baseline skipped: ${left} s left of the call's 565" >"$out/static-compile.err"
fi
python3 bench/targets.py "$out" >"$out/targets.md" 2>&1  # the issue's targets beside this call's baseline
tail -n 3 "$out"/*.err
cat "$out/targets.md"
