#!/usr/bin/env bash
# On a lent GPU, in one call: the classifier recipes of issue 11, each trained leave-one-domain-out
# (four folds) and on the published split (in-domain), all side by side; results into $OUT.
#
#   here:   mkdir -p .data && cp -r ../shared/data/ami-br .data/      (git-ignored, 46 MiB)
#   device: bash training/gpu/classifier_sweep.sh     (carry: .data/ami-br; timeout_s 600)
#   smoke:  EPOCHS=1 EXTRA="--limit 64 --device cpu" RECIPES="r18-w32-default" bash training/gpu/classifier_sweep.sh
#
# Comes back (the device returns at most 8 files): lodo.json (every recipe's folds, means and
# in-domain test figures; `python -m training.classifier_lodo table` reads the same), runs.tar.gz
# (each run's metrics, history, command and log; no fold checkpoints) and best-in-domain.pt, the
# in-domain checkpoint of the shippable recipe (width 32: <= 30 MB of ONNX and >= 100 crops/s on
# the 2-core CPU) with the best LODO mean balanced accuracy: the selection criterion of issue 11,
# never the test split. Install it here with
#   python -m training.export --only classifier --checkpoints <folder holding it as classifier.pt>
# Each run stops before it would overrun MINUTES (the history then says how far the schedule got).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-out/gpu-classifier}"
EPOCHS="${EPOCHS:-100}"
MINUTES="${MINUTES:-7}"
EXTRA="${EXTRA:-}"
DATA=../shared/data/ami-br
[ -d "$DATA" ] || DATA=.data/ami-br
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python3}"
RUNS=$(mktemp -d)
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# name -> arguments of training.train_classifier (the shippable ones have width 32).
declare -A RECIPE=(
    [r18-w32-default]="--arch atypical-resnet-v1 --width 32"
    [r18-w32-plain-bce]="--arch atypical-resnet-v1 --width 32 --focal-gamma 0 --hardness-weight 0"
    [r18-w32-wide-rrc]="--arch atypical-resnet-v1 --width 32 --augment wide --rrc-min-scale 0.6"
    [r18-w32-mixup]="--arch atypical-resnet-v1 --width 32 --mix mixup"
    [r18-w32-cutmix]="--arch atypical-resnet-v1 --width 32 --mix cutmix"
    [r18-w64-default]="--arch atypical-resnet-v1 --width 64"
)
RECIPES="${RECIPES:-${!RECIPE[*]}}"

pids=()
for name in $RECIPES; do
    # shellcheck disable=SC2086  # the recipe and EXTRA are word lists
    "$PYTHON" -m training.classifier_lodo run --out "$RUNS/$name" --in-domain --parallel 5 -- \
        --data "$DATA" --device auto --epochs "$EPOCHS" --max-minutes "$MINUTES" ${RECIPE[$name]} $EXTRA \
        > "$RUNS/$name.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

dirs=()
for name in $RECIPES; do [ -f "$RUNS/$name/lodo.json" ] && dirs+=("$RUNS/$name") || tail -5 "$RUNS/$name.log"; done
[ ${#dirs[@]} -gt 0 ] || { echo "no recipe finished"; exit 1; }
"$PYTHON" -m training.classifier_lodo table "${dirs[@]}" --json "$OUT/lodo.json"
best=$("$PYTHON" - "$OUT/lodo.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
ok = {k: v for k, v in s.items() if "-w32-" in k and "in_domain_test" in v}
print(max(ok, key=lambda k: ok[k]["mean_balanced_accuracy"]) if ok else "")
EOF
)
if [ -n "$best" ]; then
    cp "$RUNS/$best/in-domain/classifier.pt" "$OUT/best-in-domain.pt"
    echo "best shippable recipe by LODO mean BA: $best"
fi
tar -C "$RUNS" --exclude=classifier.pt -czf "$OUT/runs.tar.gz" .
rm -rf "$RUNS"
ls -la "$OUT"
