#!/usr/bin/env bash
# make domainbed-check: DomainBed's own collect_results.py and model selection (vendored, torch-free, in
# tests/fixtures/domainbed) read a reported vl2v dataset folder and select what `distill report` selected
# (tests/domainbed/check_collect_results.py says what is checked). numpy and tqdm (pinned in requirements.txt)
# go into target/domainbed-venv; needs PyPI the first time; never run in CI.
#
# DOMAINBED_RUNS=runs/demo/synthdg checks a folder `distill report` has reported (e.g. `make demo`'s).
# Without it, a demo-sized folder is made under target/domainbed-check (kept, so a rerun reuses it): the
# synthdg benchmark at the demo's size, the demo's mini CLIP and mini ViT caches (4 views), and for trial
# seeds 0 and 1 zeroshot, erm-lp, adip-align, adip-align with SWAD (tag swad) and a two-λ adip-align sweep,
# 300 steps each; about two minutes on 2 cores once built.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
VENV=target/domainbed-venv
WORK=target/domainbed-check

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if ! cmp -s tests/domainbed/requirements.txt "$VENV/.requirements"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/domainbed/requirements.txt
    cp tests/domainbed/requirements.txt "$VENV/.requirements"
fi

if [ -n "${DOMAINBED_RUNS:-}" ]; then
    folder=$DOMAINBED_RUNS
else
    "$CARGO" build --release -p distill -p embed -p vl2v-lab --bins
    BIN=target/release
    "$BIN/synthdg" benchmark --out "$WORK/data" --per-class 60 >/dev/null
    T="$("$BIN/embed" --dataset synthdg --root "$WORK/data" --model shared/models/mini-clip --views 4 \
        --cache-dir "$WORK/cache" | tail -n 1)"
    S="$("$BIN/embed" --dataset synthdg --root "$WORK/data" --encoder student --student mini-vit \
        --model shared/models/mini-vit --views 4 --cache-dir "$WORK/cache" | tail -n 1)"
    train=(--student-cache "$S" --out "$WORK/runs" --steps 300 --checkpoint-freq 50 --lr 1e-3)
    for trial in 0 1; do
        "$BIN/distill" run --cache "$T" --algorithm zeroshot --trial-seed "$trial" --out "$WORK/runs" >/dev/null
        "$BIN/distill" run --cache "$T" --algorithm erm-lp --trial-seed "$trial" "${train[@]}" >/dev/null
        "$BIN/distill" run --cache "$T" --algorithm adip-align --trial-seed "$trial" "${train[@]}" >/dev/null
        "$BIN/distill" run --cache "$T" --algorithm adip-align --trial-seed "$trial" --swad --tag swad \
            "${train[@]}" >/dev/null
    done
    "$BIN/distill" sweep --cache "$T" --student-cache "$S" --algorithm adip-align --lambda 0.3,0.7 \
        --trial-seeds 0,1 --jobs 2 --out "$WORK/runs" -- --steps 300 --checkpoint-freq 50 --lr 1e-3 >/dev/null
    "$BIN/distill" report --runs "$WORK/runs" --dataset synthdg >/dev/null
    folder=$WORK/runs/synthdg
fi

PYTHONPATH=tests/fixtures/domainbed "$VENV/bin/python" tests/domainbed/check_collect_results.py "$folder"
