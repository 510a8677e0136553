#!/usr/bin/env bash
# GPU benchmark of the SRGAN training step: paper profile (44 -> 176, 16 blocks, VGG54), global
# batch 32, float32 and the default precision (train.precision=auto: mixed_bfloat16 from Ampere
# on, mixed_float16 + loss scaling on older GPUs), XLA off and on, plus the straightforward
# baseline step in float32. One process per variant (op determinism, XLA and the dtype
# policy are process-wide). Writes one JSON (and a .txt table) per variant to
# benchmarks/results/gpu-<device>-<date>-<variant>.json, then prints a summary.
#
#   benchmarks/gpu_benchmark.sh                 # all variants, 10 timed steps each
#   STEPS=20 benchmarks/gpu_benchmark.sh        # more repetitions
#   VARIANTS="fp32-xla auto-xla fp16-xla" benchmarks/gpu_benchmark.sh
#   PYTHON=python3 benchmarks/gpu_benchmark.sh  # another interpreter (default: .venv/bin/python, else python3)
#   EXTRA="--strategy mirrored" benchmarks/gpu_benchmark.sh   # all local GPUs, global batch 32
#   EXTRA="--nondeterministic" ...   # if an XLA variant stops on a missing deterministic GPU kernel
#
# Needs a GPU build of TensorFlow (pip install -e '.[gpu]'); refuses to run without a GPU so that
# a CPU number is never filed as a GPU one. The VGG19 is untrained (no download; the weights
# change the values, not the speed). Budget: about 1-2 minutes per variant on an A100/H100.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-2}"
BATCH="${BATCH:-32}"
VARIANTS="${VARIANTS:-baseline fp32 fp32-xla auto auto-xla}"
EXTRA="${EXTRA:-}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

if ! "$PY" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices("GPU") else 1)' 2>/dev/null; then
  echo "gpu_benchmark: TensorFlow sees no GPU here (python: $PY); nothing measured." >&2
  exit 1
fi
device="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || true)"
[[ -n "$device" ]] || device="$("$PY" -c 'import tensorflow as tf; g=tf.config.list_physical_devices("GPU")[0]; print(tf.config.experimental.get_device_details(g).get("device_name", "gpu"))')"
slug="$(echo "$device" | tr '[:upper:]' '[:lower:]' | sed -e 's/nvidia//' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')"
stamp="$(date +%Y-%m-%d)"
outdir=benchmarks/results
mkdir -p "$outdir"
echo "GPU: $device  ->  $outdir/gpu-$slug-$stamp-<variant>.json"

for variant in $VARIANTS; do
  args=(benchmark --profile paper --batch-size "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --json)
  case "$variant" in
    baseline)  args+=(--baseline --precision float32 --xla off) ;;
    fp32)      args+=(--precision float32 --xla off) ;;
    fp32-xla)  args+=(--precision float32 --xla on) ;;
    auto)      args+=(--precision auto --xla off) ;;
    auto-xla)  args+=(--precision auto --xla on) ;;
    fp16-xla)  args+=(--precision mixed_float16 --xla on) ;;
    *) echo "gpu_benchmark: unknown variant $variant" >&2; exit 2 ;;
  esac
  # Sections other than the training step only once (they do not depend on the variant).
  [[ "$variant" == "fp32" ]] || args+=(--skip inference,fid,pipeline)
  out="$outdir/gpu-$slug-$stamp-$variant.json"
  echo "== $variant: upsampler ${args[*]} $EXTRA"
  # shellcheck disable=SC2086
  if ! "$PY" -m upsampler.cli "${args[@]}" $EXTRA --output "$out" > /dev/null; then
    echo "gpu_benchmark: variant $variant failed (see the messages above); continuing" >&2
  fi
done

"$PY" - "$outdir" "$slug" "$stamp" $VARIANTS <<'PYEOF'
import json, sys
from pathlib import Path
outdir, slug, stamp, *variants = sys.argv[1:]
print(f"\n{'variant':<10} {'precision':<15} {'XLA':<4} {'step s':>8} {'img/s':>8} {'useful GF/s':>12} {'matmul GF/s':>12} {'ratio':>6} {'pipeline img/s':>15}")
for v in variants:
    p = Path(outdir) / f"gpu-{slug}-{stamp}-{v}.json"
    if not p.exists():
        print(f"{v:<10} (no result)")
        continue
    r = json.loads(p.read_text())
    g = lambda k, f="{:.4g}": f.format(r[k]) if isinstance(r.get(k), (int, float)) else "-"
    print(f"{v:<10} {r.get('precision',''):<15} {'on' if r.get('xla') else 'off':<4} {g('train_step_seconds'):>8} "
          f"{g('train_images_per_s'):>8} {g('useful_gflops'):>12} {g('matmul_gflops'):>12} "
          f"{g('ratio_to_matmul'):>6} {g('pipeline_images_per_s'):>15}")
print("\nratio = useful GFLOP/s / tf.matmul GFLOP/s on the same GPU in the step's compute dtype, measured between "
      "the steps (float32 uses TF32 tensor cores on Ampere+ unless disabled).")
PYEOF
