"""Old (main d03971b) against new (this branch), alternating run by run in the same conditions: `rn50 bench data`
(CPU defaults: batch 32, 2 workers, 5 + 150 batches in 5 interleaved rounds, 224 px; pytorch and dali-cpu) on the
built-in sample and on ImageNet-like JPEGs, and host_cost.py (training-thread CPU per image at batch 256).

    python compare.py OLD_CHECKOUT NEW_CHECKOUT SAMPLE JPEGS PAIRS OUT_DIR
Each run is its own process (two versions of one package cannot share one), old and new alternate, so drifting load
hits both alike; every run's JSON is kept in OUT_DIR and the summary (medians over the pairs, and the median of the
per-pair new/old ratios) is printed.
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

old, new, sample, jpegs, pairs, out = sys.argv[1:7]
out = Path(out)
out.mkdir(parents=True, exist_ok=True)
here = Path(__file__).resolve().parent


def run(version: str, checkout: str, argv: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=checkout)
    done = subprocess.run([sys.executable, *argv], cwd="/tmp", env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{version} {argv} failed:\n{done.stderr[-3000:]}")
    return done.stdout


results: dict[tuple, list[float]] = {}
for pair in range(int(pairs)):
    for version, checkout in (("old", old), ("new", new)) if pair % 2 == 0 else (("new", new), ("old", old)):
        for name, data in (("sample", sample), ("jpegs", jpegs)):
            folder = out / f"bench-data-{name}-{version}-{pair}"
            run(version, checkout, ["-m", "rn50", "bench", "data", data, "--backend", "pytorch,dali-cpu",
                                    "--device", "cpu", "--out", str(folder)])  # fmt: skip
            report = json.loads(next(folder.glob("*.json")).read_text())
            for r in report["results"]:
                if r["status"] == "ok" and r["backend"] != "synthetic":
                    results.setdefault(("bench data img/s", name, r["backend"], version), []).append(r["img_per_s"])
            load = report["env"]["load"]
            results.setdefault(("load average", name, "-", version), []).append(load["loadavg_before"][0])
        for backend in ("dali-cpu", "pytorch"):
            line = run(version, checkout, [str(here / "host_cost.py"), jpegs, backend, "256", "8"])
            (out / f"host-{backend}-{version}-{pair}.json").write_text(line)
            r = json.loads(line)
            results.setdefault(("host us/img b256", "jpegs", backend, version), []).append(r["host_us_per_image"])
            results.setdefault(("img/s b256", "jpegs", backend, version), []).append(r["img_per_s"])
        print(f"pair {pair}: {version} done", flush=True)

print(f"{'measure':<20} {'data':<7} {'backend':<9} {'old':>10} {'new':>10} {'new/old':>8}  (medians of {pairs} runs)")
for key in sorted({k[:3] for k in results}):
    o, n = results[(*key, "old")], results[(*key, "new")]
    ratio = statistics.median(b / a for a, b in zip(o, n, strict=True)) if key[0] != "load average" else float("nan")
    print(
        f"{key[0]:<20} {key[1]:<7} {key[2]:<9} {statistics.median(o):>10.4g} {statistics.median(n):>10.4g} "
        f"{ratio:>8.3f}   old {[round(v, 4) for v in o]} new {[round(v, 4) for v in n]}"
    )
(out / "summary.json").write_text(json.dumps({" | ".join(k): v for k, v in results.items()}, indent=1))
