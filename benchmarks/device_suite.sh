#!/usr/bin/env bash
# The GPU device suite (v3): one call on a machine with one NVIDIA GPU, within BUDGET_S (470 s) by construction.
#
#   OUT=/some/folder bash benchmarks/device_suite.sh          # results under $OUT (then committed to docs/results/)
#   DRY_RUN=1 OUT=/tmp/suite bash benchmarks/device_suite.sh  # the same steps on CPU with tiny settings (CI runs it)
#   PLAN=1 bash benchmarks/device_suite.sh                    # the GPU run's steps (name, timeout, command); runs nothing
#
# It needs only torch, torchvision and this repository (no DALI, TensorRT or network). Each step has its own timeout,
# sized below from NVIDIA's published per-GPU rates; the timeouts add up to at most BUDGET_S - RESERVE_S - 10 s (the
# environment and the summary), checked before anything runs. RESERVE_S (default 0 s) is left for steps added later.
# Steps, most important first (a step cut by its timeout keeps what it measured: every sweep rewrites its files):
#   make-jpegs        an ImageNet-like JPEG folder (2,000 + 500 ~100 KB 500x375 JPEGs) made here
#   sample-data       `rn50 data sample`: the built-in digits sample
#   sample-model      `rn50 train` of the sample: the model whose logits the agreement figures compare
#   train-synthetic   rn50 bench train, 1 GPU, batch 256, channels-last, fp16 AMP and TF32, synthetic data, eager
#   train-pytorch-gpu the same on the JPEGs through the pytorch-gpu backend (nvJPEG batched decode), fp16
#   overhead          the trainer against a bare loop doing the same work (benchmarks/trainer_overhead.py)
#   infer             rn50 bench infer at batch 1, 8, 64, 256: eager fp16 and bf16 with CUDA graphs beside eager fp32,
#                     1 s timed per batch size and series, top-1 agreement on the sample's real val images
#   train-compile     rn50 bench train synthetic fp16 with --compile
#   gpu-tests         the `gpu`-marked tests but the slow ones (AOTInductor and torch.compile on CUDA)
#   mlperf-offline    rn50 bench mlperf, Offline, fp16 eager at batch 256 on the JPEGs' 500 val images: a reduced run
#   mlperf-singlestream  the same, SingleStream (both shorter than the rules: NOT COMPLIANT, as every output says)
# The two MLPerf steps need mlcommons-loadgen: a machine without it (and without network) installs it from
# wheels/ (`pip download mlcommons-loadgen --only-binary=:all: --python-version 3.X -d wheels`, carried with the
# tree), else the steps are skipped with that reason.
# Left out to fit the budget: bf16 and CPU-decode training, compiled and AOTInductor inference (README has the
# commands). $OUT gets summary.md (printed last), summary.json, suite.log and device-suite.tar.gz (results and logs).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device-suite-out}
PY=${PYTHON:-python3}
GPU_BUDGET=${BUDGET_S:-470}
DRY=${DRY_RUN:-0}
PLAN=${PLAN:-0}
RESERVE=${RESERVE_S:-0}
CORES=$(nproc 2>/dev/null || echo 4)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# Step timeouts. Rates published by NVIDIA (DeepLearningExamples, ResNet-50 v1.5, PyTorch): training 2,470 img/s
# (AMP) and 938 img/s (TF32) on one A100-80GB; inference 2,697 img/s on a V100 at batch 256 (AMP). An H100 is faster
# than both, so a step sized on them has room to spare. Start-up (process, CUDA context, cuDNN autotuning) and one
# Inductor compile of ResNet-50 are estimates: no GPU has run this suite yet.
AMP_IMG_S=2470
TF32_IMG_S=938
START_S=20
COMPILE_S=45
TRAIN_IMAGES=$(((5 + 20) * 256)) # warmup + timed iterations at batch 256
secs() { echo $((($1 * 2 + $2 - 1) / $2)); } # twice the time of N images at RATE img/s, rounded up
T_JPEGS=15
T_SAMPLE_DATA=15
T_SAMPLE_MODEL=35
T_TRAIN_SYNTH=$((START_S + $(secs $TRAIN_IMAGES $AMP_IMG_S) + $(secs $TRAIN_IMAGES $TF32_IMG_S)))
T_TRAIN_GPU=$((START_S + $(secs $TRAIN_IMAGES $AMP_IMG_S)))
T_OVERHEAD=$((START_S + $(secs $((2 * 3 * (3 + 10) * 256)) $AMP_IMG_S))) # 2 loops x 3 rounds x (3 + 10) iterations
# 3 series x 4 batch sizes x (1 s timed + 10 warmup iterations) + CUDA-graph captures and agreement (15 s)
T_INFER=$((START_S + 15 + 3 * 4 + $(secs $((3 * 10 * (1 + 8 + 64 + 256))) $AMP_IMG_S)))
T_TRAIN_COMPILE=$((START_S + 2 * COMPILE_S + $(secs $TRAIN_IMAGES $AMP_IMG_S))) # forward and backward graphs
T_GPU_TESTS=70
# LoadGen's query lasts the minimum duration (Offline: up to 1.65x it, the headroom bench mlperf plans with); the
# calibration calls (a few batches) and the 500 JPEGs decoded and resized once on the host's cores fit in START_S
MLPERF_OFFLINE_S=5
MLPERF_SINGLE_S=2
T_MLPERF_OFFLINE=$((START_S + (MLPERF_OFFLINE_S * 165 + 99) / 100))
T_MLPERF_SINGLE=$((START_S + MLPERF_SINGLE_S))
PLANNED=$((T_JPEGS + T_SAMPLE_DATA + T_SAMPLE_MODEL + T_TRAIN_SYNTH + T_TRAIN_GPU + T_OVERHEAD + T_INFER \
  + T_TRAIN_COMPILE + T_GPU_TESTS + T_MLPERF_OFFLINE + T_MLPERF_SINGLE))
