#!/usr/bin/env bash
# End-to-end throughput of `embed` against the PyTorch + transformers reference (tests/bench/embed_torch.py):
# same generated images, same weights, same thread count, one run each, printed as a table and a ratio.
#
#   make bench                                   # 480 images, ViT-B/16
#   BENCH_N=96 BENCH_ARCH=b32 make bench
#
# Environment:
#   BENCH_N        images to generate (default 480; data/bench/images is rewritten when it changes)
#   BENCH_ARCH     b16 (default) or b32: a randomly initialised CLIP with the real OpenAI ViT-B architecture
#   BENCH_THREADS  threads for both tools (default 2): torch.set_num_threads/OMP/MKL and RAYON_NUM_THREADS
#   BENCH_WORKERS  DataLoader workers of the PyTorch script (default 2, its faster setting on 2 cores)
#   BENCH_BATCH    images per model batch for both (default 32, embed's default)
#   BENCH_NO_PIP=1 skip `pip install -r tests/bench/requirements.txt`
#   BENCH_KEEP=1   keep the temporary outputs (their folder is printed)
#   CARGO          cargo command (default cargo)
#   BENCH_EMBED    an embed binary to time instead of building ./target/release/embed
#
# Generated files live under data/bench/ (git-ignored): clip-b16/ or clip-b32/ (~600 MB of float32 weights) and
# images/. Both tools read them once beforehand so that neither pays for a cold page cache. Times are wall clock:
# vl2v's is the whole `embed` process; PyTorch's is from after its imports to its end (model load included),
# with the whole process (interpreter start and imports too) shown as well. Exits 1 when the two tools'
# embeddings disagree (tests/bench/compare.py), after printing everything.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
N="${BENCH_N:-480}"
ARCH="${BENCH_ARCH:-b16}"
THREADS="${BENCH_THREADS:-2}"
WORKERS="${BENCH_WORKERS:-2}"
BATCH="${BENCH_BATCH:-32}"
CARGO="${CARGO:-cargo}"
PYTHON="${PYTHON:-python3}"
case "$ARCH" in b16 | b32) ;; *) echo "BENCH_ARCH must be b16 or b32, not '$ARCH'" >&2; exit 2 ;; esac

MODEL="data/bench/clip-$ARCH"
IMAGES="data/bench/images"
EMBED="${BENCH_EMBED:-./target/release/embed}"

step() { printf '\n== %s\n' "$*" >&2; }

if [[ -z "${BENCH_NO_PIP:-}" ]]; then
    step "pip install -r tests/bench/requirements.txt"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check -r tests/bench/requirements.txt
fi

if [[ -z "${BENCH_EMBED:-}" ]]; then
    step "$CARGO build --release -p embed"
    $CARGO build --release -p embed
fi

