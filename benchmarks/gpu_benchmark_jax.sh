#!/usr/bin/env bash
# GPU benchmark of the SRGAN training step on Keras with JAX, for GPU machines without TensorFlow.
# The paper profile's networks (16-block generator, pooled discriminator head, VGG19 content loss
# to block5_conv4), one jitted adversarial step (D then G, Adam), synthetic data, after warm-up:
#
#   bf16-96       96-px HR crops (24-px LR), batch 16, mixed_bfloat16   (the SRGAN paper's setting)
#   fp32-96       the same in float32
#   bf16-96-b128  96-px crops, batch 128, mixed_bfloat16
#   bf16-176      whole 176-px images (the study's 44 -> 176), batch 16, mixed_bfloat16, Flatten head
#
# Each variant is one `upsampler benchmark` process (KERAS_BACKEND=jax) writing
# benchmarks/results/gpu-<device>-<date>-jax-<variant>.json (+ .txt); a summary table follows.
#
#   benchmarks/gpu_benchmark_jax.sh                       # all variants, 20 timed steps each
#   STEPS=50 VARIANTS="bf16-96" benchmarks/gpu_benchmark_jax.sh
#   ALLOW_CPU=1 STEPS=1 WARMUP=0 VARIANTS=fp32-96 benchmarks/gpu_benchmark_jax.sh   # try the command on a CPU
#
# Needs JAX with a GPU (pip install -e '.[jax]' after JAX's CUDA build) and refuses to run without
# one unless ALLOW_CPU=1 (files are then named cpu-..., never gpu-...). The VGG19 is untrained:
# no download; the weights change the values, not the speed. About a minute per variant on an H200.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
STEPS="${STEPS:-20}"
WARMUP="${WARMUP:-3}"
VARIANTS="${VARIANTS:-bf16-96 fp32-96 bf16-96-b128 bf16-176}"
export KERAS_BACKEND=jax

device="$("$PY" -c 'import jax; g=[d for d in jax.devices() if d.platform == "gpu"]; print(g[0].device_kind if g else "")')"
if [[ -z "$device" ]]; then
  if [[ "${ALLOW_CPU:-0}" != "1" ]]; then
    echo "gpu_benchmark_jax: JAX sees no GPU here (python: $PY); nothing measured (ALLOW_CPU=1 to try it on a CPU)." >&2
    exit 1
  fi
  kind=cpu
  device="$("$PY" -c 'from upsampler.utils.hardware import cpu_model; print(cpu_model())')"
else
  kind=gpu
fi
slug="$(echo "$device" | tr '[:upper:]' '[:lower:]' | sed -e 's/nvidia//' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')"
stamp="$(date +%Y-%m-%d)"
outdir=benchmarks/results
mkdir -p "$outdir"
echo "$kind: $device  ->  $outdir/$kind-$slug-$stamp-jax-<variant>.json"

for variant in $VARIANTS; do
  args=(benchmark --profile paper --steps "$STEPS" --warmup "$WARMUP" --json)
  case "$variant" in
    bf16-96)      args+=(--batch-size 16 --precision mixed_bfloat16 --set data.train_crop=96) ;;
    fp32-96)      args+=(--batch-size 16 --precision float32 --set data.train_crop=96) ;;
    bf16-96-b128) args+=(--batch-size 128 --precision mixed_bfloat16 --set data.train_crop=96) ;;
    bf16-176)     args+=(--batch-size 16 --precision mixed_bfloat16 --set model.disc_head=flatten) ;;
    *) echo "gpu_benchmark_jax: unknown variant $variant" >&2; exit 2 ;;
  esac
  # The other sections once, with the first variant (they do not depend on it).
  [[ "$variant" == "${VARIANTS%% *}" ]] || args+=(--skip inference,fid,pipeline)
  out="$outdir/$kind-$slug-$stamp-jax-$variant.json"
  echo "== $variant: upsampler ${args[*]}"
  if ! "$PY" -m upsampler.cli "${args[@]}" --output "$out" > /dev/null; then
    echo "gpu_benchmark_jax: variant $variant failed (see the messages above); continuing" >&2
  fi
done

"$PY" - "$outdir" "$kind-$slug-$stamp-jax" $VARIANTS <<'PYEOF'
import json, sys
from pathlib import Path
outdir, prefix, *variants = sys.argv[1:]
print(f"\n{'variant':<13} {'backend':<11} {'precision':<15} {'batch':>5} {'crop':>5} {'step ms':>8} {'img/s':>8} "
      f"{'MSE img/s':>10} {'useful GF/s':>12} {'matmul GF/s':>12} {'ratio':>6}")
for v in variants:
    p = Path(outdir) / f"{prefix}-{v}.json"
    if not p.exists():
        print(f"{v:<13} (no result)")
        continue
    r = json.loads(p.read_text())
    g = lambda k, f="{:.4g}", m=1.0: f.format(r[k] * m) if isinstance(r.get(k), (int, float)) else "-"
    print(f"{v:<13} {r.get('backend', '?') + ' ' + str(r.get('backend_version', '')):<11} {r.get('precision', ''):<15} "
          f"{r.get('batch_size', ''):>5} {r.get('train_hr_size', ''):>5} {g('train_step_seconds', m=1e3):>8} "
          f"{g('train_images_per_s'):>8} {g('pretrain_images_per_s'):>10} {g('useful_gflops'):>12} "
          f"{g('matmul_gflops'):>12} {g('ratio_to_matmul'):>6}")
print("\nratio = useful GFLOP/s / jnp.matmul GFLOP/s on the same device in the step's compute dtype, measured between "
      "the steps. img/s: adversarial step (G and D updates); MSE img/s: the generator-only pre-training step.")
PYEOF
