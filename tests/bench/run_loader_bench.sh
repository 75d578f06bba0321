#!/usr/bin/env bash
# The training loader alone against PyTorch's DataLoader doing the same work: decode a JPEG, DomainBed's
# training augmentation (RandomResizedCrop 224 scale (0.7, 1), flip, ColorJitter 0.3, RandomGrayscale),
# ImageNet normalisation, batches of 32, every image once; images per second for 0, 1 and 2 workers on the
# same cores. vl2v: the ignored test `loader_throughput` (distill/src/data/loader.rs), its Loader with
# `--workers`-many threads prefetching one batch ahead (0: on the caller's pool of BENCH_THREADS threads);
# PyTorch: tests/bench/loader_torch.py, `num_workers` worker processes (0: the main process).
#
#   bash tests/bench/run_loader_bench.sh          # also part of `make bench`
#
# Environment: BENCH_LOADER_N (images, default 640), BENCH_LOADER_WORKERS (default "0 1 2"), BENCH_THREADS
# (default 2), CARGO, PYTHON (python with torch, torchvision, Pillow, numpy).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
THREADS="${BENCH_THREADS:-2}"
N="${BENCH_LOADER_N:-640}"
WORKERS="${BENCH_LOADER_WORKERS:-0 1 2}"
CARGO="${CARGO:-cargo}"
PYTHON="${PYTHON:-python3}"
TEST=data::loader::bench::loader_throughput
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vl2v-loader-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*" >&2; }

source tests/bench/distill_test_binary.sh

step "$N benchmark images"
"$PYTHON" tests/bench/make_bench_images.py "$WORK/images" --n "$N" >&2
cat "$WORK"/images/*/*/*.jpg >/dev/null # both sides read from the page cache

RESULTS="$WORK/results.jsonl"
for workers in $WORKERS; do
    load="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
    step "$workers workers: PyTorch (load $load)"
    torch_line="$(OMP_NUM_THREADS="$THREADS" "$PYTHON" tests/bench/loader_torch.py "$WORK/images" \
        --workers "$workers" --threads "$THREADS" | tail -n 1)"
    echo "$torch_line" >&2
    step "$workers workers: vl2v"
    vl2v_line="$(VL2V_LOADER_IMAGES="$WORK/images" VL2V_LOADER_WORKERS="$workers" \
        RAYON_NUM_THREADS="$THREADS" "$BIN" --ignored --exact --nocapture "$TEST" | grep '^loader-bench ')"
    echo "$vl2v_line" >&2
    "$PYTHON" - "$torch_line" "${vl2v_line#loader-bench }" "$load" >>"$RESULTS" <<'PY'
import json, sys
t, v = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"workers": t["workers"], "load": sys.argv[3], "torch": t["torch"],
                  "torchvision": t["torchvision"], "images": v["images"],
                  "torch_ips": t["images_per_s"], "vl2v_ips": v["images_per_s"]}))
PY
done

"$PYTHON" - "$RESULTS" "$THREADS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
r0 = rows[0]
print()
print(f"loader bench: {r0['images']} JPEGs, batch 32, DomainBed augmentation to 224x224, {sys.argv[2]} threads; "
      f"PyTorch {r0['torch']}, torchvision {r0['torchvision']}")
print("  workers  load before        PyTorch img/s  vl2v img/s  vl2v/PyTorch")
for r in rows:
    print(f"  {r['workers']:7d}  {r['load']:18s} {r['torch_ips']:13.1f} {r['vl2v_ips']:11.1f} "
          f"{r['vl2v_ips'] / r['torch_ips']:11.2f}x")
PY
