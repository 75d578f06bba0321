#!/usr/bin/env bash
# The GPU checks of issue 9, in one run on a GPU machine with no Rust (made ready here by
# tests/cuda/prepare_gpu_check.sh, which builds and packs everything into target/cuda-bin). Sections, each
# bounded by its own timeout so that one failure does not hide the rest:
#   1. parity: the model and Adam tests of the device-generic path with VL2V_TEST_DEVICE=cuda, i.e. what the
#      GPU computes (outputs, every gradient, Adam steps) against the CPU path, and the bf16 tests (the GPU's
#      bf16 products against the CPU's f32, no further than PyTorch's autocast);
#   2. step: one ADiP Distill step (ResNet-50, ViT-B/16; 3 × 32 images at 224²) on the GPU, vl2v and PyTorch
#      (PyTorch's defaults, strict fp32, and bf16 autocast; vl2v fp32, tf32, bf16);
#   3. embed: tests/cuda/device_check.sh (tiny CLIP GPU vs CPU cache, ViT-B/16 images/s at batch 32 and 128);
#   4. e2e: the generated benchmark embedded on the GPU, then adip-align, adip-distill, kd, erm-ft and sd
#      trained on the GPU and on the CPU from the same caches; records compared;
#   profile: the vl2v step of section 2 with its phases (forward, loss + backward, Adam) timed apart;
#   5. loader: the training loader against PyTorch's DataLoader on the machine's cores (as
#      tests/bench/run_loader_bench.sh does here), 0 to all-cores workers.
# Logs go to $OUT (the device tool brings them back). SECTIONS picks some (default: all but loader).
#
#   B=target/cuda-bin OUT=/tmp/out bash tests/cuda/gpu_check.sh
#   SECTIONS="parity loader" bash tests/cuda/gpu_check.sh
set -uo pipefail
B=${B:-target/cuda-bin}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
started=$SECONDS
say() { printf '\n== [%4ds] %s\n' $((SECONDS - started)) "$*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
nproc
mkdir -p /tmp/bin
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }
for f in "$B"/*.xz; do unxz "$f" "/tmp/bin/$(basename "$f" .xz)"; done
chmod +x /tmp/bin/*
LIBS=$(for f in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    find /usr/local/cuda*/ /opt /usr/lib -name "$f" 2>/dev/null | head -1 | xargs -r dirname
done | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldd /tmp/bin/distill | grep -E 'not found' && echo "MISSING LIBRARIES"
# The test binaries find their fixtures under the checkout they were built in (CARGO_MANIFEST_DIR).
BUILT_IN=${BUILT_IN:-/work/main}
[ -e "$BUILT_IN" ] || { mkdir -p "$(dirname "$BUILT_IN")" && ln -s "$PWD" "$BUILT_IN"; }
# Whether less than $1 seconds have passed: later sections are skipped rather than cut off.
before() { [ $((SECONDS - started)) -lt "$1" ]; }
W=/tmp/step
want() { [[ " ${SECTIONS:-parity step embed e2e} " == *" $1 "* ]]; }

if want parity; then
say "1. parity: the generic path on the GPU against the CPU path"
VL2V_TEST_DEVICE=cuda timeout 120 /tmp/bin/shared_tests --test-threads 1 --nocapture \
    generic_path_tests bf16_tests device_steps_match_host_steps || echo "PARITY FAILED rc=$?"

fi

if want step; then
say "2. one Distill step, 3 x 32 images at 224x224, on the GPU"
timeout 120 python3 tests/bench/student_step_torch.py --device cuda --batch 96 --steps 5 \
    --students resnet50,vit-base --save $W || echo "TORCH STEP FAILED rc=$?"
before 200 && timeout 60 python3 tests/bench/student_step_torch.py --device cuda --batch 96 --steps 5 \
    --students resnet50,vit-base --no-tf32 || echo "TORCH STRICT STEP FAILED rc=$?"
VL2V_STEP_WEIGHTS=$W VL2V_STEP_DEVICE=cuda VL2V_STEP_BATCH=96 timeout 150 /tmp/bin/distill_tests \
    --ignored --exact --nocapture algorithms::adip_distill::tests::student_step_timing ||
    echo "VL2V STEP FAILED rc=$?"
VL2V_STEP_WEIGHTS=$W VL2V_STEP_DEVICE=cuda VL2V_STEP_BATCH=96 VL2V_STEP_PRECISION=tf32 timeout 90 \
    /tmp/bin/distill_tests --ignored --exact --nocapture algorithms::adip_distill::tests::student_step_timing ||
    echo "VL2V TF32 STEP FAILED rc=$?"
before 300 && timeout 60 python3 tests/bench/student_step_torch.py --device cuda --batch 96 --steps 5 \
    --students resnet50,vit-base --bf16 || echo "TORCH BF16 STEP FAILED rc=$?"
