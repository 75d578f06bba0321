#!/usr/bin/env bash
# `make compare`: every algorithm of the CLIP-distillation family on the same caches, split, views and trial
# seeds, then one report (a row per algorithm, the paper's Avg-OOD beside where it has the row, and a chart).
#
#   data/compare.sh TEACHER_CACHE STUDENT_CACHE
#
# zeroshot; erm-lp and adip-align on the cached student features; erm-ft, lp-ft (from erm-lp's probe), kd,
# rise, scmd and adip-distill (from adip-align's projection) training the student on the images; sd training
# the teacher's own image tower, and wise-ft mixing it with the zero-shot tower. The teacher cache needs the
# prompts of rise and scmd (`embed … --templates distill/prompt_styles/{rise,scmd}.txt`; `make compare` adds
# them). Finished runs are skipped, so an interrupted comparison resumes where it stopped.
#
# Environment (defaults in brackets):
#   COMPARE_BIN       directory of the distill binary [target/release]
#   COMPARE_OUT       runs root [runs]                 COMPARE_TRIALS  trial seeds ["0 1 2"]
#   COMPARE_FLAGS     `distill run` flags for every run that trains (e.g. "--steps 1001") []
#   COMPARE_FEATURE_FLAGS   … and for the cached-feature algorithms (erm-lp, adip-align) []
#   COMPARE_BACKBONE_FLAGS  … and for the algorithms that train a backbone on images []
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: data/compare.sh TEACHER_CACHE STUDENT_CACHE" >&2
    exit 2
fi
T="$1"
S="$2"
for cache in "$T" "$S"; do
    if [ ! -f "$cache/manifest.json" ]; then
        echo "error: $cache is not a finished cache (no manifest.json)" >&2
        exit 1
    fi
done
BIN="${COMPARE_BIN:-target/release}"
OUT="${COMPARE_OUT:-runs}"
TRIALS="${COMPARE_TRIALS:-0 1 2}"
read -r -a flags <<<"${COMPARE_FLAGS:-}"
read -r -a feature_flags <<<"${COMPARE_FEATURE_FLAGS:-}"
read -r -a backbone_flags <<<"${COMPARE_BACKBONE_FLAGS:-}"

say() { printf '\n== %s\n' "$*" >&2; }
started=$SECONDS
run() { "$BIN/distill" run --out "$OUT" "$@" >/dev/null; }

for trial in $TRIALS; do
    say "trial seed $trial"
    run --cache "$T" --algorithm zeroshot --trial-seed "$trial"
    for algorithm in erm-lp adip-align; do
        say "$algorithm (trial seed $trial)"
        run --cache "$T" --student-cache "$S" --algorithm "$algorithm" --trial-seed "$trial" \
            ${flags[@]+"${flags[@]}"} ${feature_flags[@]+"${feature_flags[@]}"}
    done
    for algorithm in erm-ft lp-ft kd rise scmd adip-distill; do
        say "$algorithm (trial seed $trial)"
        run --cache "$T" --student-cache "$S" --algorithm "$algorithm" --trial-seed "$trial" \
            ${flags[@]+"${flags[@]}"} ${backbone_flags[@]+"${backbone_flags[@]}"}
    done
    say "sd (trial seed $trial)"
    run --cache "$T" --algorithm sd --trial-seed "$trial" ${flags[@]+"${flags[@]}"} \
        ${backbone_flags[@]+"${backbone_flags[@]}"}
    # WiSE-FT of that sd tower and the teacher's, α 0.5 (nothing trains).
    run --cache "$T" --algorithm wise-ft --trial-seed "$trial"
done

dataset="$(sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' "$T/manifest.json" | head -n 1)"
say "report"
"$BIN/distill" report --runs "$OUT" --dataset "$dataset"
echo "comparison finished in $((SECONDS - started)) s; table and chart: $OUT/$dataset/report.md, $OUT/$dataset/report.png" >&2
