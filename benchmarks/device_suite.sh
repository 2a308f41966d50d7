#!/usr/bin/env bash
# The GPU device suite: run once by a session holding an NVIDIA GPU; at most 8 minutes on an H100.
#
#   OUT=/some/folder bash benchmarks/device_suite.sh     # results under $OUT (the lead copies them to docs/results/)
#   DRY_RUN=1 OUT=/tmp/suite bash benchmarks/device_suite.sh   # CPU plumbing check: --device cpu, tiny settings
#
# Steps, each under its own timeout inside one overall budget (BUDGET_S, default 470 s):
#   1. the `gpu`-marked tests
#   2. rn50 bench infer --batch 1..256: eager and compile, fp16 and bf16 (+ the eager fp32 baseline)
#   3. rn50 bench infer --batch 1..256: aoti, fp16 and bf16 (+ baseline)
#   4. rn50 bench infer: tensorrt fp16 (only where `import tensorrt` works)
#   5. rn50 bench train (only where `rn50 bench train --help` works)
# Every sweep rewrites its files after each series, so a step cut by its timeout keeps what it measured.
# $OUT gets three files: summary.md (printed last), suite.log and device-suite.tar.gz (every result and log),
# because the device tool fetches at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device-suite-out}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-470}
DRY=${DRY_RUN:-0}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rn50-suite.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/results"
START=$(date +%s)
STEPS="$WORK/steps.tsv"
: >"$STEPS"
exec > >(tee -a "$OUT/suite.log") 2>&1

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  BATCH=1..2
  COMMON=(--device cpu --image-size 32 --warmup 1 --iters 2 --no-verify)
  INFER1=(--backend eager --precision fp32,bf16)
  INFER2=(--backend torchscript --precision fp32)
  TRT=(--backend tensorrt --precision fp32)
  TRAIN=(--device cpu --gpus 1 --batch 2 --warmup 1 --iters 2 --image-size 32 --num-classes 10 --no-sweep)
else
  DEVICE=cuda
  BATCH=1..256
  COMMON=(--device cuda --image-size 224 --warmup 10 --iters 30)
  INFER1=(--backend eager,compile --precision fp16,bf16)
  INFER2=(--backend aoti --precision fp16,bf16)
  TRT=(--backend tensorrt --precision fp16)
  TRAIN=(--device cuda --gpus 1 --batch 256 --warmup 10 --iters 30)
fi

elapsed() { echo $(($(date +%s) - START)); }

pack() { tar -czf "$OUT/device-suite.tar.gz" -C "$WORK" logs results steps.tsv 2>/dev/null || true; }

# step NAME MAX_SECONDS CMD...: run CMD with a timeout of min(MAX, what is left of the budget).
step() {
  local name=$1 max=$2
  shift 2
  local left=$((BUDGET - $(elapsed) - 5)) limit=$max t0 rc status
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
  "$PY" -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"
  uptime
} >"$WORK/logs/env.log" 2>&1
cat "$WORK/logs/env.log"

if [ "$DRY" = 1 ]; then
  step gpu-tests 120 "$PY" -m pytest -q -m gpu tests/bench
else
  step gpu-tests 120 "$PY" -m pytest -q -m gpu tests
fi
step infer-eager-compile 170 "$PY" -m rn50 bench infer --batch "$BATCH" "${INFER1[@]}" "${COMMON[@]}" \
  --out "$WORK/results/infer-eager-compile"
step infer-aoti 150 "$PY" -m rn50 bench infer --batch "$BATCH" "${INFER2[@]}" "${COMMON[@]}" \
  --out "$WORK/results/infer-aoti"
if "$PY" -c "import tensorrt" >/dev/null 2>&1; then
  step infer-tensorrt 60 "$PY" -m rn50 bench infer --batch "$BATCH" "${TRT[@]}" "${COMMON[@]}" \
    --out "$WORK/results/infer-tensorrt"
else
  printf 'infer-tensorrt\tskipped\t0\ttensorrt is not importable here\n' >>"$STEPS"
fi
if "$PY" -m rn50 bench train --help >/dev/null 2>&1; then
  step bench-train 90 "$PY" -m rn50 bench train "${TRAIN[@]}" --out "$WORK/results/train"
else
  printf 'bench-train\tskipped\t0\trn50 bench train is not available\n' >>"$STEPS"
fi
pack

# The summary, printed last: steps, then img/s per series and batch from every inference sweep.
"$PY" - "$WORK" "$OUT/summary.md" "$(elapsed)" <<'PY'
import json, sys
from pathlib import Path

work, dest, total = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
lines = [f"# rn50 device suite ({total} s)", "", "| step | status | seconds | last line |", "|---|---|---|---|"]
for row in (work / "steps.tsv").read_text().splitlines():
    name, status, secs, last = (row.split("\t") + ["", "", ""])[:4]
    lines.append(f"| {name} | {status} | {secs} | {last.replace('|', '/')} |")
for path in sorted((work / "results").glob("**/infer-*.json")):
    data = json.loads(path.read_text())
    env = data.get("env", {})
    device = (env.get("gpus") or [{"name": env.get("cpu", "cpu")}])[0]["name"]
    rows = [r for r in data["rows"] if r.get("batch") is not None]
    batches = sorted({r["batch"] for r in rows})
    names = list(dict.fromkeys(f"{r['backend']} {r['precision']}" for r in rows))
    lines += ["", f"## {path.name} ({device})", "", "| batch | " + " | ".join(f"{n} img/s" for n in names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    cell = {(f"{r['backend']} {r['precision']}", r["batch"]): r for r in rows}
    for b in batches:
        vals = []
        for n in names:
            r = cell.get((n, b))
            if r is None:
                vals.append("-")
            elif r["status"] != "ok":
                vals.append(r["status"].upper())
            else:
                vals.append(f"{r['img_s']:,.0f}" if r["img_s"] >= 100 else f"{r['img_s']:.3g}")
        lines.append(f"| {b} | " + " | ".join(vals) + " |")
    for s in data["series"]:
        extra = f", build {s['build_s']} s" if s.get("build_s") is not None else ""
        if s.get("top1_agreement") is not None:
            extra += f", top-1 agreement {100 * s['top1_agreement']:.1f}%"
        lines.append(f"- {s['backend']} {s['precision']}: {s['status']}{extra} {s.get('reason', '')}".rstrip())
for path in sorted((work / "results").glob("train/**/*.md")):
    lines += ["", f"## {path.name}", "", path.read_text()]
text = "\n".join(lines) + "\n"
dest.write_text(text)
print(text)
PY
rm -rf "$WORK"
