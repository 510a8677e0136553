#!/usr/bin/env bash
# The CPU benchmark set behind benchmarks/results/cpu-<date>*.json: paper profile, batch 8.
#   default          all sections, the trainer as it trains, in the default precision (auto: bf16 where
#                    the CPU has AVX-512 BF16 or AMX, else float32) (-> cpu-<date>.json and .txt)
#   fp32             the default step in float32
#   baseline         the straightforward step in float32 (stock Keras layers and Adam, two D calls, no HR cache)
#   baseline-cache   baseline + HR VGG feature cache
#   bf16             mixed_bfloat16 (AMX/AVX512-BF16 on CPUs that have it; not a float32 figure)
#   xla              XLA on (slower on CPU: its convolutions are not oneDNN's)
#   ablation         benchmarks/ablation.py: the speed-ups one by one, round-robin in one process
# On a machine shared with other jobs, run it when the load is low and compare ratios, not times.
#   benchmarks/cpu_benchmark.sh                  # everything (~10 minutes on 2 cores)
#   VARIANTS="default bf16" benchmarks/cpu_benchmark.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
BATCH="${BATCH:-8}"
STEPS="${STEPS:-5}"
VARIANTS="${VARIANTS:-default fp32 baseline baseline-cache bf16 xla ablation}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
stamp="$(date +%Y-%m-%d)"
out=benchmarks/results
mkdir -p "$out"
for variant in $VARIANTS; do
  echo "== $variant (load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?))"
  case "$variant" in
    default)        "$PY" -m upsampler.cli benchmark --profile paper --batch-size "$BATCH" --steps "$STEPS" --output "$out/cpu-$stamp.json" ;;
    fp32)           "$PY" -m upsampler.cli benchmark --profile paper --batch-size "$BATCH" --steps "$STEPS" --precision float32 --skip inference,fid,pipeline --output "$out/cpu-$stamp-fp32.json" ;;
    baseline)       "$PY" -m upsampler.cli benchmark --profile paper --batch-size "$BATCH" --steps "$STEPS" --precision float32 --baseline --skip inference,fid,pipeline --output "$out/cpu-$stamp-baseline.json" ;;
    baseline-cache) "$PY" -m upsampler.cli benchmark --profile paper --batch-size "$BATCH" --steps "$STEPS" --precision float32 --baseline --hr-cache auto --skip inference,fid,pipeline --output "$out/cpu-$stamp-baseline-cache.json" ;;
    bf16)           "$PY" -m upsampler.cli benchmark --profile paper --batch-size "$BATCH" --steps "$STEPS" --precision mixed_bfloat16 --skip inference,fid,pipeline --output "$out/cpu-$stamp-bf16.json" ;;
    xla)            "$PY" -m upsampler.cli benchmark --profile paper --batch-size "$BATCH" --steps "$STEPS" --xla on --skip inference,fid,pipeline --output "$out/cpu-$stamp-xla.json" ;;
    ablation)       "$PY" benchmarks/ablation.py --batch-size "$BATCH" --rounds "$STEPS" --output "$out/cpu-$stamp-ablation.json" | tee "$out/cpu-$stamp-ablation.txt" ;;
    *) echo "cpu_benchmark: unknown variant $variant" >&2; exit 2 ;;
  esac
done
