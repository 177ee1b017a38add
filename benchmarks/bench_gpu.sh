#!/usr/bin/env bash
# The GPU figures in one run, most important first, each step bounded in time:
#   1. training throughput of MobileNetV2 224 (plain arrays vs the kit's pipeline),
#   2. `leukedge train` MobileNetV2 224 from scratch: report.json's train_img_per_s,
#   3. `leukedge pretrain` (VICReg) MobileNetV2 224: img/s,
#   4. the few-label comparison (VICReg + fine-tune vs random init) for MobileNetV2 at 224 px,
#      with 150 VICReg epochs of 1,600 fields (3,750 steps: MobileNetV2 from random weights
#      needs thousands of steps before its two views' features correlate; docs/trainer.md).
# Keras runs on JAX when TensorFlow is absent (a JAX-only GPU box). Logs and reports go to OUT.
#
#   benchmarks/bench_gpu.sh OUT [STEP...]             # on a GPU box; steps: bench train pretrain fewlabels
#   benchmarks/bench_gpu.sh OUT --rehearse [STEP...]  # tiny sizes: checks the steps end to end on a CPU
set -u
out=${1:?usage: benchmarks/bench_gpu.sh OUT [--rehearse] [STEP...]}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
py=${PYTHON:-python3}
"$py" -c "import tensorflow" 2>/dev/null || export KERAS_BACKEND=jax
lk=("$py" -c 'import sys; from leukedge.cli import main; sys.exit(main())')  # the console script, uninstalled
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Identical models (the few-label runs, the two bench modes) compile once, not once per run.
export JAX_COMPILATION_CACHE_DIR=$work/jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0

shift
rehearse=no
if [ "${1:-}" = --rehearse ]; then rehearse=yes; shift; fi
steps=" ${*:-bench train pretrain fewlabels} "
for s in $steps; do
  case $s in bench | train | pretrain | fewlabels) ;; *) echo "bench_gpu.sh: unknown step '$s' (bench, train, pretrain, fewlabels)" >&2; exit 2 ;; esac
done
wanted() { [[ $steps == *" $1 "* ]]; }
if [ $rehearse = yes ]; then
  size=64 per_class=24 batch=16 epochs=3 pre_epochs=2 ssl_per_class=12 ssl_labels=4 ssl_pre=2 ssl_ft=2
  bench=(--img-size 64 --batch 8 --steps 3 --warmup 2 --threads 2)
else
  size=224 per_class=800 batch=256 epochs=8 pre_epochs=6 ssl_per_class=400 ssl_labels=10 ssl_pre=150 ssl_ft=20
  bench=(--steps 40 --warmup 8)
fi

step() {  # step NAME SECONDS COMMAND...: run, log to OUT/NAME.log, say how long it took
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  tail -n 12 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
}


nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
if wanted train || wanted pretrain; then
  step synth 120 "${lk[@]}" synth --out "$work/data" --per-class "$per_class" --size "$size" --no-progress &
fi
if wanted bench; then
  step bench_train_gpu 180 "$py" benchmarks/bench_train_gpu.py --mixed-precision "${bench[@]}"
fi
wait
if wanted train; then
  step train 240 "${lk[@]}" train --data "$work/data" --arch mobilenetv2 --out "$work/run" --weights none \
    --img-size "$size" --batch "$batch" --epochs "$epochs" --mixed-precision --quiet
  cp "$work/run/report.json" "$out/train_report.json" 2>/dev/null
  cp "$work/run/history.json" "$out/train_history.json" 2>/dev/null
  "$py" - "$out/train_report.json" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError:
    sys.exit("train: no report.json")
print(f"leukedge train: {r['train_img_per_s']} img/s in steady epochs, {r['epochs']} epochs, wall {r['wall_s']} s, "
      f"test accuracy {r['accuracy']:.3f} (colour baseline {r['baseline_accuracy']:.3f}), "
      f"{r['versions'].get('keras_backend')}")
EOF
fi
if wanted pretrain; then
  step pretrain 180 "${lk[@]}" pretrain --data "$work/data" --arch mobilenetv2 --out "$work/pre" \
    --img-size "$size" --epochs "$pre_epochs" --batch "$batch" --quiet
  cp "$work/pre/pretrain_report.json" "$out/pretrain_report.json" 2>/dev/null
fi
if wanted fewlabels; then
  step fewlabels 300 "$py" benchmarks/bench_pretrain.py --arch mobilenetv2 --size "$size" --look all \
    --per-class "$ssl_per_class" --labels "$ssl_labels" --pretrain-epochs "$ssl_pre" --epochs "$ssl_ft" \
    --seeds 2 --out "$work/ssl"
fi
