#!/usr/bin/env bash
# Export the models to weights/{detector,classifier}.onnx and write weights/manifest.json.
# Uses training/checkpoints/{detector,classifier}.pt when present, else random-initialised models
# (the manifest then says trained=false). Extra arguments go to training/export.py (--help).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m training.export --command "./export.sh${*:+ $*}" "$@"
