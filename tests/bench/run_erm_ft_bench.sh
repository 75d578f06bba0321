#!/usr/bin/env bash
# A whole `distill run --algorithm erm-ft` (ResNet-18 student) against the PyTorch script one would write for
# the same run (tests/bench/erm_ft_torch.py: the official ERM on DomainBed's frozen-BN ResNet, torchvision
# ImageFolder per domain, DomainBed's split, augmentation and eval transform, `num_workers=0`), as a new user
# meets it: 480 generated JPEGs in 3 domains x 4 classes (2 train, 1 held out), a random ResNet-18 under
# torchvision's names, 2 training domains x 32 images per step, BENCH_STEPS steps, evaluation after the first
# and the last step (the official "fast" evaluator's splits: the held-out domain's in and out, the training
# domains' out; 224 images), the same thread count. Each side is one whole process under /usr/bin/time -v
# (wall seconds and maximum RSS), PyTorch then vl2v, back to back; BENCH_ROUNDS repeats the pair.
#
#   bash tests/bench/run_erm_ft_bench.sh                     # also part of `make bench`
#   BENCH_ROUNDS=3 BENCH_STEPS=6 bash tests/bench/run_erm_ft_bench.sh
#
# Not timed: the teacher and student caches `distill run` reads (made once by `embed` under
# data/bench/erm-ft/, git-ignored, reused when present: the committed tiny CLIP as the teacher, BENCH_VIEWS
# augmented views, and the ResNet-18 student cache on the same views, whose manifest names the student,
# its weights and preprocessing; erm-ft reads no student features, but the two caches must hold the same
# rows). The views change nothing in the timed run but which view each pick replays (view 0, the
# unaugmented one, is drawn 1 time in BENCH_VIEWS + 1); the student cache costs (1 + BENCH_VIEWS) x 480
# ResNet-18 forwards once.
#
# CPU seconds (user + system, also from /usr/bin/time) are printed too: on a machine shared with other work
# they move less than wall seconds.
#
# Per part: PyTorch's script times its imports, set-up, every step and every evaluation itself; vl2v's stderr
# is stamped line by line, which gives the start-up (process start to its `device:` line, caches and split
# read), start-up to the record of step 0 (backbone load, one step, one evaluation), step 0 to the last record
# (BENCH_STEPS - 1 steps, one evaluation) and the exit.
#
# Environment: BENCH_STEPS (default 4, at least 3: `--steps N --checkpoint-freq N-1` evaluates after steps 0
# and N-1), BENCH_ROUNDS (default 1), BENCH_THREADS (default 2: torch.set_num_threads, OMP/MKL; RAYON and
# CANDLE_NUM_THREADS for vl2v), BENCH_VIEWS (augmented views in the caches, default 4, the demo's),
# BENCH_KEEP=1 (keep the run folders; the path is printed), CARGO, PYTHON (with torch, torchvision, Pillow,
# numpy, safetensors: tests/bench/requirements.txt, which run_bench.sh installs), BENCH_DISTILL / BENCH_EMBED
# (binaries to time instead of building ./target/release/{distill,embed}).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
THREADS="${BENCH_THREADS:-2}"
STEPS="${BENCH_STEPS:-4}"
ROUNDS="${BENCH_ROUNDS:-1}"
VIEWS="${BENCH_VIEWS:-4}"
CARGO="${CARGO:-cargo}"
PYTHON="${PYTHON:-python3}"
DISTILL="${BENCH_DISTILL:-./target/release/distill}"
EMBED="${BENCH_EMBED:-./target/release/embed}"
[[ "$STEPS" -ge 3 ]] || { echo "BENCH_STEPS must be at least 3, not '$STEPS'" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (GNU time)" >&2; exit 2; }

step() { printf '\n== %s\n' "$*" >&2; }

if [[ -z "${BENCH_DISTILL:-}" || -z "${BENCH_EMBED:-}" ]]; then
    step "$CARGO build --release --bin distill --bin embed"
    $CARGO build --release --bin distill --bin embed
fi

DATA=data/bench/erm-ft
IMAGES="$DATA/images"
WEIGHTS="$DATA/resnet18.safetensors"
TEST_DOMAIN=clipart
step "benchmark images, ResNet-18 weights and caches under $DATA/"
# make_bench_images.py's generator with its first three domains: 480 JPEGs, 40 per domain and class.
"$PYTHON" - "$IMAGES" <<'PY'
import sys
sys.path.insert(0, "tests/bench")
import make_bench_images as m
m.DOMAINS = m.DOMAINS[:3]
sys.argv = ["make_bench_images.py", sys.argv[1], "--n", "480"]
m.main()
PY
[[ -f "$WEIGHTS" ]] || "$PYTHON" tests/bench/erm_ft_torch.py --make-weights "$WEIGHTS"
# embed skips a finished cache; its last stdout line is the cache folder.
TEACHER="$(RAYON_NUM_THREADS="$THREADS" "$EMBED" --dataset bench --root "$IMAGES" --model tests/fixtures/tiny_clip \
    --views "$VIEWS" --cache-dir "$DATA/cache" | tail -n 1)"
STUDENT="$(RAYON_NUM_THREADS="$THREADS" "$EMBED" --dataset bench --root "$IMAGES" --encoder student \
    --student resnet18 --model "$WEIGHTS" --views "$VIEWS" --cache-dir "$DATA/cache" | tail -n 1)"
echo "teacher cache $TEACHER, student cache $STUDENT" >&2
# Both sides read the images and weights from the page cache.
cat "$WEIGHTS" "$IMAGES"/*/*/*.jpg "$TEACHER"/images/* "$STUDENT"/manifest.json >/dev/null

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vl2v-erm-ft-bench.XXXXXX")"
if [[ -n "${BENCH_KEEP:-}" ]]; then
    echo "run folders kept in $WORK" >&2
else
    trap 'rm -rf "$WORK"' EXIT
fi

# Stamps every line of stdin with the seconds since the epoch time $1 (taken just before the command).
STAMP='import sys, time
t0 = float(sys.argv[1])
for line in sys.stdin:
    sys.stdout.write(f"{time.time() - t0:9.3f} {line}")
    sys.stdout.flush()'

RESULTS="$WORK/results.jsonl"
for round in $(seq 1 "$ROUNDS"); do
    dir="$WORK/round$round"
    mkdir -p "$dir"
    load="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
    step "round $round: PyTorch (load $load)"
    /usr/bin/time -v -o "$dir/torch.time" env OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" \
        "$PYTHON" tests/bench/erm_ft_torch.py --root "$IMAGES" --weights "$WEIGHTS" --test-domain "$TEST_DOMAIN" \
        --steps "$STEPS" --threads "$THREADS" --out "$dir/torch-run" >"$dir/torch.out"
    tail -n 1 "$dir/torch.out" | cut -c1-300 >&2
    load_vl2v="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
    step "round $round: vl2v distill run --algorithm erm-ft (load $load_vl2v)"
    start="$EPOCHREALTIME"
    /usr/bin/time -v -o "$dir/vl2v.time" env RAYON_NUM_THREADS="$THREADS" CANDLE_NUM_THREADS="$THREADS" \
        "$DISTILL" run --cache "$TEACHER" --student-cache "$STUDENT" --algorithm erm-ft \
        --test-domain "$TEST_DOMAIN" --steps "$STEPS" --checkpoint-freq $((STEPS - 1)) --out "$dir/vl2v-runs" \
        2>&1 >"$dir/vl2v.out" | "$PYTHON" -c "$STAMP" "$start" >"$dir/vl2v.err"
    cat "$dir/vl2v.err" >&2
    "$PYTHON" - "$round" "$dir" "$load" "$load_vl2v" "$STEPS" >>"$RESULTS" <<'PY'
import json, re, sys

round_, d, load, load_vl2v, steps = sys.argv[1:]
steps = int(steps)


def gnu_time(path):
    """Wall seconds, maximum RSS (MiB) and CPU seconds (user + system) from /usr/bin/time -v."""
    text = open(path).read()
    h, m, s = (["0", "0"] + re.search(r"Elapsed \(wall clock\) time.*: (\S+)", text).group(1).split(":"))[-3:]
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): (\S+)", text).group(1)) for k in ("User", "System"))
    return int(h) * 3600 + int(m) * 60 + float(s), rss / 1024, cpu


torch_run = json.loads(open(f"{d}/torch.out").read().strip().splitlines()[-1])
torch_s, torch_mib, torch_cpu = gnu_time(f"{d}/torch.time")
vl2v_s, vl2v_mib, vl2v_cpu = gnu_time(f"{d}/vl2v.time")
lines = [(float(l[:9]), l[10:]) for l in open(f"{d}/vl2v.err") if len(l) > 10]
device = next(t for t, l in lines if l.startswith("device:"))
records = [(t, l) for t, l in lines if re.search(r" step \d+: loss ", l)]
assert [int(re.search(r" step (\d+):", l).group(1)) for _, l in records] == [0, steps - 1], records
first, last = records[0][0], records[1][0]
test_in = [float(re.search(r"test_in (\S+)", l).group(1)) for _, l in records]
t = torch_run
print(json.dumps({
    "round": int(round_), "load": load, "load_vl2v": load_vl2v, "torch_version": t["torch"],
    "torch_s": torch_s, "vl2v_s": vl2v_s, "torch_mib": torch_mib, "vl2v_mib": vl2v_mib,
    "torch_cpu": torch_cpu, "vl2v_cpu": vl2v_cpu,
    # The same grouping for both: start-up, up to the first record, up to the last, the rest.
    "torch_parts": [t["imports_s"] + t["setup_s"], t["step_s"][0] + t["eval_s"][0],
                    sum(t["step_s"][1:]) + t["eval_s"][1], torch_s - t["imports_s"] - t["run_s"]],
    "vl2v_parts": [device, first - device, last - first, vl2v_s - last],
    "torch_detail": {"imports": t["imports_s"], "setup": t["setup_s"], "step": t["step_s"], "eval": t["eval_s"],
                     "eval_images": t["eval_images"]},
    "torch_test_in": [r["test_in"] for r in t["records"]], "vl2v_test_in": test_in,
}))
PY
done

"$PYTHON" - "$RESULTS" "$THREADS" "$STEPS" "$VIEWS" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1])]
threads, steps, views = sys.argv[2:]
print()
print(f"erm-ft whole-run bench: ResNet-18, 480 JPEGs (3 domains, 1 held out), 2 x 32 images a step, {steps} steps, "
      f"evaluation after the first and last (224 images), {threads} threads, caches of {views} views; "
      f"PyTorch {rows[0]['torch_version']}, num_workers=0")
print("  round  load before (PyTorch | vl2v)          PyTorch s  vl2v s  PyTorch/vl2v  peak RSS PyTorch  vl2v (MiB)"
      "  CPU s PyTorch  vl2v")
for r in rows:
    print(f"  {r['round']:5d}  {r['load']:16s} | {r['load_vl2v']:16s} {r['torch_s']:9.1f} {r['vl2v_s']:7.1f} "
          f"{r['torch_s'] / r['vl2v_s']:11.2f}x {r['torch_mib']:17.0f} {r['vl2v_mib']:5.0f} "
          f"{r['torch_cpu']:14.1f} {r['vl2v_cpu']:5.1f}")
print("  per part, seconds (PyTorch / vl2v): start-up to data and model ready | first step + evaluation |"
      f" {int(steps) - 1} steps + evaluation | exit")
for r in rows:
    parts = " | ".join(f"{a:5.1f} / {b:5.1f}" for a, b in zip(r["torch_parts"], r["vl2v_parts"]))
    print(f"  {r['round']:5d}  {parts}")
for r in rows:
    d = r["torch_detail"]
    print(f"  {r['round']:5d}  PyTorch alone: imports {d['imports']:.1f} s, set-up {d['setup']:.1f} s, steps "
          + ", ".join(f"{s:.1f}" for s in d["step"]) + " s, evaluations ("
          + f"{d['eval_images']} images) " + ", ".join(f"{s:.1f}" for s in d["eval"]) + " s; test_in PyTorch "
          + ", ".join(f"{a:.3f}" for a in r["torch_test_in"]) + ", vl2v "
          + ", ".join(f"{a:.3f}" for a in r["vl2v_test_in"]))
if len(rows) > 1:
    print(f"  median ratio {statistics.median(r['torch_s'] / r['vl2v_s'] for r in rows):.2f}x "
          "(targets: PyTorch/vl2v >= 0.8x, vl2v's peak RSS <= PyTorch's)")
else:
    print("  targets: PyTorch/vl2v >= 0.8x, vl2v's peak RSS <= PyTorch's")
PY