if [ "$PLANNED" -gt $((GPU_BUDGET - RESERVE - 10)) ]; then
  echo "device suite: the steps' timeouts add up to $PLANNED s, over the $GPU_BUDGET s budget less $RESERVE s" >&2
  exit 2
fi
BUDGET=$GPU_BUDGET
[ "$DRY" = 1 ] && BUDGET=1800 # the dry run checks the plumbing on a CPU; every step gets 300 s there

if [ "$DRY" = 1 ]; then
  JPEGS=(--train 24 --val 8 --classes 4 --workers 2)
  # the tiny JPEG folder stands in for the sample (a sample epoch takes minutes on 2 busy cores)
  SAMPLE_TRAIN=(--device cpu --epochs 1 --warmup 0 --workers 1 --num-classes 4 --batch-size 4)
  TRAIN=(--device cpu --gpus 1 --no-sweep --rounds 1 --batch 2 --warmup 1 --iters 2 --image-size 32 --num-classes 4)
  SYNTH_PRECISION=fp32
  HALF=fp32
  DATA_WORKERS=1
  INFER=(--device cpu --batch 1,2 --image-size 32 --warmup 1 --iters 2)
  INFER_MAIN=(--backend eager,torchscript --precision fp32)
  OVERHEAD=(--device cpu --batch-size 2 --image-size 32 --iters 2 --warmup 1 --rounds 2)
  GPU_TESTS=(tests/data/test_gpu_decode.py)
  MLPERF=(--device cpu --precision fp32 --image-size 32 --sample-count 8)
  MLPERF_OFFLINE=(--batch 2 --min-duration 1 --min-query-count 16)
  MLPERF_SINGLE=(--min-duration 1 --min-query-count 64) # LoadGen's early stopping needs 64 queries at p90, loaded or not
else
  JPEGS=(--train 2000 --val 500 --classes 10 --workers "$CORES")
  SAMPLE_TRAIN=(--device cuda)
  TRAIN=(--device cuda --gpus 1 --no-sweep --rounds 1 --batch 256 --warmup 5 --iters 20 --num-classes 1000)
  SYNTH_PRECISION=fp16,tf32 # one mixed and one full precision per launch
  HALF=fp16
  DATA_WORKERS=$((CORES > 2 ? CORES - 1 : 1))
  INFER=(--device cuda --batch 1,8,64,256 --image-size 224 --warmup 10 --min-time 1 --cuda-graphs)
  INFER_MAIN=(--backend eager --precision fp16,bf16)
  OVERHEAD=(--device cuda --recipe dgxa100-fp16-90 --batch-size 256 --image-size 224 --iters 10 --warmup 3 --rounds 3)
  GPU_TESTS=(tests)
  MLPERF=(--device cuda --precision fp16 --image-size 224 --sample-count 500)
  MLPERF_OFFLINE=(--batch 256 --min-duration "$MLPERF_OFFLINE_S" --min-query-count 4096)
  MLPERF_SINGLE=(--min-duration "$MLPERF_SINGLE_S" --min-query-count 256)
fi

if [ "$PLAN" = 1 ]; then
  WORK=${TMPDIR:-/tmp}/rn50-suite.plan
else
  mkdir -p "$OUT"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/rn50-suite.XXXXXX")
  mkdir -p "$WORK/logs" "$WORK/results"
  STEPS="$WORK/steps.tsv"
  : >"$STEPS"
  exec > >(tee -a "$OUT/suite.log") 2>&1
fi
START=$(date +%s)

elapsed() { echo $(($(date +%s) - START)); }

pack() { tar -czf "$OUT/device-suite.tar.gz" -C "$WORK" logs results steps.tsv 2>/dev/null || true; }

