#!/usr/bin/env bash
# Issue #16's measurements on a CPU machine, into one folder per CPU under docs/results/:
#  1. the wall time of `rn50 bench train`, `rn50 bench infer` and `rn50 bench data` with their CPU defaults;
#  2. the README's `bench train` example (2 gloo processes, batch 4, 64 px, 5 iterations) while another process
#     keeps one core busy: the efficiency figure of this tree, and of an older tree (BEFORE=path to a checkout, e.g.
#     a `git worktree` of f9d9d95, which measured the worker counts back to back) if given;
#  3. `rn50 --help` wall time (5 runs, median), this tree and BEFORE;
#  4. the trainer-overhead benchmark's CPU figure (benchmarks/trainer_overhead.py --device cpu).
# Run it on an otherwise idle machine: bash benchmarks/bench_walltimes.sh [BEFORE]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
BEFORE=${1:-}
PY=$BIN/python
label=$($PY -c 'from rn50.env import cpu_label; print(cpu_label())')
OUT=${OUT:-docs/results/bench-walltimes-$label}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$OUT"
$BIN/rn50 data sample "$work/sample" --force >/dev/null
{
  echo "# rn50 bench: CPU-default wall times and the README bench train example under load"
  echo
  $PY -c 'from rn50.env import cpu_model, cpu_signature, cpu_flags; import os; flags = " ".join(cpu_flags()); print(f"CPU: {cpu_model()} ({cpu_signature()}) [{flags}], {os.cpu_count()} cores")'
  echo "Commit: $(git rev-parse --short HEAD); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} >"$OUT/README.md"

timed() {  # name, command...: wall seconds and exit code into the table; output into a log
  local name=$1
  shift
  local t0 rc=0
  t0=$(date +%s.%N)
  "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  printf '| `%s` | %.1f | %d |\n' "$*" "$(echo "$(date +%s.%N) - $t0" | bc)" "$rc" | sed "s#$work#SAMPLE#g; s#$BIN/##g" >>"$OUT/README.md"
}

efficiency() {  # the 2-process full-precision efficiency (or weak scaling) from a bench train JSON
  $PY - "$1" <<'EOF'
import json, sys
from pathlib import Path
data = json.loads(next(Path(sys.argv[1]).glob("*.json")).read_text())
rows = data.get("rows") or data.get("results") or []
row = [r for r in rows if r.get("gpus") == 2 or r.get("workers") == 2][-1]
keys = [k for k in row if "efficiency" in k or "weak" in k]
print(", ".join(f"{k} {row[k]:.2f}" for k in keys if isinstance(row[k], (int, float))))
flags = data.get("flags") or []
print(f"{len(flags)} flag(s)" + (": " + " / ".join(flags) if flags else ""))
EOF
}

example() {  # tree, name: the README example with one core kept busy by another process
  local tree=$1 name=$2
  $PY -c 'while True: pass' &
  local hog=$!
  sleep 2
  (cd "$tree" && PYTHONPATH="$tree" "$OLDPWD/$PY" -m rn50 bench train --device cpu --gpus 2 --batch 4 --image-size 64 \
    --iters 5 --out "$work/example-$name") >"$OUT/example-$name.log" 2>&1 || true
  kill $hog
  wait $hog 2>/dev/null || true
  {
    echo
    echo "README example \`rn50 bench train --device cpu --gpus 2 --batch 4 --image-size 64 --iters 5\`, one core busy"
    echo "with another process, $name tree ($(cd "$tree" && git rev-parse --short HEAD)):"
    echo
    efficiency "$work/example-$name" | sed 's/^/    /'
  } >>"$OUT/README.md"
}

overhead_t0=$(date +%s.%N)  # first, while the machine is idle (its load flags read the 1-minute load average)
$PY benchmarks/trainer_overhead.py --device cpu --json "$OUT/trainer-overhead.json" >"$OUT/trainer-overhead.log" 2>&1
{
  printf 'Trainer overhead (benchmarks/trainer_overhead.py --device cpu, %.0f s; trainer vs bare loop, interleaved rounds):\n' \
    "$(echo "$(date +%s.%N) - $overhead_t0" | bc)"
  grep -iE "overhead|flag" "$OUT/trainer-overhead.log" | sed 's/^/    /'
  echo
  echo "| command (CPU defaults) | wall s | exit |"
  echo "|---|---|---|"
} >>"$OUT/README.md"
timed bench-train $BIN/rn50 bench train --out "$work/train"
timed bench-infer $BIN/rn50 bench infer --out "$work/infer"
timed bench-data $BIN/rn50 bench data "$work/sample" --out "$work/data"
$PY benchmarks/make_jpegs.py "$work/jpegs" --train 1000 --val 100 --classes 10 --workers 2 >/dev/null
timed bench-data-jpegs $BIN/rn50 bench data "$work/jpegs" --out "$work/data-jpegs"
echo >>"$OUT/README.md"
echo "(SAMPLE/jpegs: 1,100 ImageNet-like JPEGs, 500x375, ~100 KiB, from benchmarks/make_jpegs.py)" >>"$OUT/README.md"
grep -E "^\| (pytorch|dali)|^flag" "$OUT/bench-data-jpegs.log" | sed 's/^/    /' >>"$OUT/README.md"

echo >>"$OUT/README.md"
help_time() {  # tree: median wall seconds of 5 `rn50 --help`
  (cd "$1" && for _ in 1 2 3 4 5; do
    t0=$(date +%s.%N)
    PYTHONPATH="$1" "$OLDPWD/$PY" -m rn50 --help >/dev/null
    echo "$(date +%s.%N) - $t0" | bc
  done) | sort -n | sed -n 3p
}
{
  printf '`rn50 --help` wall time, median of 5: this tree %.2f s' "$(help_time "$PWD")"
  [ -n "$BEFORE" ] && printf '; before (%s) %.2f s' "$(cd "$BEFORE" && git rev-parse --short HEAD)" "$(help_time "$BEFORE")"
  echo
  echo
} >>"$OUT/README.md"

example "$PWD" after
[ -n "$BEFORE" ] && example "$BEFORE" before
echo >>"$OUT/README.md"
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/README.md"
cat "$OUT/README.md"
