#!/usr/bin/env bash
# Every GPU measurement in one run, a few minutes on one GPU (the `device` tool's machine):
#   run: bash bench/gpu.sh            (results printed and written under $OUT, else out/gpu)
# The GPU machine has its own python3 with torch, numpy, scipy, safetensors, Pillow and
# scikit-image but no Blender; the repository root is the package `anirender`, made
# importable through a link. Each measurement runs on its own, most wanted first, under
# one deadline (GPU_BENCH_SECONDS, default 480), so one failure or a slow part loses only
# itself. The numbers go into BENCHMARKS.md by hand, with the GPU's name printed here.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-out/gpu}
DEADLINE=$(($(date +%s) + ${GPU_BENCH_SECONDS:-480}))
mkdir -p "$RESULTS" /tmp/anirender-path
ln -sfn "$PWD" /tmp/anirender-path/anirender
export PYTHONPATH=/tmp/anirender-path PYTHONUNBUFFERED=1
export ANIRENDER_EXECUTION_CACHE=/tmp/anirender-execution.json

# section NAME SECONDS COMMAND...: run it for at most SECONDS (less if the deadline is near)
section() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        echo "## $name: skipped, the deadline is near" | tee "$RESULTS/$name.md"
        return
    fi
    echo "## $name (at most $limit s)"
    local start=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$RESULTS/$name.md"
    echo "## $name: exit ${PIPESTATUS[0]} after $(($(date +%s) - start)) s" | tee -a "$RESULTS/$name.md"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/gpu.csv"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$RESULTS/gpu.csv"

# CoNR against the official code (fp32; fp16 as "fast"; bf16), 256 and 512 px, 1 and 4
# views, peak GPU memory, when its checkout was carried along as .cache/official_conr
# (fetch github megvii-research/CoNR there; never commit it). torch.compile is left out
# here (it is timed once, below): compiling every shape would take the whole lease.
if [ -d .cache/official_conr ]; then
    section conr_official 200 "$PY" bench/conr.py --official .cache/official_conr \
        --device cuda --sizes 256 512 --views 1 4 --rounds 5 --compile off
else
    echo "no .cache/official_conr: the side-by-side with the official code is skipped"
fi

# where a CoNR frame's time goes (network vs call, TF32, cudnn.benchmark, top kernels,
# parity to exact fp32 and the reference loop GPU vs CPU), and the guided shader's profile
section gpu_profile 90 "$PY" bench/gpu_profile.py --size 256 --views 4 --guided

# fp32 parity: the reference loop and the project, each on the CPU and the GPU
section device_parity 60 "$PY" bench/device_parity.py --size 256 --views 4

# reenactment: one slider change, the network alone, 256 px
section reenact 40 "$PY" bench/reenact.py --device cuda --poses 20 --out "$RESULTS/reenact.json"

# the guided shader beside the image-only CoNR, 256 and 512 px, 4 views
for size in 256 512; do
    ANIRENDER_EXECUTION=compile=off section "guided_$size" 60 "$PY" bench/guided.py \
        --synthetic --device cuda --size "$size" --views 4 --frames 8 --repeats 3
done

# torch.compile as the project times it by default (one compile, after the other choices)
if [ -d .cache/official_conr ]; then
    section conr_official_compile 150 "$PY" bench/conr.py --official .cache/official_conr \
        --device cuda --sizes 256 --views 4 --rounds 5
fi

# the reference-style loop against the batched path (history; the official run above
# is the comparison that counts)
ANIRENDER_EXECUTION=compile=off section conr_reference 80 "$PY" bench/conr.py --device cuda \
    --sizes 256 512 --views 1 4 --frames 4 --repeats 3
