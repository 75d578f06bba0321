#!/usr/bin/env bash
# Compile-check the `cuda` feature of vl2v (embed + distill) on a machine with NO CUDA toolkit and NO GPU
# (what a workstation with the toolkit does with plain `cargo build --release --features cuda`),
# using NVIDIA's pip wheels for nvcc / headers / runtime libraries and a generated libcuda stub.
#
# What candle 0.11.1's `cuda` feature needs at build time (read from the crates' sources):
#  * candle-kernels 0.11.1 build.rs (via cudaforge 0.1.6): nvcc -> PTX for src/*.cu, and a static
#    libmoe.a (moe/mmq gguf kernels compiled to SASS for $CUDA_COMPUTE_CAP); emits link-lib cudart + stdc++.
#    nvcc is found via $NVCC, then PATH, then $CUDA_HOME/bin/nvcc.
#  * cudarc 0.19.10 with features driver,cublas,cublaslt,curand,nvrtc,"dynamic-linking",
#    "cuda-version-from-build-system": runs `nvcc --version` (or uses $CUDARC_CUDA_VERSION) to pick the
#    bindings, and links -lcuda -lnvrtc -lcurand -lcublas -lcublasLt at LINK time, searching
#    $CUDA_HOME|$CUDA_PATH|$CUDA_ROOT/{lib,lib/stubs,lib64,...}.
# CUDA 13.0 is chosen to match the device machines (driver 580 = CUDA 13.0; PTX from a newer nvcc
# would not JIT there).
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)

PIP_DIR=${PIP_DIR:-$HOME/.cache/vl2v-cuda-pip}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/cuda}
CU=$PIP_DIR/nvidia/cu13

# 1. nvcc + headers + runtime libs from pip (one install: `--upgrade` with --target would wipe nvidia/).
if [ ! -x "$CU/bin/nvcc" ]; then
  python3 -m pip install -q --target "$PIP_DIR" \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-nvrtc==13.0.88" "nvidia-cublas==13.0.2.14" \
    "nvidia-curand==10.4.0.35" "nvidia-cuda-cccl==13.0.85"
fi

# 2. Make the wheel tree look like a toolkit: unversioned .so names for -l, lib64 alias, libcuda stub.
cd "$CU/lib"
for l in cudart cublas cublasLt nvrtc; do ln -sf lib$l.so.13 lib$l.so; done
ln -sf libcurand.so.10 libcurand.so
cd "$CU"; [ -e lib64 ] || ln -s lib lib64
mkdir -p lib/stubs
if [ ! -e lib/stubs/libcuda.so ]; then
  # Every driver-API entry point cuda.h declares (with the versioned/_v2/_ptds macro spellings and
  # the raw ones), as functions returning CUDA_ERROR_NO_DEVICE, in a library whose soname is the driver's libcuda.so.1.
  tmp=$(mktemp -d)
  for defs in "" "-D__CUDA_API_VERSION_INTERNAL" "-DCUDA_API_PER_THREAD_DEFAULT_STREAM"; do
    echo '#include <cuda.h>' | gcc -E $defs -I"$CU/include" -x c - ; done \
    | grep -oE '\b(cu|CU)[A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (\t' | grep -E '^cu[A-Z]' | sort -u \
    | awk '{print "int " $1 "(void) { return 100; }"}' > "$tmp/stub.c"   # 100 = CUDA_ERROR_NO_DEVICE
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o lib/stubs/libcuda.so "$tmp/stub.c"
  rm -rf "$tmp"
fi

# 3. Environment for cudaforge/cudarc.
export CUDA_HOME=$CU CUDA_ROOT=$CU CUDA_PATH=$CU
export NVCC=$CU/bin/nvcc
export PATH=$CU/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}     # H100/H200 (cudaforge turns 90 into sm_90a for the static lib)
export CUDARC_CUDA_VERSION=13000
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}

# 4. Build (from the repo this script lives in).
cd "$REPO"
time nice -n 19 cargo build --release --features cuda -p embed --bin embed "$@"
time nice -n 19 cargo build --release --features cuda -p distill "$@"
ls -la "$CARGO_TARGET_DIR/release/embed" "$CARGO_TARGET_DIR/release/distill" || true

# 5. WITH_TESTS=1: also the test binaries the GPU checks run (tests/cuda/gpu_check.sh): the shared library's
# (the generic path and Adam against the CPU) and distill's (the step bench); their paths go to
# $CARGO_TARGET_DIR/{shared,distill}_tests.path.
if [ "${WITH_TESTS:-0}" = 1 ]; then
  test_binary() { # package, target name
    nice -n 19 cargo test --release --features cuda -p "$1" --no-run --message-format=json "${@:3}" |
      python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] \
            and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' "$2"
  }
  test_binary vl2v-shared vl2v --lib > "$CARGO_TARGET_DIR/shared_tests.path"
  test_binary distill distill --bin distill > "$CARGO_TARGET_DIR/distill_tests.path"
  cat "$CARGO_TARGET_DIR"/shared_tests.path "$CARGO_TARGET_DIR"/distill_tests.path
fi

# Run time: the binary needs libcuda.so.1 (the driver's), libcudart.so.13, libcublas.so.13 (+libcublasLt.so.13)
# and libcurand.so.10, e.g. LD_LIBRARY_PATH=$CU/lib. Without a GPU, a directory holding libcuda.so.1 -> the
# stub lets it start: --device cpu works, --device cuda fails cleanly with CUDA_ERROR_NO_DEVICE.
# On a GPU machine: tests/cuda/device_check.sh (see its header).
