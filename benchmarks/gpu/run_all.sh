#!/usr/bin/env bash
# On the lent GPU machine, in one call: every GPU figure of issue 13, files into $OUT.
#
#   bash benchmarks/gpu/run_all.sh            (carry: .whl/small; earlier calls left the parts in /tmp/wheels)
#
# Before: benchmarks/gpu/fetch_wheels.sh here; then one device call per 52 MB part of the
# onnxruntime-gpu wheel, each `mkdir -p /tmp/wheels && cp .whl/parts/* /tmp/wheels/` with that part
# carried (the machine stays warm 30 s between calls: make them back to back), and this script in
# the last call. Where the device's image has no ../shared, carry .data/icpr2012 (a copy made here,
# git-ignored; 64 MiB per call in all) for the real-tissue run.
# It prints a short table last; the JSON files come back through $OUT.
#
# 1. GPU smoke test (CUDA provider used, points as on the CPU): pytest -m gpu test/test_gpu.py
# 2. Our pipeline on a 7215 x 5412 ROI, synthetic and real tissue (ICPR 2012 mosaic; carry
#    .data/icpr2012 if ../shared is not on the machine), batch sizes swept, fp32 and fp16 with the
#    decisions compared: end to end against read alone (target: within 2x)
# 3. The stand-in models on the GPU: everything but the model, timed
# 4. The MIDOG 2025 reference architectures (FCOS ResNeXt-101, EfficientNetV2-M), random weights,
#    same GPU and ROI, with the ratios to ours (target: >= 10x the reference detector's ROI/s)
# 5. Slide mode on a generated 40,000^2 slide: seconds per mm^2 of tissue
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT" /tmp/wheels
export PYTHONUNBUFFERED=1
for first in /tmp/wheels/*.whl.00; do
    [ -e "$first" ] && cat "${first%.00}".[0-9][0-9] > "/tmp/wheels/$(basename "${first%.00}")"
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    /tmp/wheels/*.whl .whl/small/*.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD"
python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
if [ -d .data/icpr2012 ] && [ ! -d ../shared/data/icpr2012 ]; then
    mkdir -p ../shared/data && ln -s "$PWD/.data/icpr2012" ../shared/data/icpr2012
fi

run() { echo "== $*"; timeout 420 "$@" 2>&1 | tee -a "$OUT/log.txt" | tail -25; }
run python3 -m pytest -q -m gpu -p no:cacheprovider test/test_gpu.py
run python3 benchmarks/benchmark.py --device cuda --sizes 7215x5412 --compression deflate --batch-size 16 32 \
    --fp16 --repeat 5 --json "$OUT/h200_synthetic.json"
if [ -d ../shared/data/icpr2012 ]; then
    run python3 benchmarks/benchmark.py --device cuda --tissue icpr2012 --sizes 7215x5412 --compression deflate \
        --batch-size 32 --repeat 5 --json "$OUT/h200_icpr2012.json"
fi
run python3 benchmarks/benchmark.py --device cuda --stand-in --sizes 7215x5412 --repeat 5 --json "$OUT/h200_standin.json"
run python3 benchmarks/reference_models.py --device cuda --size 7215x5412 --repeat 3 --crops 1024 --single-crops 256 \
    --ours "$OUT/h200_synthetic.json" --json "$OUT/h200_reference.json"
run python3 benchmarks/slide_benchmark.py --device cuda --size 40000 --patches 12 --batch-size 32 \
    --json "$OUT/h200_slide.json"
echo "== summary"
grep -h -E "target|end to end|ratio|per mm|throughput" "$OUT/log.txt" | tail -30
