#!/usr/bin/env bash
# Makes target/cuda-bin ready for tests/cuda/gpu_check.sh (and device_check.sh) on a GPU machine with no Rust:
# the `cuda` builds of embed and distill (tests/cuda/build_without_toolkit.sh, which needs no toolkit or
# GPU here), the `cuda` test binaries of the shared library (parity) and of distill (the step bench), the
# CPU synthdg, each stripped and xz-compressed; cmp_cache.py; and the tiny dataset's CPU cache to compare with.
#
#   bash tests/cuda/prepare_gpu_check.sh      # then, on the GPU machine (carry target/cuda-bin):
#   bash tests/cuda/gpu_check.sh
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
cd "$REPO"
B=target/cuda-bin
rm -rf "$B" && mkdir -p "$B"

WITH_TESTS=1 bash tests/cuda/build_without_toolkit.sh
cargo build --release -p vl2v-lab --bin synthdg -p embed --bin embed

# xz: the CUDA binaries carry the same PTX kernels, which xz packs to half of gzip's size (the device tool
# carries 64 MiB, repository included).
pack() { strip -o "$B/$2" "$1" && xz -T2 -9e -f "$B/$2"; }
pack target/cuda/release/embed embed
pack target/cuda/release/distill distill
pack "$(cat target/cuda/shared_tests.path)" shared_tests
pack "$(cat target/cuda/distill_tests.path)" distill_tests
pack target/release/synthdg synthdg
cp tests/cuda/cmp_cache.py "$B/"

# The tiny dataset of device_check.sh, embedded on this CPU.
F=tests/fixtures/images D=$(mktemp -d)
mkdir -p $D/photo/cat $D/photo/dog $D/art/cat $D/art/dog
cp $F/rgb.jpg $F/gray.png $D/photo/cat/; cp $F/rgba.png $F/wide.png $D/photo/dog/
cp $F/tall.png $F/rgb.bmp $D/art/cat/; cp $F/cmyk.jpg $F/palette.gif $D/art/dog/
target/release/embed --dataset tiny --root $D --model tests/fixtures/tiny_clip --cache-dir "$B/ref_cpu" \
    --device cpu
rm -rf "$D"
du -sh "$B" "$B"/*
