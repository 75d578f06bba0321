#!/usr/bin/env bash
# `make reproduce DATASET=officehome STUDENT=vit-base`: the paper's recipe for one student, as the official
# scripts run it (val-iisc/VL2V-ADiP, scripts/<student>_student/run_stage{1,2}.sh), from caches, resumable.
#
#   teacher cache: CLIP ViT-B/16 with the official input (--preprocess vl2v: the student's 224² bilinear
#                  squash and ImageNet mean/std) and K augmented views                 → <cache>/<dataset>/…
#   student cache: the student's features on the same views (its weights: --model)     → <cache>/<dataset>/…
#   for every trial seed, leave-one-domain-out:
#     adip-align --swad    stage 1 (DFC_STAGE1)
#     adip-distill --swad  stage 2 (DFC_STAGE2), from stage 1's model.safetensors
#     kd --swad, erm-ft --swad   the baselines (the paper's Table 2 runs every method with SWAD)
#   distill report: the table, with the paper's published numbers beside ours         → <out>/<dataset>/report.md
#
# What differs per student and stage (model_save, the SWAD variant) is data, distill/official_scripts/<student>.json,
# which `distill run` applies by itself to a student cache of that architecture; the weights the official code
# loads are that file's "weights". Everything else is distill run's defaults, which are the official ones (5001
# steps, 15001 on DomainNet; evaluation every 200; Adam 5e-5; batch 32 per domain; λ 0.5). Interrupted, a rerun
# resumes: embed continues its caches, finished runs are skipped (a --swad run keeps no checkpoint, so the one
# that was interrupted restarts); a finished recipe reruns in seconds.
#
# Usage: data/reproduce.sh DATASET STUDENT
# Environment (defaults in brackets):
#   REPRO_BIN      the embed and distill binaries [target/release]
#   REPRO_DATA     the dataset folder [embed's default, data/<DomainBed's folder>]
#   REPRO_CACHE    cache root [data/cache]         REPRO_OUT  runs root [runs]
#   REPRO_TRIALS   trial seeds ["0 1 2"]          REPRO_VIEWS  augmented views cached per image [8]
#   REPRO_TEACHER  the teacher [openai/clip-vit-base-patch16]
#   REPRO_MODEL    the student's weights (a hub id, directory or .safetensors) [the file's "weights"."model"]
#   REPRO_STEPS, REPRO_FREQ  distill run --steps / --checkpoint-freq [distill's defaults]
#   REPRO_RUN_FLAGS  more flags for every distill run (e.g. "--device cuda:1")
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ $# -ne 2 ]; then
    echo "usage: data/reproduce.sh DATASET STUDENT (students: resnet50, vit-small, vit-base, deit-small)" >&2
    exit 2
fi
DATASET=$1
STUDENT=$2
BIN="${REPRO_BIN:-target/release}"
CACHE="${REPRO_CACHE:-data/cache}"
OUT="${REPRO_OUT:-runs}"
TRIALS="${REPRO_TRIALS:-0 1 2}"
VIEWS="${REPRO_VIEWS:-8}"
TEACHER="${REPRO_TEACHER:-openai/clip-vit-base-patch16}"
SCRIPT="distill/official_scripts/$STUDENT.json"

MODEL="${REPRO_MODEL:-}"
if [ -z "$MODEL" ]; then
    if [ ! -f "$SCRIPT" ]; then
        echo "error: no official script for student '$STUDENT' ($SCRIPT): give its weights with REPRO_MODEL (make reproduce STUDENT_MODEL=…)" >&2
        exit 2
    fi
    # The one "model" key of the file (its "weights").
    MODEL="$(sed -n 's/^ *"model": *"\([^"]*\)".*/\1/p' "$SCRIPT")"
    if [ -z "$MODEL" ]; then
        echo "error: $SCRIPT names no hub id for the weights the official code loads (see its \"weights\"): give them with REPRO_MODEL (make reproduce STUDENT_MODEL=…)" >&2
        exit 2
    fi
fi

say() { printf '\n== %s\n' "$*" >&2; }
started=$SECONDS
root=()
if [ -n "${REPRO_DATA:-}" ]; then
    root=(--root "$REPRO_DATA")
fi

say "teacher cache ($TEACHER, official input, $VIEWS augmented views)"
T="$("$BIN/embed" --dataset "$DATASET" "${root[@]}" --model "$TEACHER" --preprocess vl2v --views "$VIEWS" \
    --cache-dir "$CACHE" | tail -n 1)"
say "student cache ($STUDENT, $MODEL, the same views)"
S="$("$BIN/embed" --dataset "$DATASET" "${root[@]}" --encoder student --student "$STUDENT" --model "$MODEL" \
    --views "$VIEWS" --cache-dir "$CACHE" | tail -n 1)"

run=(--cache "$T" --student-cache "$S" --out "$OUT" --swad)
if [ -n "${REPRO_STEPS:-}" ]; then run+=(--steps "$REPRO_STEPS"); fi
if [ -n "${REPRO_FREQ:-}" ]; then run+=(--checkpoint-freq "$REPRO_FREQ"); fi
read -r -a extra <<<"${REPRO_RUN_FLAGS:-}"
for trial in $TRIALS; do
    for algorithm in adip-align adip-distill kd erm-ft; do
        say "$algorithm, trial seed $trial"
        "$BIN/distill" run "${run[@]}" "${extra[@]}" --algorithm "$algorithm" --trial-seed "$trial" >/dev/null
    done
done

say "report"
"$BIN/distill" report --runs "$OUT" --dataset "$DATASET"
echo "reproduce finished in $((SECONDS - started)) s: $OUT/$DATASET/report.md" >&2