# step NAME MAX_SECONDS CMD...: run CMD with a timeout of min(MAX, what is left of the budget). PLAN=1 prints
# NAME, MAX and CMD's words (shell-quoted), tab-separated, instead.
step() {
  local name=$1 max=$2
  shift 2
  if [ "$PLAN" = 1 ]; then
    printf '%s\t%s' "$name" "$max"
    printf '\t%q' "$@"
    printf '\n'
    return
  fi
  [ "$DRY" = 1 ] && max=300
  local left=$((BUDGET - $(elapsed) - 10)) limit=$max t0 rc status
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then
    printf '%s\tskipped\t0\tno time left in the %s s budget\n' "$name" "$BUDGET" >>"$STEPS"
    echo "== $name: skipped (budget spent)"
    return
  fi
  echo "== $name (timeout ${limit}s): $*"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="timeout (${limit}s)" ;;
    *) status="exit $rc" ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" "$(tail -n 1 "$WORK/logs/$name.log" | cut -c1-150)" >>"$STEPS"
  echo "   $name: $status in $(($(date +%s) - t0)) s"
  pack
}

# skip NAME REASON: a step this run leaves out, with the reason the summary gives.
skip() { [ "$PLAN" = 1 ] || printf '%s\tskipped\t0\t%s\n' "$1" "$2" >>"$STEPS"; }

[ "$PLAN" = 1 ] || {
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.limit,temperature.gpu \
    --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)' || true
  uptime
} >"$WORK/logs/env.log" 2>&1
[ "$PLAN" = 1 ] || cat "$WORK/logs/env.log"

JPEG_DIR=$WORK/jpegs
SAMPLE=$WORK/sample
[ "$DRY" = 1 ] && SAMPLE=$JPEG_DIR
CKPT=$WORK/sample-run/checkpoints/best.pth
RN50=("$PY" -m rn50)

step make-jpegs "$T_JPEGS" "$PY" benchmarks/make_jpegs.py "$JPEG_DIR" "${JPEGS[@]}"
if [ "$DRY" = 1 ]; then
  skip sample-data "dry run: the JPEG folder stands in for the sample"
else
  step sample-data "$T_SAMPLE_DATA" "${RN50[@]}" data sample "$SAMPLE"
fi
step sample-model "$T_SAMPLE_MODEL" "${RN50[@]}" train "$SAMPLE" --recipe sample-cpu --no-progress \
  --out "$WORK/sample-run" "${SAMPLE_TRAIN[@]}"
step train-synthetic "$T_TRAIN_SYNTH" "${RN50[@]}" bench train "${TRAIN[@]}" --precision "$SYNTH_PRECISION" \
  --out "$WORK/results/train-synthetic"
step train-pytorch-gpu "$T_TRAIN_GPU" "${RN50[@]}" bench train "${TRAIN[@]}" --precision "$HALF" --data "$JPEG_DIR" \
  --backend pytorch-gpu --workers "$DATA_WORKERS" --out "$WORK/results/train-pytorch-gpu"
step overhead "$T_OVERHEAD" "$PY" benchmarks/trainer_overhead.py "${OVERHEAD[@]}" --json "$WORK/results/overhead.json"
step infer "$T_INFER" "${RN50[@]}" bench infer "$CKPT" "${INFER[@]}" "${INFER_MAIN[@]}" --images "$SAMPLE" \
  --out "$WORK/results/infer"
if [ "$DRY" = 1 ]; then # torch.compile takes minutes on 2 CPU cores; without it the step is train-synthetic again
  skip train-compile "dry run: torch.compile is left to the GPU run"
else
  step train-compile "$T_TRAIN_COMPILE" "${RN50[@]}" bench train "${TRAIN[@]}" --precision "$HALF" --compile \
    --out "$WORK/results/train-compile"
fi
step gpu-tests "$T_GPU_TESTS" "$PY" -m pytest -q -m "gpu and not slow" -p no:cacheprovider "${GPU_TESTS[@]}"
LOADGEN=1
if [ "$PLAN" != 1 ] && ! "$PY" -c "import mlperf_loadgen" 2>/dev/null; then
  [ -d "$ROOT/wheels" ] && "$PY" -m pip install -q --no-index --find-links "$ROOT/wheels" mlcommons-loadgen >/dev/null 2>&1
  "$PY" -c "import mlperf_loadgen" 2>/dev/null || LOADGEN=0
fi
for scenario in offline singlestream; do
  if [ "$LOADGEN" = 0 ]; then
    skip "mlperf-$scenario" "mlcommons-loadgen is not installed here and wheels/ has none for this Python"
    continue
  fi
  if [ "$scenario" = offline ]; then limit=$T_MLPERF_OFFLINE args=("${MLPERF_OFFLINE[@]}"); else
    limit=$T_MLPERF_SINGLE args=("${MLPERF_SINGLE[@]}")
  fi
  step "mlperf-$scenario" "$limit" "${RN50[@]}" bench mlperf "$CKPT" "$JPEG_DIR" --scenario "$scenario" "${MLPERF[@]}" \
    "${args[@]}" --out "$WORK/results/mlperf"
done
if [ "$PLAN" = 1 ]; then
  printf 'planned\t%s\tof %s s, %s s reserved\n' "$PLANNED" "$GPU_BUDGET" "$RESERVE"
  exit 0
fi
pack

"$PY" benchmarks/device_summary.py "$WORK" "$OUT" "$(elapsed)" "$DRY"
cp "$WORK/logs/env.log" "$OUT/env.log" 2>/dev/null || true
rm -rf "$WORK"
