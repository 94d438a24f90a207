#!/usr/bin/env bash
# Everything issue 14 measures on a GPU, in one call on a lent GPU machine that has no
# network: bench_gpu.py for CUDA and Vulkan (with the reference llama-bench runs at -fa
# off), gpu_token_costs.py (where a token's time goes, the host loop against its floor)
# and gpu_offload_check.py (the fit estimate and the walk-down). Each step has its own
# time limit and the steps run most wanted first, so a call cut short still brings back
# the first ones; logs and JSON results land in $OUT (the device tool's return folder).
#
# Prepare here, once per machine (see benchmarks/README.md, "A GPU machine without a
# network"):
#   1. the pack, about 26 MB:   BASTION_CUDA_ARCHITECTURES=90-real \
#        BASTION_CUDA_CMAKE_ARGS="-DGGML_CUDA_NCCL=OFF" \
#        .venv/bin/python benchmarks/bench_gpu.py --flavour cuda_v13 vulkan \
#        --pack .gpu/pack --pack-python 3.12
#      tar -cf - -C .gpu/pack . | xz -9e -T2 > .gpu/pack.tar.xz
#      (a CUDA 13 toolkit; the architecture of the GPU that will be lent: 90 for an H100
#      or H200. Built with flash attention, as above: 21 minutes on 2 cores, 32 MB
#      packed (2026-12-04). An earlier pack had -DGGML_CUDA_FA=OFF, with which
#      llama-bench's judged `-fa auto` runs take llama.cpp's slow path: never compare
#      CUDA with such a module)
#   2. the Vulkan loader:  the apt-get download line in the device README, into .gl/
#   3. echo /.gpu/ >> .git/info/exclude; echo /.gl/ >> .git/info/exclude
#   4. optional, the A/B of the GPU top-k: the same CUDA module built with CCCL 3.2's
#      headers ahead of the toolkit's (pip download nvidia-cuda-cccl==13.2.*; unzip), by
#      adding -DCMAKE_CUDA_FLAGS=-I<that>/nvidia/cu13/include/cccl to the CMake arguments
#      above and running packaging/runtime/build_gpu.py cuda_v13; its module goes to
#      .gpu/pack/modules-cccl32/cuda_v13/ before step 1's tar.
# Then:  run(command="bash benchmarks/gpu_device_run.sh", carry=[".gpu/pack.tar.xz", ".gl"],
#            timeout_s=600)   and give the machine back when it is done. The steps' limits
#            add up to 560 s; the offload check, last, is the one a slow start would cut.

set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
cd "$(dirname "$0")/.." || exit 9  # the repository's root
OUT=${OUT:-/tmp/gpu-run}
mkdir -p "$OUT"
started=$SECONDS
say() { echo "[$((SECONDS - started)) s] $*" | tee -a "$OUT/steps.log"; }

for deb in .gl/*.deb; do [ -f "$deb" ] && dpkg -x "$deb" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
pack=/tmp/pack
if ! { mkdir -p "$pack" && tar -xJf .gpu/pack.tar.xz -C "$pack"; }; then
    say "no pack: see the header"
    exit 9
fi
# The device tool brings back 8 files: steps.log, the four results, logs.tar.xz.
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
    | tee -a "$OUT/steps.log"
logs=$(mktemp -d)
export PYTHONPATH=$pack/site:$PWD/desktop BASTION_WHEEL_CACHE=/tmp/bc/wheels
results=benchmarks/results
python=${PYTHON:-python3}  # the pack's Python release (--pack-python)

step() {  # step NAME SECONDS RESULT_JSON COMMAND...
    local name=$1 limit=$2 result=$3
    shift 3
    say "$name: up to $limit s"
    rm -f "$results/$result"
    timeout -k 15 "$limit" "$@" 2>&1 | grep -v "cannot build parameter" > "$logs/$name.log"
    say "$name: exit ${PIPESTATUS[0]}"
    grep -E "\(a\)|\(b\)|flash attention off|host's loop|ms/token|Runs|note|rror" \
        "$logs/$name.log" | tee -a "$OUT/steps.log"
    tar -cJf "$OUT/logs.tar.xz" -C "$logs" .
    [ -f "$results/$result" ] && cp "$results/$result" "$OUT/$name.json"
}

step bench-cuda 170 gpu.json "$python" benchmarks/bench_gpu.py --packed "$pack" \
    --flavour cuda_v13 --rounds 3
step token-costs 90 gpu-token-costs.json "$python" benchmarks/gpu_token_costs.py \
    --packed "$pack" --flavour cuda_v13 --rounds 3 --models starter instruct
step bench-vulkan 150 gpu.json "$python" benchmarks/bench_gpu.py --packed "$pack" \
    --flavour vulkan --rounds 3
# The same CUDA module built with CCCL 3.2's headers (when the pack has one): ggml-cuda's
# GPU top-k is cub::DeviceTopK there, a full radix sort of the vocabulary with the
# toolkit's CCCL 3.0 (a token of Gemma 3 sorts 262,144 logits). The pack is copied as
# links, with that module alone replaced.
variant=$pack/modules-cccl32/cuda_v13/libggml-cuda.so
if [ -f "$variant" ]; then
    rm -rf "$pack-cccl32" && cp -al "$pack" "$pack-cccl32"
    cp --remove-destination "$variant" "$pack-cccl32/modules/cuda_v13/"
    step token-costs-cccl32 90 gpu-token-costs.json "$python" benchmarks/gpu_token_costs.py \
        --packed "$pack-cccl32" --flavour cuda_v13 --rounds 3 --models starter instruct
fi
step offload 60 gpu-offload.json "$python" benchmarks/gpu_offload_check.py --packed "$pack"
say "done"
