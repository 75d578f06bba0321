#!/usr/bin/env bash
# make interop: builds the release embed, makes every kind of cache from the committed fixtures (tiny CLIP
# teacher in f32 and f16 with views and texts, tiny students in f32 and f16), and opens each with pyarrow,
# polars and DuckDB (pinned in requirements.txt, installed into target/interop-venv). Needs PyPI the first
# time; never run in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO=${CARGO:-cargo}
PYTHON=${PYTHON:-python3}
VENV=target/interop-venv
WORK=target/interop
FIXTURES=tests/fixtures

# The readers, reinstalled whenever requirements.txt changes.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if ! cmp -s tests/interop/requirements.txt "$VENV/.requirements"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
    cp tests/interop/requirements.txt "$VENV/.requirements"
fi

"$CARGO" build --release -p embed --bin embed
EMBED=target/release/embed

# A DomainBed-layout dataset from the committed test images (every decoder: JPEG incl. CMYK, PNG 8/16-bit,
# grey, palette, alpha, GIF, BMP, TIFF, WebP), two domains × two classes, plus undecodable files so the
# parts' footers list skipped images.
rm -rf "$WORK"
DATA=$WORK/data
i=0
for image in "$FIXTURES"/images/*; do
    domain=$([ $((i % 2)) -eq 0 ] && echo "Real World" || echo "art_painting")
    class=$([ $((i / 2 % 2)) -eq 0 ] && echo "Alarm_Clock" || echo "dog")
    mkdir -p "$DATA/$domain/$class"
    cp "$image" "$DATA/$domain/$class/"
    i=$((i + 1))
done
cp "$FIXTURES"/bad/* "$DATA/art_painting/dog/"

embed() {
    local name=$1
    shift
    echo "== $name"
    HF_HUB_OFFLINE=1 "$EMBED" --dataset interop --root "$DATA" --cache-dir "$WORK/cache/$name" --views 2 "$@"
}
embed teacher-f32 --model "$FIXTURES/tiny_clip" --dtype f32
embed teacher-f16 --model "$FIXTURES/tiny_clip" --dtype f16
embed student-vit-f32 --encoder student --student test-vit --model "$FIXTURES/students/vit.safetensors" --dtype f32
embed student-resnet-f16 --encoder student --student test-resnet-basic \
    --model "$FIXTURES/students/resnet_basic.safetensors" --dtype f16

"$VENV/bin/python" tests/interop/check_readers.py "$WORK/cache"