step "benchmark model and images under data/bench/"
"$PYTHON" tests/bench/make_bench_model.py "$MODEL" --arch "$ARCH"
"$PYTHON" tests/bench/make_bench_images.py "$IMAGES" --n "$N"
# Warm the page cache for both tools alike.
cat "$MODEL"/* >/dev/null
find "$IMAGES" -type f -name '*.jpg' -exec cat {} + >/dev/null

TMP="$(mktemp -d "${TMPDIR:-/tmp}/vl2v-bench.XXXXXX")"
if [[ -n "${BENCH_KEEP:-}" ]]; then
    echo "outputs kept in $TMP" >&2
else
    trap 'rm -rf "$TMP"' EXIT
fi

# Runs a command with stdout and stderr to files; writes its wall-clock seconds (and peak RSS in kB when
# /usr/bin/time exists) to $TMP/<name>.time.
timed() {
    local name="$1"
    shift
    local start end
    start="$EPOCHREALTIME"
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%M' -o "$TMP/$name.rss" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    else
        "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    fi
    end="$EPOCHREALTIME"
    "$PYTHON" -c "print(f'{$end - $start:.3f}')" >"$TMP/$name.time"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

step "PyTorch reference: $THREADS threads, $WORKERS DataLoader workers, batch $BATCH"
if ! OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" timed torch \
    "$PYTHON" tests/bench/embed_torch.py --root "$IMAGES" --model "$MODEL" --out "$TMP/torch" \
    --threads "$THREADS" --batch-size "$BATCH" --workers "$WORKERS"; then
    cat "$TMP/torch.err" >&2
    echo "embed_torch.py failed" >&2
    exit 1
fi
tail -n 1 "$TMP/torch.out" >&2

step "vl2v: RAYON_NUM_THREADS=$THREADS $EMBED --dataset bench --root $IMAGES --model $MODEL --force"
if ! RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" timed vl2v \
    "$EMBED" --dataset bench --root "$IMAGES" --model "$MODEL" --cache-dir "$TMP/vl2v-cache" \
    --batch-size "$BATCH" --force; then
    cat "$TMP/vl2v.err" >&2
    echo "embed failed" >&2
    exit 1
fi
grep -E '^(dataset|embedded) ' "$TMP/vl2v.err" >&2 || true
CACHE="$(tail -n 1 "$TMP/vl2v.out")"

step "consistency: vl2v cache vs PyTorch embeddings"
set +e
"$PYTHON" tests/bench/compare.py "$CACHE" "$TMP/torch" >"$TMP/compare.out"
COMPARE_RC=$?
set -e
head -n -1 "$TMP/compare.out"

"$PYTHON" - "$TMP" "$N" "$ARCH" "$THREADS" "$WORKERS" "$BATCH" "$LOAD_BEFORE" <<'EOF'
import json, re, sys
from pathlib import Path

tmp, n, arch, threads, workers, batch, load = sys.argv[1:]
tmp = Path(tmp)

def read(name):
    p = tmp / name
    return p.read_text() if p.exists() else ""

torch_json = json.loads(read("torch.out").strip().splitlines()[-1])
torch_wall = float(read("torch.time"))
vl2v_wall = float(read("vl2v.time"))
summary = re.search(r"embedded (\d+) images .*?\(([\d.]+) in the model\)", read("vl2v.err"))
vl2v_images = int(summary.group(1)) if summary else int(n)
vl2v_model = float(summary.group(2)) if summary else None
check = json.loads(read("compare.out").strip().splitlines()[-1]) if read("compare.out").strip() else {}

def rss(name):
    text = read(f"{name}.rss").strip().splitlines()
    return f"{int(text[-1]) / 1024:.0f}" if text and text[-1].isdigit() else "-"

images = torch_json["images"]
torch_rate = images / torch_json["seconds"]
torch_whole_rate = images / torch_wall
vl2v_rate = vl2v_images / vl2v_wall
patch = {"b16": 16, "b32": 32}[arch]

print()
print(f"vl2v bench: {n} JPEGs ({Path('data/bench/images')}), CLIP ViT-B/{patch} (random weights, float32), "
      f"{threads} threads each, batch {batch}, load average before {load}")
rows = [
    ("tool", "seconds", "images/s", "model images/s", "peak MB"),
    (f"PyTorch {torch_json['torch'].split('+')[0]} + transformers {torch_json['transformers']} ({workers} workers)",
     f"{torch_json['seconds']:.1f}", f"{torch_rate:.2f}", f"{torch_json['model_images_per_s']:.2f}", rss("torch")),
    ("  same, whole process (+ imports)", f"{torch_wall:.1f}", f"{torch_whole_rate:.2f}", "", ""),
    ("vl2v embed (whole process)", f"{vl2v_wall:.1f}", f"{vl2v_rate:.2f}",
     f"{vl2v_model:.2f}" if vl2v_model is not None else "?", rss("vl2v")),
]
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
ratio = vl2v_rate / torch_rate
print(f"ratio vl2v / PyTorch: {ratio:.2f}x  (vs PyTorch's whole process: {vl2v_rate / torch_whole_rate:.2f}x; "
      f"target >= 1.00x: {'met' if ratio >= 1.0 else 'NOT met'})")
if check:
    print(f"consistency: min cosine {check.get('min_cosine', float('nan')):.6f} over {check.get('images')} images "
          f"(expected >= 0.999): {'ok' if check.get('ok') else 'FAILED'}")
EOF
if [[ $COMPARE_RC -ne 0 ]]; then
    echo "the embeddings of vl2v and PyTorch disagree (see above)" >&2
    exit 1
fi
