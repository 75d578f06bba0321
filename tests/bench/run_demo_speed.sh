#!/usr/bin/env bash
# How much faster `make demo` got (issue 10): one fixed demo workload, run with the binaries of a base commit
# and with today's, back to back on the same machine, the same models and the same thread count; wall seconds
# and maximum RSS of each whole demo (/usr/bin/time).
#
#   bash tests/bench/run_demo_speed.sh                     # base c12b1e6, built in a git worktree
#   BASE_BIN=/path/to/old/bins bash tests/bench/run_demo_speed.sh
#
# The workload is the base commit's own data/demo.sh (taken with `git show`), as the demo was when issue 10
# was filed (c12b1e6): benchmark, teacher and student caches with 4 views, then zeroshot, erm-lp, adip-align,
# erm-ft, kd, adip-distill and sd on every held-out domain, one trial seed, DEMO_STEPS (150, today's demo's)
# steps. Today's demo runs more algorithms (data/compare.sh), which the base binaries do not have, so the
# same script for both is the fair measure. Both sides use today's committed models.
#
# Environment: BASE (commit, default c12b1e6), BASE_BIN (its embed/distill/synthdg; built into
# target/bench-base when unset, ~10 minutes the first time), DEMO_STEPS (default 150), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
BASE="${BASE:-c12b1e6}"
CARGO="${CARGO:-cargo}"
WORK="$ROOT/data/bench/demo-speed"
mkdir -p "$WORK"

if [ -z "${BASE_BIN:-}" ]; then
    BASE_BIN="$ROOT/target/bench-base/release"
    if [ ! -x "$BASE_BIN/distill" ]; then
        rm -rf "$WORK/base-src"
        git worktree add --detach "$WORK/base-src" "$BASE" >&2
        (cd "$WORK/base-src" && CARGO_TARGET_DIR="$ROOT/target/bench-base" "$CARGO" build --release --bins >&2)
        git worktree remove --force "$WORK/base-src"
    fi
fi
"$CARGO" build --release --bins >&2

# The base demo script in a folder of its own: it changes to its parent's parent, so models are given as
# absolute paths.
mkdir -p "$WORK/script/data"
git show "$BASE:data/demo.sh" >"$WORK/script/data/demo.sh"

for side in base today; do
    bin=$([ $side = base ] && echo "$BASE_BIN" || echo "$ROOT/target/release")
    rm -rf "$WORK/$side"
    DEMO_BIN="$bin" DEMO_DATA="$WORK/$side/synthdg" DEMO_CACHE="$WORK/$side/cache" DEMO_OUT="$WORK/$side/runs" \
        DEMO_STEPS="${DEMO_STEPS:-150}" DEMO_TEACHER="$ROOT/shared/models/mini-clip" \
        DEMO_STUDENT="$ROOT/shared/models/mini-vit" \
        /usr/bin/time -f "%e %M" -o "$WORK/$side.time" bash "$WORK/script/data/demo.sh" \
        >"$WORK/$side.stdout" 2>"$WORK/$side.stderr"
    read -r wall rss <"$WORK/$side.time"
    echo "$side ($([ $side = base ] && echo "$BASE" || git rev-parse --short HEAD)): ${wall} s wall, $((rss / 1024)) MiB max RSS"
    eval "${side}_wall=$wall"
done
awk -v b="$base_wall" -v t="$today_wall" 'BEGIN { printf "demo speed-up: %.2fx (%.0f s -> %.0f s)\n", b / t, b, t }'
