#!/usr/bin/env bash
# Here (a machine with PyPI): fetch what the GPU benchmark needs that the lent H200's image lacks,
# into .whl/ (git-ignored), big wheels split into 52 MB parts so that each device call carries
# less than its 64 MiB limit. Then see benchmarks/gpu/run_all.sh for the calls to make.
#
#   benchmarks/gpu/fetch_wheels.sh [ORT_VERSION]
#
# ORT_VERSION: onnxruntime-gpu for the device machine's CUDA 13 (its PyTorch's libraries; 1.31.1
# ran there on 2026-11-22). The product pins 1.26.0 (CUDA 12) for grand-challenge's driver 535;
# the two run the same graphs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ort="${1:-1.31.1}"
rm -rf .whl && mkdir -p .whl/parts .whl/small
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl/small "$@"; }
dl "onnxruntime-gpu==$ort"
# the product's run-time packages that the image lacks (it has numpy, scipy, tifffile, pillow, onnx)
dl pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 imagecodecs==2026.3.6
for whl in .whl/small/*.whl; do
    if [ "$(stat -c %s "$whl")" -gt $((52 * 1024 * 1024)) ]; then
        split -b 52M -d "$whl" ".whl/parts/$(basename "$whl")."
        rm "$whl"
    fi
done
# real tissue for the ICPR 2012 mosaic (benchmarks/real_roi.py reads the first 12 scanner A fields):
# a copy in the git-ignored .data/, never in the repository, carried to the device machine
rm -rf .data/icpr2012 && mkdir -p .data/icpr2012/images/A
cp ../shared/data/icpr2012/annotations.json .data/icpr2012/
python3 -c "
import json; fields = [f for f in json.load(open('.data/icpr2012/annotations.json'))['fields'] if f['scanner'] == 'A']
print('\n'.join(f['file'] for f in fields[:12]))" | while read -r f; do cp "../shared/data/icpr2012/$f" ".data/icpr2012/$f"; done
du -sh .whl/small .data/icpr2012
ls -la .whl/small .whl/parts
echo "device calls: one per part, carry [.whl/parts/PART], command 'mkdir -p /tmp/wheels && cp .whl/parts/* /tmp/wheels/';"
echo "then carry [.whl/small, .data/icpr2012], command 'bash benchmarks/gpu/run_all.sh'"
