#!/usr/bin/env bash
# Memory and time of the cache-only algorithms as the cache grows: synthetic teacher (512-d) + student
# (768-d) cache pairs of OfficeHome's shape (4 domains, 65 classes, f16) at 1×, 10× and 40× its 15,588
# images (40× ≈ DomainNet's 586,575), with 1 and 8 augmented views, written by the cache's own writers
# (tests/bench/make_bench_caches.rs); on each, one short `distill run --algorithm adip-align` (201 steps,
# evaluations at steps 0, 100, 200, held-out domain `product`) under /usr/bin/time -v, run
# 1 + BENCH_REPEATS times: the first builds the caches' view files, the others map them.
#
#   bash tests/bench/run_cache_scale_bench.sh          # also part of `make bench`
#   BENCH_CASES="1:1 10:8" bash tests/bench/run_cache_scale_bench.sh
#
# Each run reports: wall seconds, "caches opened in" seconds (distill's own line: teacher index, texts and
# both view tables), peak heap (the process's peak anonymous resident memory, sampled every 20 ms; vl2v's
# jemalloc never returns freed pages, so it is the heap's high-water mark), peak mapped file pages, and
# /usr/bin/time's maximum RSS (the two together). Caches go to data/bench/caches/ (git-ignored); those of
# 10× and more are deleted after their case unless BENCH_KEEP=1. A case whose caches and view files would
# not leave 2 GB of disk free is skipped, and said so.
#
# Environment:
#   BENCH_CASES    scale:views pairs (default "1:1 10:1 40:1 1:8 10:8"; 40:8 needs ~29 GB of disk)
#   BENCH_REPEATS  runs after the first, which builds the view files (default 2)
#   BENCH_DISTILL  the distill binary to time (default: built here, target/release/distill)
#   BENCH_KEEP=1   keep every generated cache
#   BENCH_OUT      JSON lines of every run are appended here (default data/bench/cache-scale.jsonl)
#   CARGO, PYTHON
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CASES="${BENCH_CASES:-1:1 10:1 40:1 1:8 10:8}"
REPEATS="${BENCH_REPEATS:-2}"
CARGO="${CARGO:-cargo}"
PYTHON="${PYTHON:-python3}"
OUT="${BENCH_OUT:-data/bench/cache-scale.jsonl}"
CACHES=data/bench/caches
RUNS="$(mktemp -d "${TMPDIR:-/tmp}/vl2v-cache-scale.XXXXXX")"
trap 'rm -rf "$RUNS"' EXIT

step() { printf '\n== %s\n' "$*" >&2; }

step "$CARGO build --release -p vl2v-tests --bin make_bench_caches"
$CARGO build --release -p vl2v-tests --bin make_bench_caches
GEN=target/release/make_bench_caches
if [[ -z "${BENCH_DISTILL:-}" ]]; then
    step "$CARGO build --release -p distill"
    $CARGO build --release -p distill
fi
DISTILL="${BENCH_DISTILL:-target/release/distill}"
mkdir -p "$CACHES" "$(dirname "$OUT")"

for case in $CASES; do
    scale="${case%%:*}" views="${case##*:}"
    images=$((15588 * scale))
    dir="$CACHES/x$scale-views$views"
    # Parts and view files, f16, teacher + student: about (512 + 768) × 2 bytes a row, twice.
    need=$((images * (views + 1) * 1280 * 2 * 2 / 1000000000 + 2))
    if [[ ! -f "$dir/student/manifest.json" ]]; then
        free=$(df -P --block-size=1G "$CACHES" | awk 'NR == 2 {print $4}')
        if ((free < need)); then
            step "skipping ${scale}x, $views views: needs ~$need GB of disk, $free GB free"
            echo "{\"scale\": $scale, \"views\": $views, \"skipped\": \"needs ~$need GB of disk, $free GB free\"}" >>"$RUNS/lines.jsonl"
            continue
        fi
        step "generating ${scale}x OfficeHome ($images images), $views views, f16 in $dir"
        rm -rf "$dir"
        "$GEN" --out "$dir" --scale "$scale" --views "$views" --dtype f16
    fi
    parts_mb=$(du -sm "$dir/teacher/images" "$dir/student/images" | awk '{s += $1} END {print s}')
    rm -rf "$dir/teacher/distill" "$dir/student/distill"
    for ((r = 0; r <= REPEATS; r++)); do
        kind=$([[ $r == 0 ]] && echo "builds view files" || echo "maps view files")
        load="$(cut -d' ' -f1-3 /proc/loadavg)"
        step "${scale}x, $views views, run $r ($kind), load $load"
        log="$RUNS/run.log"
        line="$("$PYTHON" tests/bench/peak_memory.py "$log" -- "$DISTILL" run --cache "$dir/teacher" \
            --student-cache "$dir/student" --algorithm adip-align --test-domain product --steps 200 \
            --checkpoint-freq 100 --out "$RUNS/out-$r")" || { cat "$log" >&2; exit 1; }
        grep -E "caches opened|step 200" "$log" >&2 || true
        rm -rf "$RUNS/out-$r"
        echo "$line" >&2
        full="$("$PYTHON" -c 'import json, sys; d = json.loads(sys.argv[1]); d.update(scale=int(sys.argv[2]), views=int(sys.argv[3]), run=int(sys.argv[4]), load=sys.argv[5], binary=sys.argv[6], parts_mb=int(sys.argv[7])); print(json.dumps(d))' \
            "$line" "$scale" "$views" "$r" "$load" "$DISTILL" "$parts_mb")"
        echo "$full" >>"$OUT"
        echo "$full" >>"$RUNS/lines.jsonl"
    done
    if [[ "${BENCH_KEEP:-0}" != 1 && "$scale" -ge 10 ]]; then
        rm -rf "$dir"
    fi
done

"$PYTHON" - "$RUNS/lines.jsonl" "$DISTILL" <<'EOF'
import json, sys

print(f"\ncache-scale bench: adip-align, 201 steps, {sys.argv[2]}")
print("| images | views | view files | caches opened s | run s | peak heap MiB | peak mapped MiB | max RSS MiB | load |")
print("|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    d = json.loads(line)
    images = f"{d['scale']}× ({15588 * d['scale']:,})"
    if "skipped" in d:
        print(f"| {images} | {d['views']} | skipped: {d['skipped']} | | | | | | |")
        continue
    kind = "build" if d["run"] == 0 else "map"
    print(f"| {images} | {d['views']} | {kind} | {d['open_s']:.2f} | {d['wall_s']:.2f} | {d['peak_anon_mib']:.0f} "
          f"| {d['peak_file_mib']:.0f} | {d['max_rss_mib']:.0f} | {d['load'].split()[0]} |")
EOF
