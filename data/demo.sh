#!/usr/bin/env bash
# `make demo`: the whole product on an offline miniature of the paper, in minutes on a laptop.
#
#   generate the synthdg benchmark (8 classes × clipart, painting, photo, sketch)   → data/synthdg
#   embed it with the mini CLIP teacher (view 0 + augmented views)                   → data/cache/synthdg/…
#   embed it with the mini student, pretrained on photos only, on the same views     → data/cache/synthdg/…
#   distill run: zeroshot, erm-lp, adip-align, erm-ft, lp-ft, kd, adip-distill, sd, wise-ft,
#                leave-one-domain-out, steps scaled down                             → runs/demo/synthdg/…
#   distill report: the paper-style table and a PNG chart                            → runs/demo/synthdg/report.{md,png}
#
# The models (shared/models/mini-clip, shared/models/mini-vit) were trained by vl2v itself (`make
# lab-models`; see their provenance.json). A second run reuses the data and caches and skips finished runs.
#
# Environment (defaults in brackets):
#   DEMO_BIN     directory of the embed/distill/synthdg binaries [target/release]
#   DEMO_DATA    benchmark folder [data/synthdg]     DEMO_CACHE  cache root [data/cache]
#   DEMO_OUT     runs root [runs/demo]               DEMO_TRIALS trial seeds, e.g. "0 1 2" [0]
#   DEMO_STEPS   training steps per run [300]        DEMO_FREQ   evaluate every N steps [50]
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
STEPS="${DEMO_STEPS:-300}"
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
T="$("$BIN/embed" --dataset synthdg --root "$DATA" --model "$TEACHER" --views "$VIEWS" \
    --cache-dir "$CACHE" --templates distill/prompt_styles/rise.txt | tail -n 1)"
say "student cache (mini ViT pretrained on photos, the same views)"
S="$("$BIN/embed" --dataset synthdg --root "$DATA" --encoder student --student mini-vit \
    --model "$STUDENT" --views "$VIEWS" --cache-dir "$CACHE" | tail -n 1)"

"$BIN/distill" analyze --cache "$T" >&2

# The official hyper-parameters are for 5001 steps from ImageNet/CLIP weights; the miniature trains for a
# few hundred steps, so the learning rates are scaled up (the same for every algorithm of a kind).
common=(--out "$OUT" --steps "$STEPS" --checkpoint-freq "$FREQ")
for trial in $TRIALS; do
    say "trial seed $trial"
    "$BIN/distill" run --cache "$T" --algorithm zeroshot --trial-seed "$trial" --out "$OUT" >/dev/null
    for algorithm in erm-lp adip-align; do
        "$BIN/distill" run --cache "$T" --student-cache "$S" --algorithm "$algorithm" --trial-seed "$trial" \
            "${common[@]}" --lr 1e-3 >/dev/null
    done
    for algorithm in erm-ft lp-ft kd rise adip-distill; do
        "$BIN/distill" run --cache "$T" --student-cache "$S" --algorithm "$algorithm" --trial-seed "$trial" \
            "${common[@]}" --lr 1e-4 --batch-size 16 >/dev/null
    done
    "$BIN/distill" run --cache "$T" --algorithm sd --trial-seed "$trial" "${common[@]}" --lr 1e-4 \
        --batch-size 16 >/dev/null
    # WiSE-FT of that sd tower and the teacher's, α 0.5 (nothing trains).
    "$BIN/distill" run --cache "$T" --algorithm wise-ft --trial-seed "$trial" --out "$OUT" >/dev/null
done

say "report"
"$BIN/distill" report --runs "$OUT" --dataset synthdg
echo "demo finished in $((SECONDS - started)) s; table and chart: $OUT/synthdg/report.md, $OUT/synthdg/report.png" >&2
