#!/usr/bin/env bash
# The GPU device suite (v2): one call on a machine with one NVIDIA GPU, at most 8 minutes on an H100.
#
#   OUT=/some/folder bash benchmarks/device_suite.sh          # results under $OUT (then committed to docs/results/)
#   DRY_RUN=1 OUT=/tmp/suite bash benchmarks/device_suite.sh  # the same steps on CPU with tiny settings (CI runs it)
#
# It needs only torch, torchvision and this repository (no DALI, TensorRT or network). Steps, most important first,
# each under its own timeout inside one overall budget (BUDGET_S, default 470 s); a step that would start with less
# than 20 s left is skipped and says so:
#   make-jpegs        an ImageNet-like JPEG folder (3,000 + 500 ~100 KB 500x375 JPEGs) made here
#   sample-model      `rn50 train` of the built-in sample: the model whose logits the agreement figures compare
#   train-synthetic   rn50 bench train, 1 GPU, batch 256, channels-last, fp16 AMP and bf16, synthetic data, eager
#   train-pytorch-gpu the same on the JPEGs through the pytorch-gpu backend (nvJPEG batched decode), fp16
#   train-pytorch     the same through the pytorch backend (CPU decode in all cores' workers), fp16
#   gpu-tests         the `gpu`-marked tests
#   infer             rn50 bench infer at batch 1, 8, 32, 128, 256: eager fp16, compile fp16 and bf16 with CUDA
#                     graphs, with top-1 agreement against eager fp32 on the sample's real val images
#   train-compile     rn50 bench train synthetic fp16 with --compile
#   overhead          the trainer against a bare loop doing the same work (benchmarks/trainer_overhead.py)
#   infer-aoti        rn50 bench infer, AOTInductor fp16, same batches
# Every sweep rewrites its files after each series, so a step cut by its timeout keeps what it measured.
# $OUT gets summary.md (printed last), summary.json, suite.log and device-suite.tar.gz (every result and log).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device-suite-out}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-470}
DRY=${DRY_RUN:-0}
CORES=$(nproc 2>/dev/null || echo 4)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rn50-suite.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/results"
START=$(date +%s)
STEPS="$WORK/steps.tsv"
: >"$STEPS"
exec > >(tee -a "$OUT/suite.log") 2>&1

if [ "$DRY" = 1 ]; then
  JPEGS=(--train 24 --val 8 --classes 4 --workers 2)
  # the tiny JPEG folder stands in for the sample (a sample epoch takes minutes on 2 busy cores)
  SAMPLE_TRAIN=(--device cpu --epochs 1 --warmup 0 --workers 1 --num-classes 4 --batch-size 4)
  TRAIN=(--device cpu --gpus 1 --no-sweep --rounds 1 --batch 2 --warmup 1 --iters 2 --image-size 32 --num-classes 4)
  MIXED=fp32
  HALF=fp32
  DATA_WORKERS=1
  INFER=(--device cpu --batch 1,2 --image-size 32 --warmup 1 --iters 2)
  INFER_MAIN=(--backend eager,torchscript --precision fp32)
  OVERHEAD=(--device cpu --batch-size 2 --image-size 32 --iters 2 --warmup 1 --rounds 2)
  GPU_TESTS=(tests/data/test_gpu_decode.py)
else
  JPEGS=(--train 3000 --val 500 --classes 10 --workers "$CORES")
  SAMPLE_TRAIN=(--device cuda)
  TRAIN=(--device cuda --gpus 1 --no-sweep --rounds 1 --batch 256 --warmup 10 --iters 30 --num-classes 1000)
  MIXED=fp16,bf16
  HALF=fp16
  DATA_WORKERS=$((CORES > 2 ? CORES - 1 : 1))
  INFER=(--device cuda --batch 1,8,32,128,256 --image-size 224 --warmup 10 --iters 30 --cuda-graphs)
  INFER_MAIN=(--backend eager,compile --precision fp16,bf16)
  OVERHEAD=(--device cuda --recipe dgxa100-fp16-90 --batch-size 256 --image-size 224 --iters 10 --warmup 5 --rounds 5)
  GPU_TESTS=(tests)
fi

elapsed() { echo $(($(date +%s) - START)); }

pack() { tar -czf "$OUT/device-suite.tar.gz" -C "$WORK" logs results steps.tsv 2>/dev/null || true; }

# step NAME MAX_SECONDS CMD...: run CMD with a timeout of min(MAX, what is left of the budget).
step() {
  local name=$1 max=$2
  shift 2
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

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.limit,temperature.gpu \
    --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)' || true
  uptime
} >"$WORK/logs/env.log" 2>&1
cat "$WORK/logs/env.log"

JPEG_DIR=$WORK/jpegs
SAMPLE=$WORK/sample
[ "$DRY" = 1 ] && SAMPLE=$JPEG_DIR
CKPT=$WORK/sample-run/checkpoints/best.pth
RN50=("$PY" -m rn50)

step make-jpegs 60 "$PY" benchmarks/make_jpegs.py "$JPEG_DIR" "${JPEGS[@]}"
step sample-model 90 bash -c "{ [ -d \"$SAMPLE\" ] || \"$PY\" -m rn50 data sample \"$SAMPLE\"; } && \"$PY\" -m rn50 \
  train \"$SAMPLE\" --recipe sample-cpu --no-progress --out \"$WORK/sample-run\" ${SAMPLE_TRAIN[*]}"
step train-synthetic 90 "${RN50[@]}" bench train "${TRAIN[@]}" --precision "$MIXED" \
  --out "$WORK/results/train-synthetic"
step train-pytorch-gpu 60 "${RN50[@]}" bench train "${TRAIN[@]}" --precision "$HALF" --data "$JPEG_DIR" \
  --backend pytorch-gpu --workers "$DATA_WORKERS" --out "$WORK/results/train-pytorch-gpu"
step train-pytorch 60 "${RN50[@]}" bench train "${TRAIN[@]}" --precision "$HALF" --data "$JPEG_DIR" \
  --backend pytorch --workers "$DATA_WORKERS" --out "$WORK/results/train-pytorch"
step gpu-tests 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider "${GPU_TESTS[@]}"
step infer 130 "${RN50[@]}" bench infer "$CKPT" "${INFER[@]}" "${INFER_MAIN[@]}" --images "$SAMPLE" \
  --out "$WORK/results/infer"
if [ "$DRY" = 1 ]; then  # torch.compile takes minutes on 2 CPU cores; without it the step is train-synthetic again
  printf 'train-compile\tskipped\t0\tdry run: torch.compile is left to the GPU run\n' >>"$STEPS"
else
  step train-compile 100 "${RN50[@]}" bench train "${TRAIN[@]}" --precision "$HALF" --compile \
    --out "$WORK/results/train-compile"
fi
step overhead 60 "$PY" benchmarks/trainer_overhead.py "${OVERHEAD[@]}" --json "$WORK/results/overhead.json"
if [ "$DRY" = 1 ]; then  # AOTInductor compiles for minutes on 2 CPU cores (tests/export covers it on CPU)
  printf 'infer-aoti\tskipped\t0\tdry run: AOTInductor is left to the GPU run\n' >>"$STEPS"
else
  step infer-aoti 90 "${RN50[@]}" bench infer "$CKPT" "${INFER[@]}" --backend aoti --precision fp16 \
    --images "$SAMPLE" --out "$WORK/results/infer-aoti"
fi
pack

"$PY" benchmarks/device_summary.py "$WORK" "$OUT" "$(elapsed)" "$DRY"
cp "$WORK/logs/env.log" "$OUT/env.log" 2>/dev/null || true
rm -rf "$WORK"
