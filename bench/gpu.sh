#!/usr/bin/env bash
# Every GPU measurement in one run, a few minutes on one GPU (the `device` tool's machine):
#   run: bash bench/gpu.sh            (results printed and written under $OUT, else out/gpu)
# The GPU machine has its own python3 with torch, numpy, scipy, safetensors, Pillow and
# scikit-image; the repository root is the package `anirender`, made importable through a
# link. Each measurement runs on its own so one failure does not lose the others; the
# numbers go into BENCHMARKS.md by hand, with the GPU's name this script prints.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-out/gpu}
mkdir -p "$RESULTS" /tmp/anirender-path
ln -sfn "$PWD" /tmp/anirender-path/anirender
export PYTHONPATH=/tmp/anirender-path PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/gpu.csv"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$RESULTS/gpu.csv"

# CoNR: the reference-style per-view loop against the batched path, fp32 and bf16,
# 256 and 512 px, 1 and 4 views, peak GPU memory
timeout 240 "$PY" bench/conr.py --device cuda --sizes 256 512 --views 1 4 --frames 4 \
    --repeats 3 2>&1 | tee "$RESULTS/conr.md" || echo "conr bench failed (exit $?)"

# CoNR against the official code, when its checkout was carried along as
# .cache/official_conr (fetch github megvii-research/CoNR there; never commit it)
if [ -d .cache/official_conr ]; then
    timeout 300 "$PY" bench/conr.py --official .cache/official_conr --device cuda \
        --sizes 256 512 --views 1 4 --rounds 3 2>&1 | tee "$RESULTS/conr_official.md" \
        || echo "official CoNR bench failed (exit $?)"
else
    echo "no .cache/official_conr: the side-by-side with the official code is skipped"
fi

# the guided shader beside the image-only CoNR, 256 and 512 px, 4 views
for size in 256 512; do
    timeout 120 "$PY" bench/guided.py --synthetic --device cuda --size "$size" --views 4 \
        --frames 8 --repeats 3 2>&1 | tee "$RESULTS/guided_$size.md" \
        || echo "guided bench at $size px failed (exit $?)"
done
