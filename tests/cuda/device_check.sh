#!/usr/bin/env bash
# One-shot GPU check of the cuda build of `embed`, for the device machine (no Rust there).
# Expects, under $B (default target/cuda-bin, carried): embed.xz or embed.gz (the stripped, compressed embed
# of tests/cuda/build_without_toolkit.sh, as tests/cuda/prepare_gpu_check.sh packs it), cmp_cache.py (from tests/cuda/), ref_cpu/ (the same tiny run's CPU
# cache made on the build machine). Writes logs to $OUT.
set -uo pipefail
B=${B:-target/cuda-bin}; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
if [ -e "$B/embed.xz" ]; then
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$B/embed.xz" /tmp/embed
else
  gunzip -c "$B/embed.gz" > /tmp/embed
fi
chmod +x /tmp/embed
# CUDA 13 runtime libs: the toolkit's, else the torch venv's nvidia wheels.
LIBS=$(for f in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  find /usr/local/cuda*/ /opt /usr/lib -name "$f" 2>/dev/null | head -1 | xargs -r dirname; done | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; ldd /tmp/embed | grep -E 'cuda|cublas|curand|nvrtc|not found'
# The tiny dataset, built from tracked fixtures exactly as on the dev machine.
F=tests/fixtures/images; D=/tmp/ds; rm -rf $D; mkdir -p $D/photo/cat $D/photo/dog $D/art/cat $D/art/dog
cp $F/rgb.jpg $F/gray.png $D/photo/cat/; cp $F/rgba.png $F/wide.png $D/photo/dog/
cp $F/tall.png $F/rgb.bmp $D/art/cat/; cp $F/cmyk.jpg $F/palette.gif $D/art/dog/
M=tests/fixtures/tiny_clip
for dev in cuda cpu; do
  echo "== tiny_clip --device $dev"; /usr/bin/time -f "wall %e s" /tmp/embed --dataset tiny --root $D --model $M --cache-dir /tmp/c_$dev --device $dev || echo "FAILED rc=$?"
done
echo "== cos(gpu, cpu on device)"; python3 "$B/cmp_cache.py" /tmp/c_cpu /tmp/c_cuda
echo "== cos(gpu, cpu on dev machine)"; python3 "$B/cmp_cache.py" "$B/ref_cpu" /tmp/c_cuda
# ViT-B/16 timing (random weights, real architecture), GPU vs CPU, if torch+transformers are there.
N=${BENCH_N:-256}
if timeout 120 python3 tests/bench/make_bench_model.py /tmp/b16 --arch b16 && python3 tests/bench/make_bench_images.py /tmp/bimg --n $N; then
  cat /tmp/b16/* > /dev/null
  for dev in cuda cpu; do
    for bs in 32 128; do
      [ $dev = cpu ] && [ $bs = 128 ] && continue
      echo "== ViT-B/16 $N images --device $dev --batch-size $bs"
      /usr/bin/time -f "wall %e s" /tmp/embed --dataset bench --root /tmp/bimg --model /tmp/b16 --cache-dir /tmp/b_${dev}_$bs --device $dev --batch-size $bs --force 2>&1 | grep -E 'embedded|wall|error' || echo "FAILED"
    done
  done
  echo "== B/16 cos(gpu bs32, cpu)"; python3 "$B/cmp_cache.py" /tmp/b_cpu_32 /tmp/b_cuda_32
  echo "== B/16 cos(gpu bs128, cpu)"; python3 "$B/cmp_cache.py" /tmp/b_cpu_32 /tmp/b_cuda_128
fi
