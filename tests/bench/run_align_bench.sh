#!/usr/bin/env bash
# Training speed of `distill run --algorithm adip-align` against the equivalent PyTorch loop
# (tests/bench/align_torch.py): an OfficeHome-sized ADiP Align run on random cached features (15,588 images,
# 4 domains, 65 classes, 768-d student, 512-d teacher, 5001 steps, 32 images × 3 training domains per step,
# evaluation every 200 steps), same thread count, one run each, back to back.
#
#   bash tests/bench/run_align_bench.sh          # also the last part of `make bench`
#
# Our side is the ignored test `officehome_sized_adip_align_timing` (distill/src/trainer/tests.rs), built in
# release: it drives the same trainer (`trainer::run`) and algorithm as `distill run`. Both sides time the
# training loop with its evaluations and exclude the generation of the random features.
#
# Environment:
#   BENCH_THREADS  threads for both (default 2): RAYON_NUM_THREADS, torch.set_num_threads, OMP/MKL
#   CARGO          cargo command (default cargo)
#   PYTHON         python with torch (default python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
THREADS="${BENCH_THREADS:-2}"
CARGO="${CARGO:-cargo}"
PYTHON="${PYTHON:-python3}"
TEST=trainer::tests::officehome_sized_adip_align_timing

step() { printf '\n== %s\n' "$*" >&2; }

step "$CARGO test -p distill --release --no-run"
$CARGO test -p distill --release --no-run

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

step "PyTorch: tests/bench/align_torch.py --threads $THREADS"
TORCH_JSON="$(OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
    "$PYTHON" tests/bench/align_torch.py --threads "$THREADS" | tail -n 1)"
echo "$TORCH_JSON" >&2

step "vl2v: RAYON_NUM_THREADS=$THREADS $CARGO test -p distill --release -- --ignored --exact $TEST"
ERR="$(mktemp "${TMPDIR:-/tmp}/vl2v-align-bench.XXXXXX")"
trap 'rm -f "$ERR"' EXIT
# The test's progress lines (stderr) are shown only when it fails.
if ! VL2V_OUT="$(RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
    $CARGO test -p distill --release -- --ignored --exact --nocapture "$TEST" 2>"$ERR")"; then
    echo "$VL2V_OUT" >&2
    cat "$ERR" >&2
    echo "the timing test failed" >&2
    exit 1
fi
VL2V_JSON="$(grep '^align-bench ' <<<"$VL2V_OUT" | tail -n 1 | cut -d' ' -f2-)"
if [[ -z "$VL2V_JSON" ]]; then
    echo "$VL2V_OUT" >&2
    echo "the timing test printed no 'align-bench' line" >&2
    exit 1
fi
echo "$VL2V_JSON" >&2

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

"$PYTHON" - "$TORCH_JSON" "$VL2V_JSON" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF'
import json, sys

torch_run, vl2v_run = json.loads(sys.argv[1]), json.loads(sys.argv[2])
threads, load_before, load_after = sys.argv[3:]
assert torch_run["steps"] == vl2v_run["steps"], (torch_run["steps"], vl2v_run["steps"])
ratio = torch_run["seconds"] / vl2v_run["seconds"]
print()
print(f"adip-align bench: OfficeHome-sized, {vl2v_run['steps']} steps, {threads} threads each, "
      f"load average {load_before} before, {load_after} after")
print(f"  PyTorch {torch_run['torch'].split('+')[0]}: {torch_run['seconds']:.2f} s")
print(f"  vl2v distill:  {vl2v_run['seconds']:.2f} s")
print(f"ratio PyTorch / vl2v: {ratio:.2f}x  (target >= 2.50x: {'met' if ratio >= 2.5 else 'NOT met'})")
EOF