VL2V_STEP_WEIGHTS=$W VL2V_STEP_DEVICE=cuda VL2V_STEP_BATCH=96 VL2V_STEP_PRECISION=bf16 timeout 90 \
    /tmp/bin/distill_tests --ignored --exact --nocapture algorithms::adip_distill::tests::student_step_timing ||
    echo "VL2V BF16 STEP FAILED rc=$?"
nvidia-smi --query-gpu=memory.used --format=csv

fi

if want profile; then
say "the Distill step's phases on the GPU"
[ -e $W/resnet50.safetensors ] || timeout 120 python3 tests/bench/student_step_torch.py --device cuda \
    --batch 96 --steps 1 --students resnet50,vit-base --save $W >/dev/null
for precision in fp32 tf32 bf16; do
    VL2V_STEP_WEIGHTS=$W VL2V_STEP_DEVICE=cuda VL2V_STEP_BATCH=96 VL2V_STEP_PRECISION=$precision \
        VL2V_STEP_PHASES=1 timeout 120 /tmp/bin/distill_tests --ignored --exact --nocapture \
        algorithms::adip_distill::tests::student_step_timing 2>&1 | grep -E 'step|forward' ||
        echo "PROFILE FAILED"
done
fi

if want embed; then
say "3. embed on the GPU (tests/cuda/device_check.sh)"
before 330 && B=$B OUT=$OUT BENCH_N=${BENCH_N:-256} timeout 180 bash tests/cuda/device_check.sh >/dev/null 2>&1 ||
    echo "DEVICE CHECK rc=$?"
cat "$OUT/device_check.log" 2>/dev/null | grep -vE '^\s*$' | tail -n 40

fi

if want e2e; then
say "4. distill end to end on the GPU and on the CPU"
D=/tmp/e2e
timeout 60 /tmp/bin/synthdg benchmark --out $D/data --per-class 24 >/dev/null || echo "SYNTHDG FAILED"
T=$(timeout 120 /tmp/bin/embed --dataset synthdg --root $D/data --model shared/models/mini-clip --views 2 \
    --cache-dir $D/cache | tail -n 1)
S=$(timeout 120 /tmp/bin/embed --dataset synthdg --root $D/data --encoder student --student mini-vit \
    --model shared/models/mini-vit --views 2 --cache-dir $D/cache | tail -n 1)
echo "teacher cache $T; student cache $S"
for dev in cuda cpu; do
    before 440 || { echo "skipped: out of time"; break; }
    common=(--out $D/runs-$dev --test-domain sketch --steps 61 --checkpoint-freq 20 --device $dev)
    for algorithm in adip-align erm-ft kd adip-distill; do
        /usr/bin/time -f "$dev $algorithm wall %e s" timeout 60 /tmp/bin/distill run --cache "$T" \
            --student-cache "$S" --algorithm $algorithm "${common[@]}" --lr 1e-4 --batch-size 16 >/dev/null ||
            echo "$dev $algorithm FAILED"
    done
    /usr/bin/time -f "$dev sd wall %e s" timeout 60 /tmp/bin/distill run --cache "$T" --algorithm sd \
        "${common[@]}" --lr 1e-4 --batch-size 16 >/dev/null || echo "$dev sd FAILED"
done
python3 - $D <<'PY'
import json, glob, os, sys
d = sys.argv[1]
for path in sorted(glob.glob(f"{d}/runs-cuda/synthdg/*/sketch/seed0/results.jsonl")):
    algo = path.split("/")[-4]
    other = path.replace("runs-cuda", "runs-cpu")
    if not os.path.exists(other):
        print(f"{algo}: no CPU run"); continue
    g = [json.loads(l) for l in open(path)]
    c = [json.loads(l) for l in open(other)]
    print(f"{algo}: devices {g[0].get('device')} / {c[0].get('device')}")
    for a, b in zip(g, c):
        keys = [k for k in ("loss", "train_out", "test_in", "tr_outloss") if k in a and k in b]
        print(f"  step {a['step']:3d} " + " ".join(f"{k} {a[k]:.4f}/{b[k]:.4f}" for k in keys))
PY
fi

if want loader; then
say "5. the loader against PyTorch's DataLoader, $(nproc) cores"
L=/tmp/loader
timeout 60 python3 tests/bench/make_bench_images.py $L --n ${LOADER_N:-1024} >/dev/null
for workers in 0 4 $(nproc); do
    timeout 60 python3 tests/bench/loader_torch.py $L --workers $workers --threads "$(nproc)" ||
        echo "TORCH LOADER FAILED"
    VL2V_LOADER_IMAGES=$L VL2V_LOADER_WORKERS=$workers timeout 60 /tmp/bin/distill_tests --ignored --exact \
        --nocapture data::loader::bench::loader_throughput | grep '^loader-bench' || echo "VL2V LOADER FAILED"
done
fi
say "done"
