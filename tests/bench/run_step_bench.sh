#!/usr/bin/env bash
# Training-step speed of the backbone algorithms against PyTorch: one ADiP Distill step (forward, dfc_loss
# through the frozen projection, backward, Adam over the backbone) of ResNet-18 and ViT-S/16 at 224x224,
# batch 16, random weights (the same file on both sides), same thread count, back to back. Median of the
# steps after a warm-up step.
#
#   bash tests/bench/run_step_bench.sh          # also part of `make bench`
#
# PyTorch side: tests/bench/student_step_torch.py (torchvision resnet18, timm vit_small_patch16_224; it also
# writes the weights). Our side: the ignored test `student_step_timing` (distill/src/algorithms/
# adip_distill.rs), built in release, on the same Backbone, objective and Adam as `distill run`.
#
# Environment: BENCH_THREADS (default 2), CARGO (default cargo), PYTHON (python with torch, torchvision,
# timm, safetensors; default python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
THREADS="${BENCH_THREADS:-2}"
CARGO="${CARGO:-cargo}"
PYTHON="${PYTHON:-python3}"
TEST=algorithms::adip_distill::tests::student_step_timing
WEIGHTS="$(mktemp -d "${TMPDIR:-/tmp}/vl2v-step-bench.XXXXXX")"
trap 'rm -rf "$WEIGHTS"' EXIT

step() { printf '\n== %s\n' "$*" >&2; }

step "$CARGO test -p distill --release --no-run"
$CARGO test -p distill --release --no-run

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
step "PyTorch: tests/bench/student_step_torch.py --threads $THREADS --save $WEIGHTS"
TORCH_JSON="$(OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
    "$PYTHON" tests/bench/student_step_torch.py --threads "$THREADS" --save "$WEIGHTS" | tail -n 1)"
echo "$TORCH_JSON" >&2

step "vl2v: $CARGO test -p distill --release -- --ignored --exact $TEST"
VL2V_OUT="$(VL2V_STEP_WEIGHTS="$WEIGHTS" RAYON_NUM_THREADS="$THREADS" CANDLE_NUM_THREADS="$THREADS" \
    $CARGO test -p distill --release -- --ignored --exact --nocapture "$TEST")"
VL2V_JSON="$(grep '^step-bench ' <<<"$VL2V_OUT" | tail -n 1 | cut -d' ' -f2-)"
[[ -n "$VL2V_JSON" ]] || { echo "$VL2V_OUT" >&2; echo "no 'step-bench' line" >&2; exit 1; }
echo "$VL2V_JSON" >&2
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

"$PYTHON" - "$TORCH_JSON" "$VL2V_JSON" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, sys

torch_run, vl2v_run = json.loads(sys.argv[1]), json.loads(sys.argv[2])
threads, load_before, load_after = sys.argv[3:]
print()
print(f"student step bench: batch {vl2v_run['batch']} at 224x224, {threads} threads each, "
      f"load average {load_before} before, {load_after} after")
for name, ours in vl2v_run["students"].items():
    theirs = torch_run["students"][name]
    print(f"  {name:10s} PyTorch {torch_run['torch'].split('+')[0]}: {theirs['seconds']:.2f} s   "
          f"vl2v: {ours['seconds']:.2f} s   ratio PyTorch / vl2v: {theirs['seconds'] / ours['seconds']:.2f}x")
PY
