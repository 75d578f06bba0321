#!/usr/bin/env bash
# What `--precision bf16` changes on the demo: erm-ft, adip-distill and sd trained with the demo's settings
# (150 steps, learning rate 1e-4, batch 16 per domain; adip-align first, cached features, lr 1e-3) in fp32 and
# in bf16, trial seed 0 (the same seeds, batches and views in both: a paired comparison), every held-out domain;
# prints each precision's report and wall time.
#
#   bash tests/bench/run_bf16_demo.sh          (~30 min on 2 busy cores, most of it bf16's; a rerun skips finished runs)
#
# Environment: BENCH_BIN [target/release], BENCH_WORK [data/bench/bf16-demo], BENCH_TRIALS ["0"],
# BENCH_ALGORITHMS ["erm-ft adip-distill sd"].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN="${BENCH_BIN:-target/release}"
WORK="${BENCH_WORK:-data/bench/bf16-demo}"
TRIALS="${BENCH_TRIALS:-0}"
ALGORITHMS="${BENCH_ALGORITHMS:-erm-ft adip-distill sd}"

"$BIN/synthdg" benchmark --out "$WORK/synthdg" --per-class 60 >/dev/null
T="$("$BIN/embed" --dataset synthdg --root "$WORK/synthdg" --model shared/models/mini-clip --views 4 \
    --cache-dir "$WORK/cache" | tail -n 1)"
S="$("$BIN/embed" --dataset synthdg --root "$WORK/synthdg" --encoder student --student mini-vit \
    --model shared/models/mini-vit --views 4 --cache-dir "$WORK/cache" | tail -n 1)"
common=(--steps 150 --checkpoint-freq 50)
for precision in fp32 bf16; do
    out="$WORK/runs-$precision"
    started=$SECONDS
    for trial in $TRIALS; do
        "$BIN/distill" run --out "$out" --cache "$T" --student-cache "$S" --algorithm adip-align \
            --trial-seed "$trial" "${common[@]}" --lr 1e-3 >/dev/null
        for algorithm in $ALGORITHMS; do
            students=(--student-cache "$S")
            [ "$algorithm" = sd ] && students=()
            echo "== $precision $algorithm trial $trial" >&2
            "$BIN/distill" run --out "$out" --cache "$T" "${students[@]}" --algorithm "$algorithm" \
                --trial-seed "$trial" "${common[@]}" --lr 1e-4 --batch-size 16 --precision "$precision" \
                >/dev/null
        done
    done
    echo "== $precision: $((SECONDS - started)) s" >&2
    "$BIN/distill" report --runs "$out" --dataset synthdg
done
