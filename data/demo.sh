#!/usr/bin/env bash
# `make demo`: the whole product on an offline miniature of the paper, in minutes on a laptop.
#
#   generate the synthdg benchmark (8 classes × clipart, painting, photo, sketch)   → data/synthdg
#   embed it with the mini CLIP teacher (view 0 + augmented views)                   → data/cache/synthdg/…
#   embed it with the mini student, pretrained on photos only, on the same views     → data/cache/synthdg/…
#   data/compare.sh: zeroshot, erm-lp, adip-align, erm-ft, lp-ft, kd, rise, scmd, adip-distill, sd,
#                wise-ft leave-one-domain-out, steps scaled down, and the report     → runs/demo/synthdg/report.{md,png}
#
# The models (shared/models/mini-clip, shared/models/mini-vit) were trained by vl2v itself (`make
# lab-models`; see their provenance.json). A second run reuses the data and caches and skips finished runs.
#
# Environment (defaults in brackets):
#   DEMO_BIN     directory of the embed/distill/synthdg binaries [target/release]
#   DEMO_DATA    benchmark folder [data/synthdg]     DEMO_CACHE  cache root [data/cache]
#   DEMO_OUT     runs root [runs/demo]               DEMO_TRIALS trial seeds, e.g. "0 1 2" [0]
#   DEMO_STEPS   training steps per run [150]        DEMO_FREQ   evaluate every N steps [50]
#   DEMO_VIEWS   augmented views cached per image [4]
#   DEMO_PER_CLASS images per (domain, class) [60]
#   DEMO_TEACHER, DEMO_STUDENT  the models [shared/models/mini-clip, shared/models/mini-vit]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${DEMO_BIN:-target/release}"
DATA="${DEMO_DATA:-data/synthdg}"
CACHE="${DEMO_CACHE:-data/cache}"
OUT="${DEMO_OUT:-runs/demo}"
TRIALS="${DEMO_TRIALS:-0}"
STEPS="${DEMO_STEPS:-150}"
FREQ="${DEMO_FREQ:-50}"
VIEWS="${DEMO_VIEWS:-4}"
PER_CLASS="${DEMO_PER_CLASS:-60}"
TEACHER="${DEMO_TEACHER:-shared/models/mini-clip}"
STUDENT="${DEMO_STUDENT:-shared/models/mini-vit}"

say() { printf '\n== %s\n' "$*" >&2; }
started=$SECONDS

say "benchmark: $DATA"
"$BIN/synthdg" benchmark --out "$DATA" --per-class "$PER_CLASS" >/dev/null

say "teacher cache (mini CLIP, $VIEWS augmented views)"
teacher=("$BIN/embed" --dataset synthdg --root "$DATA" --model "$TEACHER" --views "$VIEWS" --cache-dir "$CACHE")
"${teacher[@]}" --templates distill/prompt_styles/rise.txt >/dev/null
# The same cache: only SCMD's prompt is embedded, not the images again.
T="$("${teacher[@]}" --templates distill/prompt_styles/scmd.txt | tail -n 1)"
say "student cache (mini ViT pretrained on photos, the same views)"
S="$("$BIN/embed" --dataset synthdg --root "$DATA" --encoder student --student mini-vit \
    --model "$STUDENT" --views "$VIEWS" --cache-dir "$CACHE" | tail -n 1)"

"$BIN/distill" analyze --cache "$T" >&2

# The official hyper-parameters are for 5001 steps from ImageNet/CLIP weights; the miniature trains for a
# few hundred steps, so the learning rates are scaled up (the same for every algorithm of a kind).
COMPARE_BIN="$BIN" COMPARE_OUT="$OUT" COMPARE_TRIALS="$TRIALS" \
    COMPARE_FLAGS="--steps $STEPS --checkpoint-freq $FREQ" COMPARE_FEATURE_FLAGS="--lr 1e-3" \
    COMPARE_BACKBONE_FLAGS="--lr 1e-4 --batch-size 16" bash data/compare.sh "$T" "$S"
echo "demo finished in $((SECONDS - started)) s" >&2
