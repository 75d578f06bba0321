#!/usr/bin/env bash
# The λ sweep of ADiP Align from one cache pair, using every core: λ ∈ {0.1, …, 0.9} × 3 trial seeds × the 4
# held-out domains of an OfficeHome-sized dataset (108 runs of 5001 steps) with `distill sweep --jobs 2`,
# against PyTorch's time for the same 108 runs one after another (one measured run of
# tests/bench/align_torch.py × 108: the way a Python sweep runs them).
#
#   bash tests/bench/run_sweep_bench.sh      # part of `make bench`; ~5–10 minutes
#
# The caches are random (seeded) but shaped like OfficeHome's: 15,588 images, 4 domains, 65 classes,
# 512-d teacher, 768-d student, written by the ignored test sweep::tests::write_officehome_sized_caches.
# Environment: BENCH_THREADS (default 2), CARGO, PYTHON as in run_align_bench.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
THREADS="${BENCH_THREADS:-2}"
CARGO="${CARGO:-cargo}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vl2v-sweep-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*" >&2; }

step "$CARGO build --release -p distill; OfficeHome-sized caches in $WORK"
$CARGO build --release -p distill
VL2V_SWEEP_CACHES="$WORK" $CARGO test -p distill --release -- --ignored --exact \
    sweep::tests::write_officehome_sized_caches >/dev/null

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
step "PyTorch: one adip-align run (tests/bench/align_torch.py --threads $THREADS)"
TORCH_JSON="$(OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
    "$PYTHON" tests/bench/align_torch.py --threads "$THREADS" | tail -n 1)"
echo "$TORCH_JSON" >&2

step "vl2v: distill sweep, 9 λ × 3 trial seeds × 4 held-out domains, --jobs $THREADS"
started=$(date +%s.%N)
target/release/distill sweep --cache "$WORK/teacher" --student-cache "$WORK/student" \
    --algorithm adip-align --lambda 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9 --trial-seeds 0,1,2 \
    --jobs "$THREADS" --out "$WORK/runs" >/dev/null
finished=$(date +%s.%N)
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
RUNS=$(find "$WORK/runs" -name done | wc -l)

"$PYTHON" - "$TORCH_JSON" "$started" "$finished" "$RUNS" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, sys

torch_run = json.loads(sys.argv[1])
started, finished = float(sys.argv[2]), float(sys.argv[3])
runs, threads, load_before, load_after = int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
ours = finished - started
theirs = torch_run["seconds"] * runs
print()
print(f"adip-align λ sweep: {runs} OfficeHome-sized runs of {torch_run['steps']} steps, {threads} cores, "
      f"load average {load_before} before, {load_after} after")
print(f"  PyTorch {torch_run['torch'].split('+')[0]}, one after another: {runs} × {torch_run['seconds']:.2f} s = "
      f"{theirs / 60:.1f} min (one run measured)")
print(f"  vl2v distill sweep --jobs {threads}: {ours / 60:.1f} min ({ours / runs:.2f} s per run)")
print(f"ratio: {theirs / ours:.1f}x")
PY
